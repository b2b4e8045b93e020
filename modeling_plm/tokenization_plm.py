"""Residue-level tokenizer for protein language models (one token per amino acid, ESM-compatible vocab files).

This module is self-contained on purpose: it is copied into exported Hub checkpoints as remote code, where
``modeling_plm`` is not installed, so it may only import the standard library, ``tokenizers`` and ``transformers``.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import string
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast
from transformers.tokenization_utils_base import BatchEncoding

__all__ = [
    "INVALID_RESIDUE_POLICIES",
    "PLMTokenizerFast",
    "build_backend_tokenizer",
    "glm_layout",
    "read_vocab_file",
    "special_tokens_of",
]

VOCAB_FILES_NAMES = {"tokenizer_file": "tokenizer.json", "vocab_file": "vocab.txt"}

# GLM-style span-infilling tokens; optional, ESM vocabularies do not have them.
GMASK_TOKEN = "<gmask>"
SMASK_TOKEN = "<smask>"
SOP_TOKEN = "<sop>"
EOP_TOKEN = "<eop>"

INVALID_RESIDUE_POLICIES = ("error", "X", "drop")


def glm_layout(
    context_ids: list[int], mask_positions: list[int], spans: list[list[int]], sop_token_id: int
) -> tuple[list[int], list[int], list[int]]:
    """xTrimoPGLM's blank-infilling layout, the one of training and of infilling: (input_ids, position_ids,
    block_position_ids). The context comes first (positions 0, 1, ..., block position 0); then, for each mask in
    order, `<sop>` and its span at the mask's position with block positions 1, 2, ... An empty span leaves the
    `<sop>` to generate from. Spans beyond the given masks are ignored."""
    input_ids, positions, blocks = list(context_ids), list(range(len(context_ids))), [0] * len(context_ids)
    for mask_position, span in zip(mask_positions, spans):
        input_ids.extend([sop_token_id, *span])
        positions.extend([mask_position] * (len(span) + 1))
        blocks.extend(range(1, len(span) + 2))
    return input_ids, positions, blocks


def is_special_token(token: str) -> bool:
    """Whether a vocab entry is a special token, i.e. written ``<...>`` (``<mask>``, ``<cls>``, ``<null_1>``)."""
    return len(token) > 2 and token.startswith("<") and token.endswith(">")


def special_tokens_of(vocab: list[str]) -> list[str]:
    """The special tokens of a vocabulary, in id order."""
    return [token for token in vocab if is_special_token(token)]


def read_vocab_file(path: str | os.PathLike[str]) -> list[str]:
    """Read a one-token-per-line vocabulary (ours or ESM's); the line number (0-based) is the token id."""
    with open(path, encoding="utf-8") as handle:
        vocab = [line.strip() for line in handle.read().splitlines()]
    while vocab and not vocab[-1]:
        vocab.pop()  # trailing blank lines carry no id
    if "" in vocab:
        # A blank line in the middle would silently shift every later id.
        raise ValueError(f"{os.fspath(path)}: blank line {vocab.index('') + 1}; every line must hold one token")
    return vocab


def build_backend_tokenizer(
    vocab: list[str],
    bos_token: str | None,
    eos_token: str | None,
    pad_token: str,
    unk_token: str,
    special_tokens: list[str],
) -> Tokenizer:
    """Build the Rust tokenizer: one token per residue character, ids taken from the position in ``vocab``.

    Args:
        vocab: Tokens in id order (e.g. the lines of ``vocab.txt``).
        bos_token: Token prepended to every sequence (``<bos>``; ESM uses ``<cls>``, ProGen2 ``1``); None for none
            (T5 encoders).
        eos_token: Token appended to every sequence; None for none.
        pad_token: Padding token; must be in ``vocab``.
        unk_token: Token for characters that are not in ``vocab``.
        special_tokens: Tokens matched as a whole in raw text (usually every ``<...>`` entry of ``vocab``).
    """
    token_to_id: dict[str, int] = {}
    for index, token in enumerate(vocab):
        if token in token_to_id:
            raise ValueError(f"Duplicate token {token!r} at ids {token_to_id[token]} and {index}")
        token_to_id[token] = index
    named = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
    named = {name: token for name, token in named.items() if token is not None}
    for name, token in named.items():
        if token not in token_to_id:
            raise ValueError(f"{name} {token!r} is not in the vocabulary")
    for token in special_tokens:
        if token not in token_to_id:
            raise ValueError(f"Special token {token!r} is not in the vocabulary")

    tokenizer = Tokenizer(models.WordLevel(vocab=token_to_id, unk_token=unk_token))
    # tokenizers has no Uppercase normalizer, hence one Replace per lower-case letter.
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"\s"), "")]
        + [normalizers.Replace(letter, letter.upper()) for letter in string.ascii_lowercase]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    # normalized=False: special tokens are matched on the raw text, before whitespace removal and upper-casing.
    added = sorted({*special_tokens, *named.values()}, key=token_to_id.__getitem__)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in added])
    bos = [f"{bos_token}:0"] if bos_token is not None else []
    eos = [f"{eos_token}:0"] if eos_token is not None else []
    eos_pair = [f"{eos_token}:1"] if eos_token is not None else []
    tokenizer.post_processor = processors.TemplateProcessing(
        single=" ".join([*bos, "$A:0", *eos]),
        pair=" ".join([*bos, "$A:0", *eos, "$B:1", *eos_pair]),
        special_tokens=[(token, token_to_id[token]) for token in (bos_token, eos_token) if token is not None],
    )
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def _load_default_backend() -> Tokenizer:
    """The tokenizer.json shipped with the package (built from ``tokenizer/vocab.txt``)."""
    try:
        resource = importlib.resources.files("modeling_plm.tokenizer_data").joinpath("tokenizer.json")
        return Tokenizer.from_str(resource.read_text(encoding="utf-8"))
    except ModuleNotFoundError:
        # Source checkout (no wheel package-dir mapping): the data lives in <repo>/tokenizer/.
        path = Path(__file__).resolve().parent.parent / "tokenizer" / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(
                "No default tokenizer.json found (neither package modeling_plm.tokenizer_data nor "
                f"{path}); pass tokenizer_file=, vocab_file= or use PLMTokenizerFast.from_pretrained()"
            ) from None
        return Tokenizer.from_file(str(path))


class PLMTokenizerFast(PreTrainedTokenizerFast):
    """Residue-level tokenizer for protein language models: one token per amino acid.

    ``PLMTokenizerFast()`` loads the default vocabulary: ``<pad> <bos> <eos> <unk> <mask> <gmask> <smask> <sop> <eop>``
    (ids 0-8), the 20 standard amino acids ``ACDEFGHIKLMNPQRSTVWY`` (ids 9-28) and ``XBZUO`` (ids 29-33).
    ``PLMTokenizerFast(vocab_file="vocab.txt", bos_token="<cls>")`` builds one from any one-token-per-line vocabulary,
    including ESM-2's, with the same ids as the original.

    Every sequence is encoded as ``<bos> residues <eos>`` (pairs: ``<bos> A <eos> B <eos>``). Whitespace is ignored
    and lower-case residues are upper-cased. ``decode`` returns the residues with no spaces
    (``skip_special_tokens=True`` keeps only residues).

    Input: ``text`` (and ``text_pair``) is one sequence (``str``), a batch of them (a non-empty list of ``str``, or of
    ``(text, text_pair)`` string pairs) or, with ``is_split_into_words=True``, one or a batch of lists of strings.
    Anything else raises ``TypeError`` naming the argument and, in a batch, the index of the item (``text: item 1 of
    the batch is None (NoneType), not a string``); an empty batch raises ``ValueError``. An empty (or whitespace-only)
    sequence is valid and encodes to ``<bos> <eos>``, as transformers' tokenizers encode ``""``: callers that need at
    least one residue check for it (the embedding and scoring engines do).

    Special tokens in the text: any special token of the vocabulary written inside a sequence (``"MKT<mask>LV"``,
    ``<smask>``, ``<gmask>``, also ``<bos>``, ``<eos>`` and ``<pad>``) is encoded as that single token, on purpose:
    this is how masked positions are given for scoring and spans for GLM infilling. Such tokens are kept as written
    (a ``<eos>`` typed into a sequence ends up inside it); only ``<`` and ``>`` outside a special token are invalid
    residues. With ``split_special_tokens=True`` the backend would spell a special token as letters (``<mask>`` as
    ``< M A S K >``), so a special token in the text then raises ``ValueError`` naming it and its position.

    Invalid residues: the valid residues are the single-character, non-special tokens of the vocabulary (for the
    default vocabulary ``ACDEFGHIKLMNPQRSTVWYXBZUO``; for ESM-2 also ``.`` and ``-``). Any other character in the
    input (digits, ``*``, ``-``, ``J``, ...) is handled by ``invalid_residues``, checked before encoding in
    ``__call__``, ``encode``, ``tokenize``, batches, pairs and ``is_split_into_words`` input:

    - ``"error"`` (default): raise ``ValueError`` naming the character, its 1-based position in the input string
      and, for batched input, the 0-based index of the sequence, e.g. ``Invalid residue '*' at position 57 of
      sequence 3: expected one of ACDEFGHIKLMNPQRSTVWYXBZUO or a special token like <mask>. ...``
    - ``"X"``: replace each such character with the unknown residue ``X``.
    - ``"drop"``: remove each such character.

    The policy is saved in ``tokenizer_config.json`` by ``save_pretrained`` and restored by ``from_pretrained``.

    Args:
        vocab_file: One-token-per-line vocabulary to build the tokenizer from (ignored if ``tokenizer_file`` or
            ``tokenizer_object`` is given).
        tokenizer_file: A ``tokenizer.json`` to load.
        tokenizer_object: A ready ``tokenizers.Tokenizer``.
        bos_token, eos_token, unk_token, pad_token, mask_token: Named special tokens; each must be in the vocabulary
            (or be ``None``).
        invalid_residues: ``"error"``, ``"X"`` or ``"drop"`` (see above).
        extra_special_tokens: Extra special tokens; every ``<...>`` token of the vocabulary that is not one of the
            named tokens (``<gmask> <smask> <sop> <eop>``, ESM's ``<null_1>``) is added automatically.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"

    def __init__(
        self,
        vocab_file: str | os.PathLike[str] | None = None,
        tokenizer_file: str | os.PathLike[str] | None = None,
        tokenizer_object: Tokenizer | None = None,
        bos_token: str | AddedToken | None = "<bos>",
        eos_token: str | AddedToken | None = "<eos>",
        unk_token: str | AddedToken | None = "<unk>",
        pad_token: str | AddedToken | None = "<pad>",
        mask_token: str | AddedToken | None = "<mask>",
        invalid_residues: str = "error",
        extra_special_tokens: list[str | AddedToken] | None = None,
        **kwargs: Any,
    ) -> None:
        if invalid_residues not in INVALID_RESIDUE_POLICIES:
            raise ValueError(f"invalid_residues must be one of {INVALID_RESIDUE_POLICIES}, got {invalid_residues!r}")

        if tokenizer_object is not None:
            backend = tokenizer_object
        elif tokenizer_file is not None:
            backend = Tokenizer.from_file(os.fspath(tokenizer_file))
        elif vocab_file is not None:
            vocab = read_vocab_file(vocab_file)
            backend = build_backend_tokenizer(
                vocab,
                bos_token=None if bos_token is None else str(bos_token),
                eos_token=None if eos_token is None else str(eos_token),
                pad_token=str(pad_token),
                unk_token=str(unk_token),
                special_tokens=special_tokens_of(vocab),
            )
        else:
            backend = _load_default_backend()

        named = {
            "bos_token": bos_token,
            "eos_token": eos_token,
            "unk_token": unk_token,
            "pad_token": pad_token,
            "mask_token": mask_token,
        }
        for name, token in named.items():
            # The base class would silently append a missing special token to the vocabulary, shifting the
            # embedding size; for a fixed residue vocabulary that is always a configuration mistake.
            if token is not None and backend.token_to_id(str(token)) is None:
                raise ValueError(
                    f"{name} {str(token)!r} is not in the vocabulary; pass {name}=<a token of the vocabulary> "
                    "(ESM vocabularies use bos_token='<cls>') or None"
                )
        if invalid_residues == "X" and backend.token_to_id("X") is None:
            raise ValueError("invalid_residues='X' needs the residue 'X' in the vocabulary")

        # Every <...> token not named above is an extra special token, so skip_special_tokens removes it.
        named_strings = {str(token) for token in named.values() if token is not None}
        extras = list(extra_special_tokens or [])
        extra_strings = {str(token) for token in extras}
        for _, added_token in sorted(backend.get_added_tokens_decoder().items()):
            if added_token.special and added_token.content not in named_strings | extra_strings:
                extras.append(added_token.content)
                extra_strings.add(added_token.content)

        # Set before super().__init__, which may add tokens (and so rebuild the pattern via _add_tokens).
        self.invalid_residues = invalid_residues
        self._residue_pattern, self._valid_residues = _compile_residue_pattern(backend)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            tokenizer_object=backend,
            vocab_file=vocab_file,
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            pad_token=pad_token,
            mask_token=mask_token,
            extra_special_tokens=extras,
            invalid_residues=invalid_residues,  # kept in init_kwargs so save_pretrained writes it
            **kwargs,
        )

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        # The base class would unpack tokenizer.json into vocab/post_processor kwargs for subclasses that define
        # __init__ (unless trust_remote_code); ours loads tokenizer_file / vocab_file itself.
        return kwargs

    @property
    def can_save_slow_tokenizer(self) -> bool:
        # No slow tokenizer exists; False keeps tokenizer_class "PLMTokenizerFast" in tokenizer_config.json.
        return False

    # GLM infilling tokens: None (token and id) when the vocabulary lacks them, e.g. for ESM vocabularies.
    @property
    def gmask_token(self) -> str | None:
        return GMASK_TOKEN if self.gmask_token_id is not None else None

    @property
    def gmask_token_id(self) -> int | None:
        return self._tokenizer.token_to_id(GMASK_TOKEN)

    @property
    def smask_token(self) -> str | None:
        return SMASK_TOKEN if self.smask_token_id is not None else None

    @property
    def smask_token_id(self) -> int | None:
        return self._tokenizer.token_to_id(SMASK_TOKEN)

    @property
    def sop_token(self) -> str | None:
        return SOP_TOKEN if self.sop_token_id is not None else None

    @property
    def sop_token_id(self) -> int | None:
        return self._tokenizer.token_to_id(SOP_TOKEN)

    @property
    def eop_token(self) -> str | None:
        return EOP_TOKEN if self.eop_token_id is not None else None

    @property
    def eop_token_id(self) -> int | None:
        return self._tokenizer.token_to_id(EOP_TOKEN)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """The post-processor's layout for ids that are already tokens: ``<bos> A <eos>`` (a pair: ``... B <eos>``),
        without the side whose token is None."""
        bos = [self.bos_token_id] if self.bos_token is not None else []
        eos = [self.eos_token_id] if self.eos_token is not None else []
        ids = [*bos, *token_ids_0, *eos]
        return ids if token_ids_1 is None else [*ids, *token_ids_1, *eos]

    @property
    def valid_residues(self) -> str:
        """The residue characters accepted without invoking the ``invalid_residues`` policy, in id order."""
        return self._valid_residues

    def _add_tokens(self, new_tokens: list[str | AddedToken], special_tokens: bool = False) -> int:
        added = super()._add_tokens(new_tokens, special_tokens=special_tokens)
        # New added tokens are matched whole by the backend, so they must not count as invalid residues.
        self._residue_pattern, self._valid_residues = _compile_residue_pattern(self._tokenizer)
        return added

    def _encode_plus(self, text: Any, text_pair: Any = None, **kwargs: Any) -> BatchEncoding:
        # Every encoding entry point (__call__, encode, tokenize, text_target) funnels through here.
        is_split_into_words = bool(kwargs.get("is_split_into_words", False))
        split_special_tokens = kwargs.get("split_special_tokens")
        split_special_tokens = self.split_special_tokens if split_special_tokens is None else split_special_tokens
        self._check_text_input(text, "text", is_split_into_words, split_special_tokens)
        text = self._apply_policy_to_input(text, is_split_into_words, pair_suffix="")
        if text_pair is not None:
            self._check_text_input(text_pair, "text_pair", is_split_into_words, split_special_tokens)
            text_pair = self._apply_policy_to_input(text_pair, is_split_into_words, pair_suffix=" of text_pair")
        return super()._encode_plus(text, text_pair=text_pair, **kwargs)

    def _check_text_input(self, text: Any, name: str, is_split_into_words: bool, split_special_tokens: bool) -> None:
        """``TypeError`` naming the argument and the item for any input but those the class docstring lists; with
        ``split_special_tokens``, ``ValueError`` for a special token in the text (the backend would spell it out)."""
        pieces = _strings_of(text, name, is_split_into_words)
        if not split_special_tokens:
            return
        for piece, location in pieces:
            for match in self._residue_pattern.finditer(piece):
                if match.lastgroup == "special":
                    raise ValueError(
                        f"Special token {match.group()!r} at position {match.start() + 1}{location}: with "
                        "split_special_tokens=True it would be encoded as the residues of its letters; remove it "
                        "or leave split_special_tokens False"
                    )

    def _apply_policy_to_input(self, text: Any, is_split_into_words: bool, pair_suffix: str) -> Any:
        """Apply ``invalid_residues`` to any input shape accepted by ``_encode_plus``; other shapes pass through."""
        if isinstance(text, str):
            return self._apply_residue_policy(text, pair_suffix)
        if not isinstance(text, (list, tuple)):
            return text  # let the base class reject it with its own message
        if is_split_into_words:
            if text and isinstance(text[0], (list, tuple)):
                return [
                    self._apply_policy_to_words(words, f" of sequence {index}{pair_suffix}")
                    for index, words in enumerate(text)
                ]
            return self._apply_policy_to_words(text, pair_suffix)
        batch: list[Any] = []
        for index, item in enumerate(text):
            if isinstance(item, str):
                batch.append(self._apply_residue_policy(item, f" of sequence {index}{pair_suffix}"))
            elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(part, str) for part in item):
                # A batch of (text, text_pair) tuples.
                batch.append(
                    (
                        self._apply_residue_policy(item[0], f" of sequence {index}"),
                        self._apply_residue_policy(item[1], f" of sequence {index} of text_pair"),
                    )
                )
            else:
                batch.append(item)
        return batch

    def _apply_policy_to_words(self, words: Any, location: str) -> Any:
        """Pre-tokenized input: positions count through the concatenated words."""
        if not isinstance(words, (list, tuple)):
            return words
        result: list[Any] = []
        offset = 0
        for word in words:
            if not isinstance(word, str):
                return words  # let the base class reject it
            result.append(self._apply_residue_policy(word, location, offset))
            offset += len(word)
        return result

    def _apply_residue_policy(self, text: str, location: str, offset: int = 0) -> str:
        """Raise on, replace or drop characters that are neither valid residues, whitespace nor special tokens."""
        policy = self.invalid_residues
        if policy == "error":
            for match in self._residue_pattern.finditer(text):
                if match.lastgroup == "invalid":
                    raise ValueError(self._invalid_residue_message(match.group(), offset + match.start() + 1, location))
            return text
        if policy not in INVALID_RESIDUE_POLICIES:  # the attribute may have been reassigned after __init__
            raise ValueError(f"invalid_residues must be one of {INVALID_RESIDUE_POLICIES}, got {policy!r}")
        replacement = "X" if policy == "X" else ""
        return self._residue_pattern.sub(
            lambda match: replacement if match.lastgroup == "invalid" else match.group(), text
        )

    def _invalid_residue_message(self, character: str, position: int, location: str) -> str:
        example = self.mask_token or (self.all_special_tokens[0] if self.all_special_tokens else "<mask>")
        if self._tokenizer.token_to_id("X") is not None:
            hint = "Pass invalid_residues='X' to map such characters to X, or 'drop' to remove them."
        else:
            hint = "Pass invalid_residues='drop' to remove such characters."
        return (
            f"Invalid residue {character!r} at position {position}{location}: expected one of "
            f"{self._valid_residues} or a special token like {example}. {hint}"
        )

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Write ``vocab.txt`` (one token per line, line number = id) next to tokenizer.json, ESM-style."""
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "vocab.txt")
        by_id = sorted(self._tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
        if [index for _, index in by_id] != list(range(len(by_id))):
            raise ValueError("Token ids are not contiguous from 0; the vocabulary cannot be written as vocab.txt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("".join(token + "\n" for token, _ in by_id))
        return (path,)

    def _save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        file_names: tuple[str, ...],
        legacy_format: bool | None = None,
        filename_prefix: str | None = None,
    ) -> tuple[str, ...]:
        # The base class writes only tokenizer.json; vocab.txt keeps checkpoints readable by ESM-style tools.
        file_names = super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)
        return file_names + self.save_vocabulary(os.fspath(save_directory), filename_prefix)


def _describe(item: Any) -> str:
    return f"{item!r:.40} ({type(item).__name__})"


def _strings_of(text: Any, name: str, is_split_into_words: bool) -> list[tuple[str, str]]:
    """The strings of an input with their place (" of sequence 2 of text"), or ``TypeError``/``ValueError`` naming
    the argument and the item when the input has a shape that ``_encode_plus`` does not take."""
    if isinstance(text, str):
        return [(text, f" of {name}")]
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"{name} must be a protein sequence (str) or a list of them (a batch), got {_describe(text)}")
    if not text:
        raise ValueError(f"{name} is an empty list: pass at least one sequence")
    strings = []
    if is_split_into_words:
        rows = text if isinstance(text[0], (list, tuple)) else [text]
        for row_index, row in enumerate(rows):
            if not isinstance(row, (list, tuple)):
                raise TypeError(
                    f"{name}: item {row_index} of the batch is {_describe(row)}, not a list of strings "
                    "(is_split_into_words=True)"
                )
            for word_index, word in enumerate(row):
                if not isinstance(word, str):
                    raise TypeError(
                        f"{name}: word {word_index} of sequence {row_index} is {_describe(word)}, not a string"
                    )
                strings.append((word, f" of word {word_index} of sequence {row_index} of {name}"))
        return strings
    for index, item in enumerate(text):
        if isinstance(item, str):
            strings.append((item, f" of sequence {index} of {name}"))
        elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(part, str) for part in item):
            strings += [(item[0], f" of sequence {index} of {name}"), (item[1], f" of pair {index} of {name}")]
        else:
            hint = " (pass is_split_into_words=True for lists of words)" if isinstance(item, (list, tuple)) else ""
            raise TypeError(
                f"{name}: item {index} of the batch is {_describe(item)}, not a string; a batch holds protein "
                f"sequences (str) or (text, text_pair) pairs of them{hint}"
            )
    return strings


def _compile_residue_pattern(backend: Tokenizer) -> tuple[re.Pattern[str], str]:
    """One regex that finds, left to right, added tokens (group ``special``) and invalid characters (``invalid``).

    Returns the pattern and the valid residues (single-character non-special vocab tokens, in id order).
    """
    added = {token.content for token in backend.get_added_tokens_decoder().values()}
    by_id = sorted(backend.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1])
    residues = [token for token, _ in by_id if len(token) == 1 and token not in added and not token.isspace()]
    # Lower-case letters are valid when the normalizer upper-cases them to a residue.
    lower = [letter for letter in string.ascii_lowercase if letter.upper() in residues]
    accepted = "".join(re.escape(character) for character in residues + lower)
    invalid = rf"(?P<invalid>[^{accepted}\s])"
    # Longest first, so that a token that is a prefix of another cannot shadow it.
    specials = "|".join(re.escape(token) for token in sorted(added, key=len, reverse=True))
    pattern = f"(?P<special>{specials})|{invalid}" if specials else invalid
    return re.compile(pattern), "".join(residues)
