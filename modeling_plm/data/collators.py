"""Data collators for the three training objectives: masked LM (MLM), causal LM (CLM) and GLM blank infilling.

Every collator is called as ``collator(sequences, seed)`` with cleaned residue strings and returns a dict of
``torch.long`` tensors (packed batches add the sequence boundaries, see below). All randomness comes from one
``torch.Generator`` seeded inside the call, so a batch is a pure function of ``(sequences, seed)``. The random draws do
not depend on ``pack_length`` either: for one seed, the padded and the packed batch hold exactly the same samples,
only laid out differently.

``token_budget_batches`` groups sequences into padded inference batches under a token budget.

Layouts:
  - Padded (``pack_length=None``): one sample per row, right-padded with ``<pad>`` to the longest row, with an
    ``attention_mask``. Padding has label -100.
  - Packed (``pack_length=L``): samples concatenated into rows of exactly L tokens (next-fit in input order, see
    ``pack_rows``), ``position_ids`` restarting at 0 at each sample, and no ``attention_mask``: this is the model's
    padding-free convention, under which attention never crosses a sample boundary. The unused tail of a row is
    ``<pad>`` filler with positions 0, 1, ... (a sequence of its own) and label -100. The batch also carries the
    sequence boundaries, described here once for everything downstream (the model's attention, the trainer's token
    and FLOP counts): ``cu_seq_lens_q``/``cu_seq_lens_k`` (int32 cumulative lengths over the flattened rows) and
    ``max_length_q``/``max_length_k`` (int), as transformers' ``DataCollatorWithFlattening`` names them.

Labels use -100 for ignored positions. MLM and GLM labels are per position (PLMForMaskedLM does not shift them);
CLM labels are the input ids (PLMForCausalLM shifts them).

GLM samples (xTrimoPGLM) put the context first and the spans to generate after it::

    span mode:  <bos> r1 r2 <smask> r6 r7 <smask> r9 <eos> | <sop> r3 r4 r5 | <sop> r8
    labels:     -100 everywhere in the context              | r3   r4 r5 <eop> | r8 <eop>
    positions:  0 1 2 3 4 5 6 7 8                           | 3 3 3 3         | 6 6
    block ids:  0 ...                                 0     | 1 2 3 4         | 1 2

    gmask mode: <bos> r1 r2 r3 <gmask> | <sop> r4 r5 r6 r7      (no <eos>: the end of the protein is generated)
    labels:     -100 ...               | r4 r5 r6 r7 <eop>
    positions:  0 1 2 3 4              | 4 4 4 4 4
    block ids:  0 ...                  | 1 2 3 4 5

Every generated piece ends with ``<eop>``, in both modes, so generation has one stop token. A GLM sample is longer
than its tokenization: by 2 tokens per span in span mode (``<smask>`` and ``<sop>``), by 1 in gmask mode.
"""

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ..tokenization_plm import glm_layout

IGNORE_INDEX = -100
# Random replacements are drawn from the 20 standard amino acids: X, B, Z, U and O are rare or ambiguous, and
# teaching the model to "correct" a residue into them would be noise.
STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
GLM_MODES = ("mlm", "span", "gmask")
GLM_FIELDS = ("input_ids", "position_ids", "block_position_ids")  # the order of `glm_layout`
# BERT's split of the selected positions, used by GLMCollator's "mlm" mode.
DEFAULT_MASK_TOKEN_RATIO = 0.8
DEFAULT_RANDOM_TOKEN_RATIO = 0.1

Sample = dict[str, torch.Tensor]
PADDING_SIDES = ("right", "left")


def pad_rows(rows: list[Sequence[int]] | list[torch.Tensor], pad_value: int, side: str = "right") -> torch.Tensor:
    """The rows as one (len(rows), longest) int64 tensor, padded with `pad_value` on `side`: the package's one
    padding (collators, fine-tuning, embedding, scoring and generation batches)."""
    if side not in PADDING_SIDES:
        raise ValueError(f"side must be one of {PADDING_SIDES}, got {side!r}")
    width = max(len(row) for row in rows)
    padded = torch.full((len(rows), width), pad_value, dtype=torch.long)
    for index, row in enumerate(rows):
        if len(row):
            values = row if torch.is_tensor(row) else torch.tensor(row, dtype=torch.long)
            if side == "right":
                padded[index, : len(row)] = values
            else:
                padded[index, width - len(row) :] = values
    return padded


def padded_inputs(rows: list[Sequence[int]], pad_token_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` (1 on the rows' tokens) of token-id rows of different lengths."""
    return {
        "input_ids": pad_rows(rows, pad_token_id, side),
        "attention_mask": pad_rows([[1] * len(row) for row in rows], 0, side),
    }


def token_budget_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indices grouped longest first (ties in input order) so that each padded batch (rows x longest row) holds at
    most `token_budget` tokens; a sequence longer than the budget gets a batch of its own. For inference batches."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= token_budget:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


class NextFitRows:
    """Next-fit packing, one item at a time: an item that does not fit in the space left in the current row starts a
    new row. The one packing rule: `pack_rows` packs a batch with it, and the pretraining batcher asks it how many
    rows a batch would take before it takes one more sequence."""

    def __init__(self, row_length: int):
        if row_length < 1:
            raise ValueError(f"row_length must be a positive number of tokens, got {row_length}")
        self.row_length = row_length
        self.rows: list[list[int]] = []
        self.count = 0  # items placed
        self._used = 0

    def rows_with(self, length: int) -> int:
        """How many rows there would be after adding an item of `length` tokens."""
        starts_row = not self.rows or self._used + length > self.row_length
        return len(self.rows) + starts_row

    def add(self, length: int) -> None:
        """Place the next item. Raises ValueError for an item longer than `row_length`."""
        if length > self.row_length:
            raise ValueError(
                f"Sample {self.count} has {length} tokens, more than the pack length {self.row_length}; "
                "crop it beforehand."
            )
        if self.rows_with(length) > len(self.rows):
            self.rows.append([])
            self._used = 0
        self.rows[-1].append(self.count)
        self.count += 1
        self._used += length


def pack_rows(lengths: list[int], row_length: int) -> list[list[int]]:
    """Next-fit packing (`NextFitRows`): the indices of the items in each row, in input order. Raises ValueError for
    an item longer than ``row_length``."""
    packer = NextFitRows(row_length)
    for length in lengths:
        packer.add(length)
    return packer.rows


def _check_pack_length(pack_length: int | None) -> None:
    if pack_length is not None and pack_length < 1:
        raise ValueError(f"pack_length must be None (padded batches) or a positive int, got {pack_length}")


def _tokenize(tokenizer: PreTrainedTokenizerBase, sequences: list[str]) -> list[list[int]]:
    if len(sequences) == 0:
        raise ValueError("Cannot collate an empty list of sequences.")
    encoded = tokenizer(list(sequences), add_special_tokens=True, return_attention_mask=False)
    return encoded["input_ids"]


def _residue_lookup(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """A bool table indexed by token id: True for residues, i.e. every vocabulary entry that is not special.

    A table lookup rather than torch.isin: it is the hot path of MLM masking.
    """
    lookup = torch.ones(len(tokenizer), dtype=torch.bool)
    lookup[list(set(tokenizer.all_special_ids))] = False
    return lookup


def _standard_amino_acid_ids(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    ids = tokenizer.convert_tokens_to_ids(list(STANDARD_AMINO_ACIDS))
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        raise ValueError(f"The tokenizer lacks some of the standard amino acids {STANDARD_AMINO_ACIDS}.")
    return torch.tensor(ids, dtype=torch.long)


def _mask_residues(
    input_ids: torch.Tensor,
    *,
    residue_lookup: torch.Tensor,
    replacement_ids: torch.Tensor,
    mask_token_id: int,
    mask_ratio: float,
    mask_token_ratio: float,
    random_token_ratio: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT/ESM masking of one sample: returns (masked input ids, labels)."""
    positions = residue_lookup[input_ids].nonzero().flatten()
    n_residues = positions.numel()
    # An exact count (at least 1) rather than a coin per residue: see MLMCollator.
    n_selected = min(n_residues, max(1, int(mask_ratio * n_residues + 0.5))) if n_residues > 0 else 0
    selected = positions[torch.randperm(n_residues, generator=generator)[:n_selected]]
    draws = torch.rand(n_selected, generator=generator)
    random_tokens = replacement_ids[torch.randint(len(replacement_ids), (n_selected,), generator=generator)]

    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[selected] = input_ids[selected]
    masked = input_ids.clone()
    to_mask = draws < mask_token_ratio
    to_random = (draws >= mask_token_ratio) & (draws < mask_token_ratio + random_token_ratio)
    masked[selected[to_mask]] = mask_token_id
    masked[selected[to_random]] = random_tokens[to_random]
    return masked, labels


def _pad_samples(samples: list[Sample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One sample per row, right-padded to the longest; positions of padding are 0 (they are masked out anyway)."""
    batch = padded_inputs([sample["input_ids"] for sample in samples], pad_token_id)
    batch["labels"] = pad_rows([sample["labels"] for sample in samples], IGNORE_INDEX)
    for name in ("position_ids", "block_position_ids"):
        if name in samples[0]:
            batch[name] = pad_rows([sample[name] for sample in samples], 0)
    return batch


def _pack_samples(samples: list[Sample], pack_length: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Rows of exactly pack_length tokens (next-fit); no attention_mask, positions restart at 0 at each sample.

    The sequence boundaries travel with the batch once, in transformers' convention (`DataCollatorWithFlattening`):
    `cu_seq_lens_q`/`cu_seq_lens_k`, the cumulative sequence lengths over the flattened rows (int32, a row's filler
    counted as a sequence of its own), and `max_length_q`/`max_length_k`, the longest."""
    rows = pack_rows([len(sample["input_ids"]) for sample in samples], pack_length)
    has_blocks = "block_position_ids" in samples[0]
    packed: dict[str, list[torch.Tensor]] = {"input_ids": [], "position_ids": [], "labels": []}
    if has_blocks:
        packed["block_position_ids"] = []
    sequence_lengths: list[int] = []
    for members in rows:
        input_ids = [samples[index]["input_ids"] for index in members]
        labels = [samples[index]["labels"] for index in members]
        if "position_ids" in samples[0]:
            positions = [samples[index]["position_ids"] for index in members]
        else:
            positions = [torch.arange(len(ids)) for ids in input_ids]
        blocks = [samples[index]["block_position_ids"] for index in members] if has_blocks else []
        filler = pack_length - sum(len(ids) for ids in input_ids)
        if filler > 0:
            # The filler restarts at position 0 (block 0), so the model sees it as a sequence of its own.
            input_ids.append(torch.full((filler,), pad_token_id, dtype=torch.long))
            labels.append(torch.full((filler,), IGNORE_INDEX, dtype=torch.long))
            positions.append(torch.arange(filler))
            blocks.append(torch.zeros(filler, dtype=torch.long))
        sequence_lengths += [len(ids) for ids in input_ids]
        packed["input_ids"].append(torch.cat(input_ids))
        packed["position_ids"].append(torch.cat(positions))
        packed["labels"].append(torch.cat(labels))
        if has_blocks:
            packed["block_position_ids"].append(torch.cat(blocks))
    batch = {name: torch.stack(values).long() for name, values in packed.items()}
    cu_seq_lens = torch.tensor([0, *sequence_lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = cu_seq_lens
    batch["max_length_q"] = batch["max_length_k"] = max(sequence_lengths)
    return batch


def _assemble(samples: list[Sample], pack_length: int | None, pad_token_id: int) -> dict[str, torch.Tensor]:
    if pack_length is None:
        return _pad_samples(samples, pad_token_id)
    return _pack_samples(samples, pack_length, pad_token_id)


class MLMCollator:
    """Masked-LM batches with the BERT/ESM recipe, for PLMForMaskedLM.

    Per sequence, exactly ``round(mask_ratio * n_residues)`` residue positions are selected (at least 1 when the
    sequence has residues; halves round up). An exact count rather than an independent coin per residue keeps the
    number of targets per sequence fixed: no short sequence contributes zero targets, the loss's denominator varies
    less between batches, and the masked fraction that ESM-2's token-dropout rescaling sees is the trained one.
    ``<bos>``, ``<eos>`` and padding are never selected.

    Of the selected positions, each independently becomes ``<mask>`` with probability ``mask_token_ratio``, a random
    standard amino acid (one of the 20; it may equal the original, as in BERT) with probability
    ``random_token_ratio``, and stays unchanged otherwise. Labels hold the original token at selected positions and
    -100 elsewhere (not shifted).

    Returns ``input_ids``, ``attention_mask`` and ``labels`` (padded), or ``input_ids``, ``position_ids``,
    ``labels`` and the sequence boundaries (packed, ``pack_length`` tokens per row; see `_pack_samples`).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mask_ratio: float = 0.15,
        mask_token_ratio: float = 0.8,
        random_token_ratio: float = 0.1,
        pack_length: int | None = None,
    ):
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        if mask_token_ratio < 0 or random_token_ratio < 0 or mask_token_ratio + random_token_ratio > 1.0:
            raise ValueError(
                "mask_token_ratio and random_token_ratio must be >= 0 with a sum <= 1, "
                f"got {mask_token_ratio} and {random_token_ratio}"
            )
        if tokenizer.mask_token_id is None:
            raise ValueError("The tokenizer has no mask token.")
        _check_pack_length(pack_length)
        self.tokenizer = tokenizer
        self.mask_ratio = mask_ratio
        self.mask_token_ratio = mask_token_ratio
        self.random_token_ratio = random_token_ratio
        self.pack_length = pack_length
        self.residue_lookup = _residue_lookup(tokenizer)
        self.replacement_ids = _standard_amino_acid_ids(tokenizer)

    def __call__(self, sequences: list[str], seed: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        samples = []
        for token_ids in _tokenize(self.tokenizer, sequences):
            input_ids, labels = _mask_residues(
                torch.tensor(token_ids, dtype=torch.long),
                residue_lookup=self.residue_lookup,
                replacement_ids=self.replacement_ids,
                mask_token_id=self.tokenizer.mask_token_id,
                mask_ratio=self.mask_ratio,
                mask_token_ratio=self.mask_token_ratio,
                random_token_ratio=self.random_token_ratio,
                generator=generator,
            )
            samples.append({"input_ids": input_ids, "labels": labels})
        return _assemble(samples, self.pack_length, self.tokenizer.pad_token_id)


class CLMCollator:
    """Causal-LM batches for PLMForCausalLM: labels are the input ids (the model shifts them).

    Padded: padding has label -100. Packed: the first token of every sample (and all filler) has label -100, so no
    loss term predicts a sample's ``<bos>`` from the previous sample's ``<eos>``; the padded batch never scores that
    token either (after the shift nothing predicts position 0), so both layouts score the same tokens.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pack_length: int | None = None):
        _check_pack_length(pack_length)
        self.tokenizer = tokenizer
        self.pack_length = pack_length

    def __call__(self, sequences: list[str], seed: int) -> dict[str, torch.Tensor]:
        # No randomness in CLM; the seed is taken so that every collator is called the same way.
        samples = []
        for token_ids in _tokenize(self.tokenizer, sequences):
            input_ids = torch.tensor(token_ids, dtype=torch.long)
            labels = input_ids.clone()
            if self.pack_length is not None:
                labels[0] = IGNORE_INDEX
            samples.append({"input_ids": input_ids, "labels": labels})
        return _assemble(samples, self.pack_length, self.tokenizer.pad_token_id)


class GLMCollator:
    """xTrimoPGLM batches (context first, then ``<sop>``-started spans; see the module docstring), for PLMForMaskedLM.

    Each sample independently draws one mode with probabilities ``mlm_probability``, ``span_probability`` and
    ``gmask_probability`` (they must sum to 1):

    - ``"mlm"``: the MLMCollator recipe (``mask_ratio``, 80/10/10 split); ``block_position_ids`` all 0.
    - ``"span"``: span lengths are drawn from Poisson(``mean_span_length``) clipped to >= 1 until they cover
      ``round(span_ratio * n_residues)`` residues (at least 1; the last span is cut to the budget), shuffled, and
      placed uniformly at random among the residues with at least one context residue between two spans. Each span
      becomes one ``<smask>`` in the context.
    - ``"gmask"``: the residues are cut after a prefix of ``p`` residues, ``p`` uniform over the integers from
      ``round(gmask_min_prefix * n)`` to ``round(gmask_max_prefix * n)``, kept within ``1 .. n - 1``; the context is
      ``<bos> prefix <gmask>`` and the span is the suffix.

    Spans and cuts are in residue coordinates: ``<bos>`` and ``<eos>`` are never cut. A sequence with fewer than 2
    residues falls back to ``"mlm"``. Returns ``input_ids``, ``position_ids``, ``block_position_ids`` and ``labels``,
    plus ``attention_mask`` when padded or the sequence boundaries when packed (see `_pack_samples`).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mlm_probability: float = 0.3,
        span_probability: float = 0.4,
        gmask_probability: float = 0.3,
        mask_ratio: float = 0.15,
        span_ratio: float = 0.15,
        mean_span_length: float = 3.0,
        gmask_min_prefix: float = 0.1,
        gmask_max_prefix: float = 0.9,
        pack_length: int | None = None,
    ):
        probabilities = (mlm_probability, span_probability, gmask_probability)
        if min(probabilities) < 0 or abs(sum(probabilities) - 1.0) > 1e-6:
            raise ValueError(
                f"The mode probabilities (mlm, span, gmask) must be >= 0 and sum to 1, got {probabilities}"
            )
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        # Above one half, the spans could not all be separated by a context residue.
        if not 0.0 < span_ratio <= 0.5:
            raise ValueError(f"span_ratio must be in (0, 0.5], got {span_ratio}")
        if mean_span_length <= 0:
            raise ValueError(f"mean_span_length must be > 0, got {mean_span_length}")
        if not 0.0 <= gmask_min_prefix <= gmask_max_prefix <= 1.0:
            raise ValueError(
                f"Need 0 <= gmask_min_prefix <= gmask_max_prefix <= 1, got {gmask_min_prefix} and {gmask_max_prefix}"
            )
        special_ids = {
            "mask": tokenizer.mask_token_id,
            "gmask": getattr(tokenizer, "gmask_token_id", None),
            "smask": getattr(tokenizer, "smask_token_id", None),
            "sop": getattr(tokenizer, "sop_token_id", None),
            "eop": getattr(tokenizer, "eop_token_id", None),
        }
        missing = [name for name, token_id in special_ids.items() if token_id is None]
        if missing:
            raise ValueError(f"The tokenizer lacks the GLM special tokens: {', '.join(missing)}.")
        _check_pack_length(pack_length)
        self.tokenizer = tokenizer
        self.mode_probabilities = torch.tensor(probabilities, dtype=torch.float)
        self.mask_ratio = mask_ratio
        self.span_ratio = span_ratio
        self.mean_span_length = torch.tensor([float(mean_span_length)])
        self.gmask_min_prefix = gmask_min_prefix
        self.gmask_max_prefix = gmask_max_prefix
        self.pack_length = pack_length
        self.residue_lookup = _residue_lookup(tokenizer)
        self.replacement_ids = _standard_amino_acid_ids(tokenizer)
        self.bos_token_id: int = tokenizer.bos_token_id
        self.eos_token_id: int = tokenizer.eos_token_id
        self.mask_token_id: int = special_ids["mask"]
        self.gmask_token_id: int = special_ids["gmask"]
        self.smask_token_id: int = special_ids["smask"]
        self.sop_token_id: int = special_ids["sop"]
        self.eop_token_id: int = special_ids["eop"]

    def max_sample_length(self, n_residues: int) -> int:
        """An upper bound on the tokens of one GLM sample of ``n_residues`` residues, whatever mode is drawn.

        Span mode is the longest: ``<bos>`` + ``<eos>`` + 2 tokens (``<smask>``, ``<sop>``) per span, and there are at
        most as many spans as residues in the span budget. Next-fit never uses more rows when items shrink, so
        ``pack_rows`` over these bounds gives at least as many rows as the collator will fill.
        """
        if n_residues < 2:
            return n_residues + 2
        return n_residues + 2 + 2 * max(1, int(self.span_ratio * n_residues + 0.5))

    def _draw_mode(self, generator: torch.Generator) -> str:
        """One GLM mode, drawn with the configured probabilities."""
        return GLM_MODES[int(torch.multinomial(self.mode_probabilities, 1, generator=generator))]

    def glm_sample(
        self, token_ids: list[int], mode: str, generator: torch.Generator
    ) -> tuple[list[int], list[int], list[int], list[int]]:
        """One GLM sample from ``<bos> residues <eos>``: (input_ids, position_ids, block_position_ids, labels)."""
        if mode not in GLM_MODES:
            raise ValueError(f"mode must be one of {GLM_MODES}, got {mode!r}")
        if len(token_ids) < 2 or token_ids[0] != self.bos_token_id or token_ids[-1] != self.eos_token_id:
            raise ValueError("A GLM sample must be tokenized as <bos> residues <eos>.")
        residues = token_ids[1:-1]
        if len(residues) < 2:
            mode = "mlm"  # nothing to cut that would leave both a context residue and a span
        if mode == "mlm":
            return self._mlm_sample(token_ids, generator)
        if mode == "span":
            return self._span_sample(residues, generator)
        return self._gmask_sample(residues, generator)

    def _mlm_sample(
        self, token_ids: list[int], generator: torch.Generator
    ) -> tuple[list[int], list[int], list[int], list[int]]:
        input_ids, labels = _mask_residues(
            torch.tensor(token_ids, dtype=torch.long),
            residue_lookup=self.residue_lookup,
            replacement_ids=self.replacement_ids,
            mask_token_id=self.mask_token_id,
            mask_ratio=self.mask_ratio,
            mask_token_ratio=DEFAULT_MASK_TOKEN_RATIO,
            random_token_ratio=DEFAULT_RANDOM_TOKEN_RATIO,
            generator=generator,
        )
        length = len(token_ids)
        return input_ids.tolist(), list(range(length)), [0] * length, labels.tolist()

    def _span_sample(
        self, residues: list[int], generator: torch.Generator
    ) -> tuple[list[int], list[int], list[int], list[int]]:
        n_residues = len(residues)
        budget = max(1, int(self.span_ratio * n_residues + 0.5))
        lengths: list[int] = []
        covered = 0
        while covered < budget:
            drawn = int(torch.poisson(self.mean_span_length, generator=generator).item())
            length = min(max(drawn, 1), budget - covered)
            lengths.append(length)
            covered += length
        # The last span was cut to the budget; shuffling keeps it from always landing rightmost.
        order = torch.randperm(len(lengths), generator=generator).tolist()
        lengths = [lengths[index] for index in order]
        # Choose, for each span, a distinct gap among the kept residues (kept + 1 gaps): spans never touch. This
        # always fits because span_ratio <= 0.5 keeps len(lengths) <= covered <= kept + 1.
        kept = n_residues - covered
        gaps = sorted(torch.randperm(kept + 1, generator=generator)[: len(lengths)].tolist())
        starts = []
        earlier = 0
        for gap, length in zip(gaps, lengths):
            starts.append(gap + earlier)
            earlier += length

        context = [self.bos_token_id]
        mask_positions = []
        cursor = 0
        for start, length in zip(starts, lengths):
            context.extend(residues[cursor:start])
            mask_positions.append(len(context))
            context.append(self.smask_token_id)
            cursor = start + length
        context.extend(residues[cursor:])
        context.append(self.eos_token_id)

        spans = [residues[start : start + length] for start, length in zip(starts, lengths)]
        input_ids, position_ids, block_position_ids = glm_layout(context, mask_positions, spans, self.sop_token_id)
        labels = [IGNORE_INDEX] * len(context)
        for span in spans:  # each span token predicts the next one; the last predicts <eop>
            labels.extend([*span, self.eop_token_id])
        return input_ids, position_ids, block_position_ids, labels

    def _gmask_sample(
        self, residues: list[int], generator: torch.Generator
    ) -> tuple[list[int], list[int], list[int], list[int]]:
        n_residues = len(residues)
        # Both the prefix and the generated suffix keep at least one residue.
        lowest = min(max(1, int(self.gmask_min_prefix * n_residues + 0.5)), n_residues - 1)
        highest = max(min(n_residues - 1, int(self.gmask_max_prefix * n_residues + 0.5)), lowest)
        prefix = lowest + int(torch.randint(highest - lowest + 1, (1,), generator=generator))
        suffix = residues[prefix:]
        context = [self.bos_token_id, *residues[:prefix], self.gmask_token_id]
        gmask_position = len(context) - 1
        input_ids, position_ids, block_position_ids = glm_layout(context, [gmask_position], [suffix], self.sop_token_id)
        labels = [IGNORE_INDEX] * len(context) + [*suffix, self.eop_token_id]
        return input_ids, position_ids, block_position_ids, labels

    def __call__(self, sequences: list[str], seed: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        samples = []
        for token_ids in _tokenize(self.tokenizer, sequences):
            mode = self._draw_mode(generator)
            # One conversion of the four equal-length lists is cheaper than four.
            fields = torch.tensor(self.glm_sample(token_ids, mode, generator), dtype=torch.long)
            samples.append(
                {
                    "input_ids": fields[0],
                    "position_ids": fields[1],
                    "block_position_ids": fields[2],
                    "labels": fields[3],
                }
            )
        return _assemble(samples, self.pack_length, self.tokenizer.pad_token_id)


def build_collator(
    objective: str, tokenizer: PreTrainedTokenizerBase, pack_length: int | None = None, **options
) -> MLMCollator | CLMCollator | GLMCollator:
    """The collator of a training objective ("mlm", "clm" or "glm"); options go to its constructor."""
    if objective == "mlm":
        return MLMCollator(tokenizer, pack_length=pack_length, **options)
    if objective == "clm":
        return CLMCollator(tokenizer, pack_length=pack_length, **options)
    if objective == "glm":
        return GLMCollator(tokenizer, pack_length=pack_length, **options)
    raise ValueError(f"objective must be one of 'mlm', 'clm', 'glm', got {objective!r}")


def glm_infill_inputs(tokenizer: PreTrainedTokenizerBase, context: str) -> dict[str, torch.Tensor]:
    """Generation inputs for GLM infilling of the first `<smask>` (or a `<gmask>` continuation) in `context`.

    The context is followed by `<sop>`, which sits at the mask token's position with block position 1; pass the
    result to `PLMForCausalLM.generate(**inputs, eos_token_id=tokenizer.eop_token_id)`, which keeps the span's
    position and advances its block position for every new token.
    """
    context_ids = tokenizer(context, add_special_tokens=True)["input_ids"]
    mask_ids = [tokenizer.smask_token_id, tokenizer.gmask_token_id]
    mask_position = next((i for i, token in enumerate(context_ids) if token in mask_ids), None)
    if mask_position is None:
        raise ValueError(f"the context has no {tokenizer.smask_token} or {tokenizer.gmask_token} to infill")
    if context_ids[mask_position] == tokenizer.gmask_token_id and context_ids[-1] == tokenizer.eos_token_id:
        context_ids = context_ids[:-1]  # a <gmask> continuation is open-ended: no <eos> after it (as in training)
    layout = glm_layout(context_ids, [mask_position], [[]], tokenizer.sop_token_id)  # ... <sop> to generate from
    return {name: torch.tensor([values]) for name, values in zip(GLM_FIELDS, layout)}
