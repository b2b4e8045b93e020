"""Likelihoods and zero-shot variant-effect scores from one PLM language-model checkpoint.

The model is a PLM LM checkpoint loaded as `PLMForMaskedLM` or `PLMForCausalLM` (the same weights); every forward
here passes `attention_type` explicitly, so either class works for every score.

Sequence scores
  - `masked_marginals`: log p(token | sequence with that one position masked), bidirectional attention, over the
    model's whole vocabulary (index it with `tokenizer.convert_tokens_to_ids(letter)`).
  - `pseudo_log_likelihood` (PLL): the sum over residues of log p(true residue | sequence with it masked); L forward
    rows per sequence of L residues.
  - `causal_log_likelihood`: the sum of log p(token_i | <bos> residues_<i) over the residues and the final `<eos>`
    (ProGen2's convention: a sequence is also scored for ending where it ends), causal attention, one row per
    sequence.

Variant effects (`score_variants`), mutations written `A23V`, multi-mutants `A23V:G45D`:
  - "masked-marginal" (ESM-1v): sum over the mutated positions of log p(mt) - log p(wt), each position masked in the
    wild type. The marginals are computed once per distinct position, so any number of mutants costs at most one
    forward row per residue of the wild type.
  - "wt-marginal": the same log-ratio read from one unmasked forward pass of the wild type.
  - "pseudo-likelihood": PLL(mutant) - PLL(wild type); L rows per distinct mutant sequence (slow on a large DMS).
  - "causal": the CLM log-likelihood ratio LL(mutant) - LL(wild type), one row per distinct mutant sequence.

Long sequences: the model's context is `config.max_position_embeddings` tokens including `<bos>` and `<eos>`; a
window is at most that many residues (`window=`, default the whole context) wrapped in `<bos>`/`<eos>`, and a
sequence no longer than the window is scored whole, exactly as without windows. For a longer one:
  - masked scores (masked marginals, PLL, masked-marginal) read each position in a window centred on it, clamped to
    the sequence ends (ProteinGym's "optimal" window for ESM);
  - wt-marginal and causal variant scores read each mutant in one window centred on the mean of its mutated positions
    (Tranception's "optimal" window), moved if needed so that it covers all of them, and score the wild type in the
    same window: the causal score is LL(mutant window) - LL(wild-type window), each window scored as a sequence of
    its own. A multi-mutant whose mutations span more than the window raises `ValueError`.
  - `causal_log_likelihood` of a whole sequence has no window: it raises `ValueError` for a longer one.

Batching: rows are sorted by length and run `batch_size` at a time, right-padded with an attention mask (padding
does not change a row's result). Results come back in input order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForMaskedLM, Pipeline, PreTrainedModel, PreTrainedTokenizerBase
from transformers.pipelines import PIPELINE_REGISTRY

from ..data.collators import STANDARD_AMINO_ACIDS, padded_inputs
from .context import context_residues
from .inputs import is_batch, iter_inputs

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "SEQUENCE_SCORES",
    "STANDARD_AMINO_ACIDS",
    "VARIANT_METHODS",
    "ProteinScoringPipeline",
    "apply_mutations",
    "causal_log_likelihood",
    "masked_marginals",
    "parse_mutations",
    "pseudo_log_likelihood",
    "score_variants",
    "window_residues",
]

VARIANT_METHODS = ("masked-marginal", "wt-marginal", "pseudo-likelihood", "causal")
SEQUENCE_SCORES = ("pseudo-log-likelihood", "causal")
DEFAULT_BATCH_SIZE = 32
# Multi-mutants join single mutations with ':' (ESM, ProteinGym) or ';' (MaveDB-style lists); both are accepted.
MUTATION_SEPARATORS = re.compile(r"[:;]")
# Anything but a digit on either side, so that `A23*` or `A23x` get a "not an amino acid" message, not "malformed".
MUTATION_PATTERN = re.compile(r"(\D)(-?\d+)(\D)")


# ---------------------------------------------------------------------------------------------------------------------
# Mutations


def parse_mutations(spec: str, sequence: str, offset: int = 1) -> list[tuple[str, int, str]]:
    """Parse `A23V` or a multi-mutant `A23V:G45D` (`A23V;G45D` also accepted) against a wild-type sequence.

    Positions in `spec` are numbered so that the first residue of `sequence` is `offset` (1 by default; a mature
    chain numbered from 24 would pass `offset=24`). Returns `(wild type, position, mutant)` per mutation, in the order
    written, with the position converted to the 1-based index into `sequence` (so `sequence[position - 1]` is the
    wild-type letter), ready for `masked_marginals` and `apply_mutations`. Synonymous mutations (`A23A`) are allowed.

    Raises ValueError naming the mutation when the text is malformed, the position is outside the sequence, the
    wild-type letter does not match the sequence there, the mutant letter is not one of the 20 standard amino acids,
    or one multi-mutant changes the same position twice.
    """
    if not isinstance(spec, str):
        raise TypeError(f"A mutation must be a string like 'A23V' or 'A23V:G45D', got {type(spec).__name__}")
    parts = MUTATION_SEPARATORS.split(spec.strip())
    where = f" in {spec!r}" if len(parts) > 1 else ""
    parsed: list[tuple[str, int, str]] = []
    seen: dict[int, str] = {}
    last = offset + len(sequence) - 1
    for part in parts:
        part = part.strip()
        match = MUTATION_PATTERN.fullmatch(part)
        if match is None:
            raise ValueError(
                f"Malformed mutation {part!r}{where}: expected <wild type><position><mutant> such as 'A23V'; "
                "join the mutations of a multi-mutant with ':' (A23V:G45D)"
            )
        wild_type, number, mutant = match.group(1), int(match.group(2)), match.group(3)
        if not offset <= number <= last:
            raise ValueError(
                f"Mutation {part!r}{where}: position {number} is outside the sequence, whose {len(sequence)} residues "
                f"are numbered {offset}..{last} (offset {offset})"
            )
        index = number - offset  # 0-based
        actual = sequence[index].upper()
        if wild_type != actual:
            raise ValueError(
                f"Mutation {part!r}{where}: wild type at {number} is {actual}, mutation says {wild_type} "
                f"(numbering starts at offset {offset}; is the offset or the sequence right?)"
            )
        if mutant not in STANDARD_AMINO_ACIDS:
            raise ValueError(
                f"Mutation {part!r}{where}: mutant {mutant!r} is not one of the 20 standard amino acids "
                f"{STANDARD_AMINO_ACIDS}"
            )
        if number in seen:
            raise ValueError(f"Mutation {spec!r} changes position {number} twice ({seen[number]} and {part})")
        seen[number] = part
        parsed.append((wild_type, index + 1, mutant))
    return parsed


def apply_mutations(sequence: str, mutations: Sequence[tuple[str, int, str]]) -> str:
    """The mutant sequence: `mutations` as returned by `parse_mutations` (1-based positions into `sequence`)."""
    residues = list(sequence)
    for wild_type, position, mutant in mutations:
        if residues[position - 1].upper() != wild_type:
            raise ValueError(f"wild type at position {position} is {residues[position - 1]}, not {wild_type}")
        residues[position - 1] = mutant
    return "".join(residues)


# ---------------------------------------------------------------------------------------------------------------------
# Shared machinery


@contextmanager
def _inference(model: PreTrainedModel) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd for the call; a model in training mode is switched back afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()


def _check_sequences(sequences: Any) -> list[str]:
    # A bare string would otherwise be scored character by character.
    if isinstance(sequences, str):
        raise TypeError("sequences must be a list of strings, not one string; wrap it as [sequence]")
    sequences = list(iter_inputs(sequences))  # also a dataset column or KeyDataset
    for index, sequence in enumerate(sequences):
        if not isinstance(sequence, str):
            raise TypeError(f"sequence {index} is a {type(sequence).__name__}, not a string")
    return sequences


def _residue_ids(tokenizer: PreTrainedTokenizerBase, sequence: str, label: str) -> list[int]:
    """Token ids of the residues of `sequence` (no special tokens), one per character, or a ValueError naming it."""
    if not sequence:
        raise ValueError(f"{label} is empty")
    try:
        ids = tokenizer(sequence, add_special_tokens=False)["input_ids"]
    except ValueError as error:
        raise ValueError(f"{label}: {error}") from error
    if len(ids) != len(sequence):
        # Whitespace, special tokens written in the text or the tokenizer's "drop" policy would shift positions.
        raise ValueError(
            f"{label} has {len(sequence)} characters but tokenizes to {len(ids)} residues; pass plain residue "
            "letters (no whitespace, no special tokens)"
        )
    return ids


def _special_ids(tokenizer: PreTrainedTokenizerBase, need_mask: bool) -> tuple[int, int, int, int | None]:
    bos, eos, pad, mask = (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer.mask_token_id,
    )
    if bos is None or eos is None or pad is None:
        raise ValueError("The tokenizer needs <bos>, <eos> and <pad> tokens for scoring")
    if need_mask and mask is None:
        raise ValueError("Masked scores need a tokenizer with a <mask> token")
    return bos, eos, pad, mask


def _window(length: int, index: int, size: int) -> tuple[int, int]:
    """[start, end) of a window of at most `size` residues around 0-based `index`, centred and clamped to the ends."""
    if length <= size:
        return 0, length
    start = min(max(index - size // 2, 0), length - size)
    return start, start + size


def window_residues(model: PreTrainedModel, window: int | None = None) -> int:
    """Residues per window: `window`, at most the model's context, or the whole context when None."""
    limit = context_residues(model.config)
    if window is None:
        return limit
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive number of residues, got {window!r}")
    if window > limit:
        raise ValueError(
            f"window of {window} residues is longer than the {limit} that fit in the model's context "
            f"({model.config.max_position_embeddings} tokens with <bos> and <eos>)"
        )
    return window


def _mutant_window(length: int, indices: list[int], size: int, spec: str) -> tuple[int, int]:
    """[start, end) of the one window of `size` residues in which a mutant is scored (0-based residue `indices`):
    centred on their mean (Tranception's "optimal" window), clamped to the ends, moved to cover them all."""
    if length <= size:
        return 0, length
    first, last = min(indices), max(indices)
    if last - first + 1 > size:
        raise ValueError(
            f"Mutation {spec!r} spans {last - first + 1} residues (sequence positions {first + 1}..{last + 1}), more "
            f"than the {size}-residue window it must be scored in; use a longer window (up to the model's context) "
            "or the masked-marginal method, which scores each position in its own window"
        )
    start, _ = _window(length, sum(indices) // len(indices), size)
    start = min(max(start, last - size + 1), first)
    return start, start + size


def _check_fits(model: PreTrainedModel, residue_ids: list[list[int]], what: str) -> None:
    limit = context_residues(model.config)
    for index, ids in enumerate(residue_ids):
        if len(ids) > limit:
            raise ValueError(
                f"sequence {index} has {len(ids)} residues, more than the {limit} that fit in the model's context "
                f"({model.config.max_position_embeddings} tokens with <bos> and <eos>); {what} needs the whole "
                "sequence in one pass. Use the masked scores (masked-marginal, pseudo-log-likelihood), which window "
                "long sequences, or score variants (score_variants windows every method)."
            )


def _batched_logits(
    model: PreTrainedModel,
    keys: Sequence[Hashable],
    *,
    row_of: Callable[[Hashable], list[int]],
    length_of: Callable[[Hashable], int],
    attention_type: str,
    pad_id: int,
    batch_size: int,
    progress: bool,
    description: str,
) -> Iterator[tuple[Hashable, torch.Tensor]]:
    """Yield `(key, logits of its row)` for every key: rows sorted by length, `batch_size` per right-padded forward.

    Rows are built lazily (`row_of`) so that millions of masked copies never sit in memory at once. Must run inside
    `_inference(model)`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(keys, key=length_of)
    device = model.device
    bar = tqdm(total=len(order), desc=description, unit="row", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = [row_of(key) for key in chunk]
        inputs = padded_inputs(rows, pad_id)
        logits = model(
            input_ids=inputs["input_ids"].to(device),
            attention_mask=inputs["attention_mask"].to(device),
            attention_type=attention_type,
            use_cache=False,
        ).logits
        for number, key in enumerate(chunk):
            yield key, logits[number, : len(rows[number])]
        bar.update(len(chunk))
    bar.close()


def _masked_position_log_probs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    residue_ids: list[list[int]],
    jobs: list[tuple[int, int]],
    size: int,
    batch_size: int,
    progress: bool,
    description: str,
) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
    """For each job `(sequence index, 0-based residue index)`, the float32 log-probabilities over the vocabulary at
    that residue with it masked, in a window of at most `size` residues centred on it. Yields in length order."""
    _, _, pad, mask = _special_ids(tokenizer, need_mask=True)

    def window_of(job: tuple[int, int]) -> tuple[int, int]:
        return _window(len(residue_ids[job[0]]), job[1], size)

    def row_of(job: tuple[int, int]) -> list[int]:
        start, end = window_of(job)
        window = residue_ids[job[0]][start:end]
        window[job[1] - start] = mask  # the slice is a copy
        return tokenizer.build_inputs_with_special_tokens(window)

    def length_of(job: tuple[int, int]) -> int:
        start, end = window_of(job)
        return end - start + 2

    for job, logits in _batched_logits(
        model,
        jobs,
        row_of=row_of,
        length_of=length_of,
        attention_type="bidirectional",
        pad_id=pad,
        batch_size=batch_size,
        progress=progress,
        description=description,
    ):
        start, _ = window_of(job)
        yield job, logits[job[1] - start + 1].float().log_softmax(-1)


# ---------------------------------------------------------------------------------------------------------------------
# Likelihoods


def masked_marginals(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequence: str,
    positions: list[int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    window: int | None = None,
) -> torch.Tensor:
    """Masked marginals: row k holds log p(token | `sequence` with residue `positions[k]` replaced by `<mask>`).

    Args:
        positions: 1-based residue positions (default: every residue, 1..L); each is masked in its own copy of the
            sequence (copies run `batch_size` per forward pass, bidirectional attention).
        window: residues per window for a sequence longer than it (default: the model's context); each position
            is read in a window centred on it.
    Returns:
        float32 CPU tensor (len(positions), vocab_size) of log-probabilities normalised over the model's whole
        vocabulary (special tokens included, as ESM does); column `tokenizer.convert_tokens_to_ids("V")` is valine.
        Log-ratios between residues (variant scores) do not depend on the normalisation.
    """
    ids = _residue_ids(tokenizer, sequence, "sequence")
    if positions is None:
        positions = list(range(1, len(ids) + 1))
    for position in positions:
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= len(ids):
            raise ValueError(
                f"position {position!r} is not a 1-based residue position of a {len(ids)}-residue sequence"
            )
    size = window_residues(model, window)
    result = torch.empty((len(positions), model.config.vocab_size), dtype=torch.float32)
    jobs = list(dict.fromkeys((0, position - 1) for position in positions))  # each distinct position once
    computed: dict[tuple[int, int], torch.Tensor] = {}
    with _inference(model):
        for job, log_probs in _masked_position_log_probs(
            model,
            tokenizer,
            residue_ids=[ids],
            jobs=jobs,
            size=size,
            batch_size=batch_size,
            progress=progress,
            description="masked marginals",
        ):
            computed[job] = log_probs.cpu()
    for row, position in enumerate(positions):
        result[row] = computed[(0, position - 1)]
    return result


def pseudo_log_likelihood(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequences: list[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    window: int | None = None,
) -> list[float]:
    """Pseudo-log-likelihood of each sequence: sum over its L residues of log p(residue | sequence, residue masked).

    Costs L forward rows per sequence (rows of all sequences share batches, sorted by length). Divide by the length
    for the per-residue mean, whose exp(-mean) is the pseudo-perplexity. Log-probabilities are normalised over the
    whole vocabulary, as in `masked_marginals`; `window` as there.
    """
    size = window_residues(model, window)
    sequences = _check_sequences(sequences)
    residue_ids = [_residue_ids(tokenizer, sequence, f"sequence {n}") for n, sequence in enumerate(sequences)]
    jobs = [(n, index) for n, ids in enumerate(residue_ids) for index in range(len(ids))]
    totals = [0.0] * len(sequences)
    with _inference(model):
        for (n, index), log_probs in _masked_position_log_probs(
            model,
            tokenizer,
            residue_ids=residue_ids,
            jobs=jobs,
            size=size,
            batch_size=batch_size,
            progress=progress,
            description="pseudo-log-likelihood",
        ):
            totals[n] += float(log_probs[residue_ids[n][index]])
    return totals


def causal_log_likelihood(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequences: list[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    include_eos: bool = True,
) -> list[float]:
    """Causal log-likelihood of each sequence: sum over i of log p(token_i | <bos> residues_<i), causal attention.

    The sum covers the L residues and, with `include_eos` (the default, as ProGen2), the final `<eos>`: L + 1 terms,
    divide by that for the per-token mean. Sequences are batched with right padding, which gives the unpadded
    result. Raises ValueError for a sequence longer than the model's context.
    """
    sequences = _check_sequences(sequences)
    _, eos, pad, _ = _special_ids(tokenizer, need_mask=False)
    residue_ids = [_residue_ids(tokenizer, sequence, f"sequence {n}") for n, sequence in enumerate(sequences)]
    _check_fits(model, residue_ids, "the causal log-likelihood")
    totals = [0.0] * len(sequences)
    with _inference(model):
        for n, logits in _batched_logits(
            model,
            list(range(len(sequences))),
            row_of=lambda n: tokenizer.build_inputs_with_special_tokens(residue_ids[n]),
            length_of=lambda n: len(residue_ids[n]) + 2,
            attention_type="causal",
            pad_id=pad,
            batch_size=batch_size,
            progress=progress,
            description="causal log-likelihood",
        ):
            targets = torch.tensor([*residue_ids[n], eos] if include_eos else residue_ids[n], device=logits.device)
            log_probs = logits[: len(targets)].float().log_softmax(-1)  # logits at i predict token i + 1
            totals[n] = float(log_probs.gather(-1, targets[:, None]).sum())
    return totals


def _wild_type_window_log_probs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    ids: list[int],
    wanted: dict[tuple[int, int], set[int]],
    batch_size: int,
    progress: bool,
) -> dict[tuple[tuple[int, int], int], torch.Tensor]:
    """Log-probabilities of unmasked bidirectional passes of the wild type: for each window `[start, end)` of
    `wanted`, one pass of `<bos> ids[start:end] <eos>`, kept at its wanted 0-based residue indices only (so a long
    wild type read in many windows keeps one row per mutated position, not one per residue of every window)."""
    _, _, pad, _ = _special_ids(tokenizer, need_mask=False)
    rows: dict[tuple[tuple[int, int], int], torch.Tensor] = {}
    with _inference(model):
        for window, logits in _batched_logits(
            model,
            list(wanted),
            row_of=lambda window: tokenizer.build_inputs_with_special_tokens(ids[window[0] : window[1]]),
            length_of=lambda window: window[1] - window[0] + 2,
            attention_type="bidirectional",
            pad_id=pad,
            batch_size=batch_size,
            progress=progress,
            description="wt-marginal windows",
        ):
            log_probs = logits[1:-1].float().log_softmax(-1).cpu()
            for index in wanted[window]:
                rows[(window, index)] = log_probs[index - window[0]]
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Variant effects


def _mutant_windows(
    sequence: str, parsed: list[list[tuple[str, int, str]]], mutations: list[str], size: int
) -> list[tuple[int, int]]:
    """The window of each mutant (see `_mutant_window`); raises before any model work if one does not fit."""
    return [
        _mutant_window(len(sequence), [position - 1 for _, position, _ in mutant], size, spec)
        for mutant, spec in zip(parsed, mutations)
    ]


def _windowed_causal_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequence: str,
    parsed: list[list[tuple[str, int, str]]],
    windows: list[tuple[int, int]],
    batch_size: int,
    progress: bool,
) -> list[float]:
    """LL(mutant in its window) - LL(wild type in the same window), each distinct window sequence scored once (a
    wild type that fits is one window: the whole sequence, as without windows)."""
    wild_slices = [sequence[start:end] for start, end in windows]
    mutant_slices = [apply_mutations(sequence, mutant)[start:end] for mutant, (start, end) in zip(parsed, windows)]
    distinct = list(dict.fromkeys([*wild_slices, *mutant_slices]))
    scores = causal_log_likelihood(model, tokenizer, sequences=distinct, batch_size=batch_size, progress=progress)
    by_sequence = dict(zip(distinct, scores))
    return [by_sequence[mutant] - by_sequence[wild] for mutant, wild in zip(mutant_slices, wild_slices)]


def score_variants(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequence: str,
    mutations: list[str],
    method: str = "masked-marginal",
    offset: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    window: int | None = None,
) -> list[float]:
    """Zero-shot variant-effect score of each mutation (`A23V`, multi-mutant `A23V:G45D`) of the wild type
    `sequence`; higher means the model finds the mutant more likely than the wild type.

    Methods (see the module docstring): "masked-marginal" (ESM-1v; one masked row per distinct mutated position,
    the sum over a multi-mutant's positions), "wt-marginal" (unmasked passes of the wild type), "pseudo-likelihood"
    (PLL(mutant) - PLL(wild type)) and "causal" (LL(mutant) - LL(wild type), `<eos>` included). `offset` is the
    number of the first residue of `sequence` in the mutations' numbering (lower-case residues are read as upper
    case). `window` is the residues per window for a wild type longer than it (default: the model's context; see
    the module docstring). Every mutation is parsed (and the wild-type letters and windows checked) before any model
    work.
    """
    if method not in VARIANT_METHODS:
        raise ValueError(f"method must be one of {', '.join(VARIANT_METHODS)}; got {method!r}")
    if isinstance(mutations, str):
        raise TypeError("mutations must be a list of strings, not one string; wrap it as [mutation]")
    size = window_residues(model, window)
    sequence = sequence.upper()
    wild_ids = _residue_ids(tokenizer, sequence, "wild-type sequence")
    parsed = [parse_mutations(spec, sequence, offset) for spec in mutations]
    if not parsed:
        return []
    token_id = {letter: tokenizer.convert_tokens_to_ids(letter) for letter in set(sequence) | set(STANDARD_AMINO_ACIDS)}

    if method == "masked-marginal":
        positions = sorted({position for mutant in parsed for _, position, _ in mutant})
        marginals = masked_marginals(
            model, tokenizer, sequence, positions, batch_size=batch_size, progress=progress, window=size
        )
        table = dict(zip(positions, marginals))  # the cache: one masked row per distinct position
        return [
            float(sum(table[position][token_id[mt]] - table[position][token_id[wt]] for wt, position, mt in mutant))
            for mutant in parsed
        ]
    if method == "wt-marginal":
        windows = _mutant_windows(sequence, parsed, list(mutations), size)
        wanted: dict[tuple[int, int], set[int]] = {}
        for mutant, window in zip(parsed, windows):
            wanted.setdefault(window, set()).update(position - 1 for _, position, _ in mutant)
        rows = _wild_type_window_log_probs(model, tokenizer, wild_ids, wanted, batch_size, progress)
        return [
            float(
                sum(
                    rows[(window, position - 1)][token_id[mt]] - rows[(window, position - 1)][token_id[wt]]
                    for wt, position, mt in mutant
                )
            )
            for mutant, window in zip(parsed, windows)
        ]
    if method == "causal":
        windows = _mutant_windows(sequence, parsed, list(mutations), size)
        return _windowed_causal_scores(model, tokenizer, sequence, parsed, windows, batch_size, progress)

    # PLL(mutant) - PLL(wild type), each position read in its own window; a synonymous mutant is exactly 0.
    mutant_sequences = [apply_mutations(sequence, mutant) for mutant in parsed]
    distinct = list(dict.fromkeys([sequence, *mutant_sequences]))
    scores = pseudo_log_likelihood(
        model, tokenizer, sequences=distinct, batch_size=batch_size, progress=progress, window=size
    )
    by_sequence = dict(zip(distinct, scores))
    return [by_sequence[mutant] - by_sequence[sequence] for mutant in mutant_sequences]


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline


@dataclass(frozen=True)
class _ScoringRequest:
    """All the sequences of one call: scored as one job, so rows batch across sequences (see the pipeline doc)."""

    sequences: tuple[str, ...]
    single: bool


class ProteinScoringPipeline(Pipeline):
    """Likelihoods and variant-effect scores, `pipeline("protein-scoring", model=...)`.

    ```python
    scorer = pipeline("protein-scoring", model="runs/demo/final")
    scorer("MKTAYIAK", score="causal")                 # {"sequence", "log_likelihood", "mean_log_likelihood", ...}
    scorer(["MKTAYIAK", "MSLRSE"], score="pseudo-log-likelihood", batch_size=64)   # a list of such dicts
    scorer(wild_type, mutations=["H24C", "H24C:E28K"], method="masked-marginal", offset=1)
    # -> [{"mutation": "H24C", "score": ...}, {"mutation": "H24C:E28K", "score": ...}]
    ```

    Sequence scores (`score=`): "pseudo-log-likelihood" (default) or "causal" (`include_eos=True` by default). Each
    result holds `log_likelihood` (the sum), `num_tokens` (L for the PLL, L + 1 for causal with `<eos>`),
    `mean_log_likelihood` and `perplexity` = exp(-mean). Variant scores (`mutations=`, one wild-type sequence):
    `method` in VARIANT_METHODS (default "masked-marginal"), `offset` (default 1).

    Batching: the scores are not one forward per input (a PLL is L masked rows; variant scores share one cache of
    masked positions), so the transformers per-item loop does not fit. A call's inputs go through `preprocess`,
    `_forward` and `postprocess` as one job, and `_forward` runs the module's functions, which sort all rows by
    length and run `batch_size` rows per forward pass (`pipeline(..., batch_size=)` or the call's `batch_size=`;
    default 32). Results are exactly the functions' outputs, in input order. `progress=True` shows a bar.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __call__(self, inputs: str | list[str], **kwargs: Any) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(inputs, str):
            request = _ScoringRequest((inputs,), single=True)
        elif is_batch(inputs):  # a list, tuple, dataset column or KeyDataset: scored as one job
            request = _ScoringRequest(tuple(_check_sequences(inputs)), single=False)
        else:
            raise TypeError(
                f"protein-scoring takes a sequence, a list of them, a dataset column or KeyDataset, "
                f"got {type(inputs).__name__}"
            )
        batch_size = kwargs.pop("batch_size", None) or self._batch_size
        if batch_size is not None:
            kwargs["rows_per_batch"] = batch_size
        return super().__call__(request, **kwargs)

    def _sanitize_parameters(
        self,
        score: str | None = None,
        mutations: list[str] | None = None,
        method: str | None = None,
        offset: int | None = None,
        include_eos: bool | None = None,
        rows_per_batch: int | None = None,
        progress: bool | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess_params: dict[str, Any] = {}
        for name, value in (("score", score), ("mutations", mutations), ("method", method), ("offset", offset)):
            if value is not None:
                preprocess_params[name] = value
        forward_params: dict[str, Any] = {}
        for name, value in (("include_eos", include_eos), ("rows_per_batch", rows_per_batch), ("progress", progress)):
            if value is not None:
                forward_params[name] = value
        return preprocess_params, forward_params, {}

    def preprocess(
        self,
        request: _ScoringRequest,
        score: str | None = None,
        mutations: list[str] | None = None,
        method: str | None = None,
        offset: int = 1,
    ) -> dict[str, Any]:
        # Validate everything here, so that a bad argument or mutation fails before any model work.
        if mutations is None:
            if method is not None:
                raise ValueError("method= applies to variant scores; pass mutations=[...] or use score= instead")
            score = score or "pseudo-log-likelihood"
            if score not in SEQUENCE_SCORES:
                raise ValueError(f"score must be one of {', '.join(SEQUENCE_SCORES)}; got {score!r}")
            for n, sequence in enumerate(request.sequences):
                _residue_ids(self.tokenizer, sequence, f"sequence {n}")
            return {"kind": score, "sequences": list(request.sequences), "single": request.single}
        if score is not None:
            raise ValueError("Pass either score= (sequence likelihoods) or mutations= (variant scores), not both")
        if not request.single:
            raise ValueError("mutations= scores variants of one wild-type sequence; pass that sequence as a string")
        if isinstance(mutations, str):
            raise TypeError("mutations must be a list of strings, not one string; wrap it as [mutation]")
        method = method or "masked-marginal"
        if method not in VARIANT_METHODS:
            raise ValueError(f"method must be one of {', '.join(VARIANT_METHODS)}; got {method!r}")
        wild_type = request.sequences[0].upper()
        _residue_ids(self.tokenizer, wild_type, "wild-type sequence")
        for spec in mutations:
            parse_mutations(spec, wild_type, offset)
        return {
            "kind": "variants",
            "sequence": wild_type,
            "mutations": list(mutations),
            "method": method,
            "offset": offset,
        }

    def _forward(
        self,
        model_inputs: dict[str, Any],
        include_eos: bool = True,
        rows_per_batch: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> dict[str, Any]:
        kind = model_inputs["kind"]
        if kind == "variants":
            scores = score_variants(
                self.model,
                self.tokenizer,
                model_inputs["sequence"],
                model_inputs["mutations"],
                method=model_inputs["method"],
                offset=model_inputs["offset"],
                batch_size=rows_per_batch,
                progress=progress,
            )
            return {**model_inputs, "scores": scores}
        sequences = model_inputs["sequences"]
        if kind == "causal":
            scores = causal_log_likelihood(
                self.model,
                self.tokenizer,
                sequences=sequences,
                batch_size=rows_per_batch,
                progress=progress,
                include_eos=include_eos,
            )
            counts = [len(sequence) + int(include_eos) for sequence in sequences]
        else:
            scores = pseudo_log_likelihood(
                self.model, self.tokenizer, sequences=sequences, batch_size=rows_per_batch, progress=progress
            )
            counts = [len(sequence) for sequence in sequences]
        return {**model_inputs, "scores": scores, "counts": counts}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        if model_outputs["kind"] == "variants":
            return [
                {"mutation": mutation, "score": score}
                for mutation, score in zip(model_outputs["mutations"], model_outputs["scores"])
            ]
        results = [
            {
                "sequence": sequence,
                "score_type": model_outputs["kind"],
                "log_likelihood": total,
                "num_tokens": count,
                "mean_log_likelihood": total / count,
                "perplexity": math.exp(-total / count),
            }
            for sequence, total, count in zip(
                model_outputs["sequences"], model_outputs["scores"], model_outputs["counts"]
            )
        ]
        return results[0] if model_outputs["single"] else results


PIPELINE_REGISTRY.register_pipeline(
    "protein-scoring", pipeline_class=ProteinScoringPipeline, pt_model=AutoModelForMaskedLM, default=None, type="text"
)
