"""Tests of the training collators: masking statistics, packing boundaries, GLM layout, and packed == padded on the
real model (which proves the packed format is the model's packing convention)."""

import math
import random

import pytest
import torch

from modeling_plm import PLMForCausalLM, PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.data.collators import (
    IGNORE_INDEX,
    STANDARD_AMINO_ACIDS,
    CLMCollator,
    GLMCollator,
    MLMCollator,
    build_collator,
    pack_rows,
    pad_rows,
    padded_inputs,
)
from modeling_plm.modeling_plm_layers import find_packed_sequence_ids

TOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer() -> PLMTokenizerFast:
    return PLMTokenizerFast()


def tokenize(tokenizer, sequences: list[str]) -> list[list[int]]:
    return [tokenizer(sequence)["input_ids"] for sequence in sequences]


def binomial_tolerance(p: float, n: int) -> float:
    """Five standard deviations of an observed proportion: fails by chance about once in 3.5 million runs."""
    return 5 * math.sqrt(p * (1 - p) / n)


PACKED_BOUNDARIES = {"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"}


def split_packed(batch: dict[str, torch.Tensor], pad_token_id: int) -> tuple[list[dict], list[dict]]:
    """Cut packed rows at the collator's sequence boundaries (`cu_seq_lens_q`): (samples, filler pieces). Checks that
    the model's other reading of the boundaries, a restart at position 0 (block position 0), cuts at the same places."""
    rows = {name: values for name, values in batch.items() if name not in PACKED_BOUNDARIES}
    flat = {name: values.flatten() for name, values in rows.items()}
    boundaries = batch["cu_seq_lens_q"].tolist()
    assert boundaries[0] == 0 and boundaries[-1] == batch["input_ids"].numel()
    row_length = batch["input_ids"].shape[1]
    blocks = flat.get("block_position_ids", torch.zeros_like(flat["position_ids"]))
    restarts = ((flat["position_ids"] == 0) & (blocks == 0)).nonzero().flatten().tolist()
    assert restarts == boundaries[:-1], "positions restart exactly where cu_seq_lens_q starts a sequence"
    samples, fillers = [], []
    for start, end in zip(boundaries[:-1], boundaries[1:]):
        assert start // row_length == (end - 1) // row_length, "no sequence crosses a row"
        piece = {name: values[start:end] for name, values in flat.items()}
        (fillers if piece["input_ids"][0] == pad_token_id else samples).append(piece)
    assert batch["max_length_q"] == batch["max_length_k"] == max(b - a for a, b in zip(boundaries, boundaries[1:]))
    assert batch["cu_seq_lens_q"].dtype == torch.int32 and batch["cu_seq_lens_k"] is batch["cu_seq_lens_q"]
    return samples, fillers


def padded_samples(batch: dict[str, torch.Tensor]) -> list[dict]:
    """The real (unpadded) part of each row of a padded batch."""
    pieces = []
    for row in range(batch["input_ids"].shape[0]):
        length = int(batch["attention_mask"][row].sum())
        assert bool(batch["attention_mask"][row, :length].all()), "padding must be on the right"
        pieces.append({name: values[row, :length] for name, values in batch.items() if name != "attention_mask"})
    return pieces


# ---------------------------------------------------------------------------------------------------------------
# pack_rows


def test_pack_rows_is_next_fit_in_input_order():
    assert pack_rows([3, 4, 2, 5, 1], 6) == [[0], [1, 2], [3, 4]]
    # First-fit would put item 2 back into the first row; next-fit never looks back.
    assert pack_rows([5, 2, 1], 6) == [[0], [1, 2]]
    assert pack_rows([6, 6], 6) == [[0], [1]]
    assert pack_rows([], 6) == []


def test_pack_rows_invariants_on_random_lengths():
    rng = random.Random(0)
    for _ in range(200):
        row_length = rng.randint(1, 50)
        lengths = [rng.randint(1, row_length) for _ in range(rng.randint(1, 40))]
        rows = pack_rows(lengths, row_length)
        assert [index for row in rows for index in row] == list(range(len(lengths)))
        assert all(sum(lengths[index] for index in row) <= row_length for row in rows)
        for row, next_row in zip(rows[:-1], rows[1:]):  # a row is closed only when the next item does not fit
            assert sum(lengths[index] for index in row) + lengths[next_row[0]] > row_length


def test_pack_rows_rejects_an_item_longer_than_the_row():
    with pytest.raises(ValueError, match=r"7 tokens.*pack length 6"):
        pack_rows([3, 7], 6)


# ---------------------------------------------------------------------------------------------------------------
# MLM


def test_mlm_masking_statistics(tokenizer, swissprot_sequences):
    collator = MLMCollator(tokenizer)
    originals = tokenize(tokenizer, swissprot_sequences)
    standard_ids = set(tokenizer.convert_tokens_to_ids(list(STANDARD_AMINO_ACIDS)))
    counts = {"selected": 0, "mask": 0, "changed": 0, "unchanged": 0}
    for seed in range(20):
        batch = collator(swissprot_sequences, seed)
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
        assert all(values.dtype == torch.long for values in batch.values())
        for row, original in enumerate(originals):
            length = len(original)
            original = torch.tensor(original)
            input_ids, labels = batch["input_ids"][row], batch["labels"][row]
            assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (input_ids.numel() - length)
            assert bool((input_ids[length:] == tokenizer.pad_token_id).all())
            assert bool((labels[length:] == IGNORE_INDEX).all())
            selected = labels[:length] != IGNORE_INDEX
            # Never <bos>/<eos>; exactly round(0.15 * residues) selected, each labelled with its original token.
            assert not selected[0] and not selected[length - 1]
            n_residues = length - 2
            assert int(selected.sum()) == max(1, int(0.15 * n_residues + 0.5))
            assert torch.equal(labels[:length][selected], original[selected])
            assert torch.equal(input_ids[:length][~selected], original[~selected])
            replaced = input_ids[:length][selected]
            is_mask = replaced == tokenizer.mask_token_id
            changed = ~is_mask & (replaced != original[selected])
            assert set(replaced[changed].tolist()) <= standard_ids
            counts["selected"] += int(selected.sum())
            counts["mask"] += int(is_mask.sum())
            counts["changed"] += int(changed.sum())
            counts["unchanged"] += int((replaced == original[selected]).sum())
    n = counts["selected"]
    # A random replacement equals the original residue with probability 1/20 (all test residues are standard).
    expected = {"mask": 0.8, "changed": 0.1 * 19 / 20, "unchanged": 0.1 + 0.1 / 20}
    for name, p in expected.items():
        assert abs(counts[name] / n - p) < binomial_tolerance(p, n), (name, counts[name] / n, p)


def test_mlm_selection_fraction_across_ratios(tokenizer, swissprot_sequences):
    for ratio in (0.05, 0.3, 0.5):
        batch = MLMCollator(tokenizer, mask_ratio=ratio)(swissprot_sequences, seed=1)
        n_residues = batch["attention_mask"].sum() - 2 * len(swissprot_sequences)
        fraction = float((batch["labels"] != IGNORE_INDEX).sum() / n_residues)
        # Rounding per sequence (and the minimum of 1) moves the fraction by at most 1 / 20 residues per sequence.
        assert abs(fraction - ratio) < 0.03, (ratio, fraction)


def test_mlm_ratios_are_wired(tokenizer, swissprot_sequences):
    everything_masked = MLMCollator(tokenizer, mask_ratio=1.0, mask_token_ratio=1.0, random_token_ratio=0.0)
    batch = everything_masked(swissprot_sequences[:8], seed=0)
    selected = batch["labels"] != IGNORE_INDEX
    assert int(selected.sum()) == sum(len(s) for s in swissprot_sequences[:8])
    assert bool((batch["input_ids"][selected] == tokenizer.mask_token_id).all())
    nothing_replaced = MLMCollator(tokenizer, mask_token_ratio=0.0, random_token_ratio=0.0)
    batch = nothing_replaced(swissprot_sequences[:8], seed=0)
    plain = tokenizer(swissprot_sequences[:8], padding=True, return_tensors="pt")["input_ids"]
    assert torch.equal(batch["input_ids"], plain)


@pytest.mark.parametrize("objective", ["mlm", "glm"])
@pytest.mark.parametrize("pack_length", [None, 256])
def test_batches_are_a_pure_function_of_sequences_and_seed(tokenizer, swissprot_sequences, objective, pack_length):
    collator = build_collator(objective, tokenizer, pack_length=pack_length)
    sequences = swissprot_sequences[:16]
    torch.manual_seed(123)
    rng_state = torch.get_rng_state()
    first = collator(sequences, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_state), "the global RNG must not be used"
    torch.manual_seed(999)  # a different global state changes nothing
    second = collator(sequences, seed=7)
    other = collator(sequences, seed=8)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first if torch.is_tensor(first[name]))
    assert all(first[name] == second[name] for name in first if not torch.is_tensor(first[name]))
    assert not torch.equal(first["input_ids"], other["input_ids"]) or not torch.equal(first["labels"], other["labels"])


# ---------------------------------------------------------------------------------------------------------------
# CLM


def test_clm_padded_labels_are_the_inputs_except_padding(tokenizer, swissprot_sequences):
    batch = CLMCollator(tokenizer)(swissprot_sequences, seed=0)
    expected = tokenizer(swissprot_sequences, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.equal(batch["attention_mask"], expected["attention_mask"])
    real = batch["attention_mask"].bool()
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])
    assert bool((batch["labels"][~real] == IGNORE_INDEX).all())
    assert bool((~real).any()), "the fixture should have sequences of different lengths"


def test_clm_packed_rows_ignore_the_first_token_of_every_sequence(tokenizer, swissprot_sequences):
    batch = CLMCollator(tokenizer, pack_length=300)(swissprot_sequences, seed=0)
    assert set(batch) == {"input_ids", "position_ids", "labels"} | PACKED_BOUNDARIES
    samples, fillers = split_packed(batch, tokenizer.pad_token_id)
    originals = tokenize(tokenizer, swissprot_sequences)
    assert len(samples) == len(originals)
    for sample, original in zip(samples, originals):
        assert sample["input_ids"].tolist() == original
        assert sample["labels"].tolist() == [IGNORE_INDEX] + original[1:]
    assert all(bool((filler["labels"] == IGNORE_INDEX).all()) for filler in fillers)


# ---------------------------------------------------------------------------------------------------------------
# Packing boundaries, for every objective


@pytest.mark.parametrize("objective", ["mlm", "clm", "glm"])
def test_packed_rows_hold_the_padded_samples_contiguously(tokenizer, swissprot_sequences, objective):
    pack_length = 200
    padded = build_collator(objective, tokenizer)(swissprot_sequences, seed=3)
    packed = build_collator(objective, tokenizer, pack_length=pack_length)(swissprot_sequences, seed=3)
    expected_keys = {"input_ids", "position_ids", "labels"} | ({"block_position_ids"} if objective == "glm" else set())
    assert set(packed) == expected_keys | PACKED_BOUNDARIES
    rows = [packed[name] for name in expected_keys]
    assert all(values.dtype == torch.long and values.shape[1] == pack_length for values in rows)
    unpacked = padded_samples(padded)
    # The same next-fit rule as pack_rows, so the trainer can predict the number of rows.
    assert packed["input_ids"].shape[0] == len(pack_rows([len(s["input_ids"]) for s in unpacked], pack_length))

    samples, fillers = split_packed(packed, tokenizer.pad_token_id)
    assert len(samples) == len(unpacked)
    for sample, reference in zip(samples, unpacked):
        # Contiguous, in input order, and the same sample the padded batch holds (the same random draws).
        assert torch.equal(sample["input_ids"], reference["input_ids"])
        if objective == "clm":  # the only label that differs: the first token, see the CLM test
            assert torch.equal(sample["labels"][1:], reference["labels"][1:])
        else:
            assert torch.equal(sample["labels"], reference["labels"])
        if objective == "glm":
            assert torch.equal(sample["position_ids"], reference["position_ids"])
            assert torch.equal(sample["block_position_ids"], reference["block_position_ids"])
        else:
            assert sample["position_ids"].tolist() == list(range(len(sample["input_ids"])))
    for filler in fillers:
        assert bool((filler["input_ids"] == tokenizer.pad_token_id).all())
        assert bool((filler["labels"] == IGNORE_INDEX).all())
        assert filler["position_ids"].tolist() == list(range(len(filler["input_ids"])))
    assert fillers, "this packing should leave some rows with a filled tail"


@pytest.mark.parametrize("objective", ["mlm", "clm", "glm"])
def test_a_sample_longer_than_the_pack_length_raises(tokenizer, swissprot_sequences, objective):
    sequences = [swissprot_sequences[0], "M" * 60]
    with pytest.raises(ValueError, match=r"pack length 50"):
        build_collator(objective, tokenizer, pack_length=50)(sequences, seed=0)


def test_build_collator_dispatches_and_passes_options(tokenizer):
    assert isinstance(build_collator("mlm", tokenizer, mask_ratio=0.2), MLMCollator)
    assert build_collator("mlm", tokenizer, mask_ratio=0.2).mask_ratio == 0.2
    assert isinstance(build_collator("clm", tokenizer, pack_length=64), CLMCollator)
    glm = build_collator("glm", tokenizer, pack_length=64, span_ratio=0.3)
    assert isinstance(glm, GLMCollator) and glm.span_ratio == 0.3 and glm.pack_length == 64
    with pytest.raises(ValueError, match="objective"):
        build_collator("t5", tokenizer)


# ---------------------------------------------------------------------------------------------------------------
# GLM layout


def reconstruct_span_sample(collator, input_ids, position_ids, block_position_ids, labels):
    """Check the documented span-mode layout of one sample and return the sequence with the spans put back."""
    context_length = block_position_ids.index(1)
    context = input_ids[:context_length]
    assert context[0] == collator.tokenizer.bos_token_id and context[-1] == collator.tokenizer.eos_token_id
    assert position_ids[:context_length] == list(range(context_length))
    assert block_position_ids[:context_length] == [0] * context_length
    assert labels[:context_length] == [IGNORE_INDEX] * context_length
    mask_positions = [i for i, token in enumerate(context) if token == collator.smask_token_id]
    assert mask_positions, "span mode cuts at least one span"
    assert all(b - a > 1 for a, b in zip(mask_positions[:-1], mask_positions[1:])), "spans must not touch"

    spans = []
    cursor = context_length
    for mask_position in mask_positions:  # spans follow the context in left-to-right order
        assert input_ids[cursor] == collator.sop_token_id
        end = cursor + 1
        while end < len(input_ids) and block_position_ids[end] > 1:
            end += 1
        span = input_ids[cursor + 1 : end]
        assert span and collator.sop_token_id not in span
        assert labels[cursor:end] == span + [collator.eop_token_id]
        assert position_ids[cursor:end] == [mask_position] * (len(span) + 1)
        assert block_position_ids[cursor:end] == list(range(1, len(span) + 2))
        spans.append(span)
        cursor = end
    assert cursor == len(input_ids)

    rebuilt = []
    for token in context:
        rebuilt.extend(spans.pop(0) if token == collator.smask_token_id else [token])
    return rebuilt, mask_positions


def test_glm_span_mode_layout_reconstructs_the_sequence(tokenizer, swissprot_sequences):
    collator = GLMCollator(tokenizer)
    generator = torch.Generator().manual_seed(0)
    span_lengths = []
    for original in tokenize(tokenizer, swissprot_sequences) * 3:
        sample = collator.glm_sample(original, "span", generator)
        assert len({len(part) for part in sample}) == 1
        rebuilt, mask_positions = reconstruct_span_sample(collator, *sample)
        assert rebuilt == original
        n_residues = len(original) - 2
        assert len(sample[0]) == len(original) + 2 * len(mask_positions)  # each span adds <smask> and <sop>
        covered = sum(1 for label in sample[3] if label not in (IGNORE_INDEX, tokenizer.eop_token_id))
        assert covered == max(1, int(0.15 * n_residues + 0.5))
        span_lengths.extend(block for block in sample[2] if block > 0)
    assert max(span_lengths) > 2, "Poisson(3) span lengths should exceed 1 token"


def test_glm_gmask_mode_layout_reconstructs_the_sequence(tokenizer, swissprot_sequences):
    collator = GLMCollator(tokenizer)
    generator = torch.Generator().manual_seed(0)
    prefix_fractions = []
    for original in tokenize(tokenizer, swissprot_sequences) * 3:
        input_ids, position_ids, block_position_ids, labels = collator.glm_sample(original, "gmask", generator)
        gmask_at = input_ids.index(collator.gmask_token_id)
        assert input_ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in input_ids
        assert input_ids[gmask_at + 1] == collator.sop_token_id
        suffix = input_ids[gmask_at + 2 :]
        assert input_ids[:gmask_at] + suffix + [tokenizer.eos_token_id] == original
        assert labels == [IGNORE_INDEX] * (gmask_at + 1) + suffix + [collator.eop_token_id]
        assert position_ids == list(range(gmask_at + 1)) + [gmask_at] * (len(suffix) + 1)
        assert block_position_ids == [0] * (gmask_at + 1) + list(range(1, len(suffix) + 2))
        n_residues = len(original) - 2
        prefix = gmask_at - 1
        assert 1 <= prefix <= n_residues - 1
        assert int(0.1 * n_residues + 0.5) <= prefix <= int(0.9 * n_residues + 0.5)
        prefix_fractions.append(prefix / n_residues)
    assert min(prefix_fractions) < 0.3 and max(prefix_fractions) > 0.7, "the cut should spread over the range"


def test_glm_mlm_mode_and_short_sequence_fallback(tokenizer, swissprot_sequences):
    collator = GLMCollator(tokenizer)
    generator = torch.Generator().manual_seed(0)
    original = tokenizer(swissprot_sequences[0])["input_ids"]
    input_ids, position_ids, block_position_ids, labels = collator.glm_sample(original, "mlm", generator)
    assert position_ids == list(range(len(original))) and block_position_ids == [0] * len(original)
    selected = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert len(selected) == max(1, int(0.15 * (len(original) - 2) + 0.5))
    assert all(labels[i] == original[i] for i in selected)
    for mode in ("span", "gmask"):
        one_residue = tokenizer("M")["input_ids"]
        _, _, blocks, labels = collator.glm_sample(one_residue, mode, generator)
        assert blocks == [0, 0, 0] and labels == [IGNORE_INDEX, one_residue[1], IGNORE_INDEX]
        two_residues = tokenizer("MK")["input_ids"]
        assert max(collator.glm_sample(two_residues, mode, generator)[2]) == 2  # one residue + <eop> generated


def test_glm_mode_frequencies_follow_the_probabilities(tokenizer, swissprot_sequences):
    probabilities = {"mlm": 0.2, "span": 0.5, "gmask": 0.3}
    collator = GLMCollator(
        tokenizer,
        mlm_probability=probabilities["mlm"],
        span_probability=probabilities["span"],
        gmask_probability=probabilities["gmask"],
    )
    counts = dict.fromkeys(probabilities, 0)
    for seed in range(30):
        batch = collator(swissprot_sequences, seed)
        for row in batch["input_ids"]:
            if collator.gmask_token_id in row:
                counts["gmask"] += 1
            elif collator.smask_token_id in row:
                counts["span"] += 1
            else:
                counts["mlm"] += 1
    n = sum(counts.values())
    for mode, p in probabilities.items():
        assert abs(counts[mode] / n - p) < binomial_tolerance(p, n), (mode, counts[mode] / n, p)


def test_glm_max_sample_length_bounds_every_sample_and_the_row_count(tokenizer, swissprot_sequences):
    collator = GLMCollator(tokenizer, mlm_probability=0.0, span_probability=0.5, gmask_probability=0.5)
    bounds = [collator.max_sample_length(len(sequence)) for sequence in swissprot_sequences]
    generator = torch.Generator().manual_seed(0)
    for original, bound in zip(tokenize(tokenizer, swissprot_sequences) * 5, bounds * 5):
        for mode in ("span", "gmask"):
            assert len(collator.glm_sample(original, mode, generator)[0]) <= bound
    # The bound is exact when every span has one residue (Poisson draws of 0 or 1 only).
    single_residue_spans = GLMCollator(tokenizer, mean_span_length=1e-3)
    for original, bound in zip(tokenize(tokenizer, swissprot_sequences), bounds):
        assert len(single_residue_spans.glm_sample(original, "span", generator)[0]) == bound
    assert collator.max_sample_length(1) == 3
    # The trainer can size packed GLM batches from the bounds: the collator never needs more rows.
    for seed in range(10):
        packed = GLMCollator(tokenizer, pack_length=256)(swissprot_sequences, seed)
        assert packed["input_ids"].shape[0] <= len(pack_rows(bounds, 256))


def test_glm_packed_rows_follow_the_model_sequence_start_rule(tokenizer, swissprot_sequences):
    batch = GLMCollator(tokenizer, pack_length=256)(swissprot_sequences, seed=5)
    padded = GLMCollator(tokenizer)(swissprot_sequences, seed=5)
    lengths = padded["attention_mask"].sum(-1).tolist()
    found = find_packed_sequence_ids(batch["position_ids"], batch["block_position_ids"])
    for row, members in enumerate(pack_rows(lengths, 256)):
        expected = []
        for index, sample in enumerate(members):
            expected.extend([index] * lengths[sample])
        if len(expected) < 256:  # the filler is a sequence of its own
            expected.extend([len(members)] * (256 - len(expected)))
        assert found[row].tolist() == expected


# ---------------------------------------------------------------------------------------------------------------
# End to end: packed batches give the padded batch's logits and loss on the real model


def assert_packed_equals_padded(model, padded, packed, pad_token_id):
    with torch.no_grad():
        padded_out = model(**padded)
        packed_out = model(**packed)
    samples_logits = []
    lengths = padded["attention_mask"].sum(-1).tolist()
    starts = (packed["position_ids"] == 0) & (packed.get("block_position_ids", torch.zeros(1, dtype=torch.long)) == 0)
    for row in range(packed["input_ids"].shape[0]):
        bounds = starts[row].nonzero().flatten().tolist() + [packed["input_ids"].shape[1]]
        for start, end in zip(bounds[:-1], bounds[1:]):
            if packed["input_ids"][row, start] != pad_token_id:
                samples_logits.append(packed_out.logits[row, start:end])
    assert len(samples_logits) == len(lengths)
    for row, (length, logits) in enumerate(zip(lengths, samples_logits)):
        assert logits.shape[0] == length
        torch.testing.assert_close(logits, padded_out.logits[row, :length], atol=TOL, rtol=0)
    torch.testing.assert_close(packed_out.loss, padded_out.loss, atol=TOL, rtol=0)


@pytest.mark.parametrize("overrides", [{}, {"position_embedding_type": "rotary_2d"}], ids=["rotary", "rotary_2d"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_glm_packed_batch_matches_padded_on_the_model(tokenizer, swissprot_sequences, overrides, attn_implementation):
    model = PLMForMaskedLM(config_from_preset("tiny", **overrides)).eval()
    model.set_attn_implementation(attn_implementation)
    sequences = swissprot_sequences[:12]
    padded = GLMCollator(tokenizer)(sequences, seed=11)
    packed = GLMCollator(tokenizer, pack_length=300)(sequences, seed=11)
    assert packed["input_ids"].shape[0] > 1 and bool((packed["input_ids"] == tokenizer.gmask_token_id).any())
    assert bool((packed["input_ids"] == tokenizer.smask_token_id).any())
    assert_packed_equals_padded(model, padded, packed, tokenizer.pad_token_id)


@pytest.mark.parametrize("overrides", [{}, {"token_dropout": True}], ids=["plain", "token_dropout"])
def test_mlm_packed_batch_matches_padded_on_the_model(tokenizer, swissprot_sequences, overrides):
    model = PLMForMaskedLM(config_from_preset("tiny", **overrides)).eval()
    sequences = swissprot_sequences[:12]
    padded = MLMCollator(tokenizer)(sequences, seed=4)
    packed = MLMCollator(tokenizer, pack_length=300)(sequences, seed=4)
    assert packed["input_ids"].shape[0] > 1
    assert_packed_equals_padded(model, padded, packed, tokenizer.pad_token_id)


def test_clm_packed_batch_matches_padded_on_the_model(tokenizer, swissprot_sequences):
    model = PLMForCausalLM(config_from_preset("tiny")).eval()
    sequences = swissprot_sequences[:12]
    padded = CLMCollator(tokenizer)(sequences, seed=0)
    packed = CLMCollator(tokenizer, pack_length=300)(sequences, seed=0)
    assert packed["input_ids"].shape[0] > 1
    # Both score the same tokens: every token but each sequence's <bos>.
    n_scored_padded = int((padded["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert n_scored_padded == int((packed["labels"] != IGNORE_INDEX).sum())
    assert_packed_equals_padded(model, padded, packed, tokenizer.pad_token_id)


def test_glm_infill_inputs_match_the_documented_layout():
    from modeling_plm.data.collators import glm_infill_inputs

    tokenizer = PLMTokenizerFast()
    inputs = glm_infill_inputs(tokenizer, "MKT<smask>LV")
    ids = inputs["input_ids"][0].tolist()
    assert ids == [tokenizer.bos_token_id] + tokenizer("MKT", add_special_tokens=False)["input_ids"] + [
        tokenizer.smask_token_id
    ] + tokenizer("LV", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id, tokenizer.sop_token_id]
    assert inputs["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 4]
    assert inputs["block_position_ids"][0].tolist() == [0] * 8 + [1]
    continuation = glm_infill_inputs(tokenizer, "MKTA<gmask>")
    assert continuation["input_ids"][0].tolist()[-2:] == [tokenizer.gmask_token_id, tokenizer.sop_token_id]
    with pytest.raises(ValueError, match="no <smask> or <gmask>"):
        glm_infill_inputs(tokenizer, "MKT")


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_transformers_flattening_collator_matches_one_by_one(tokenizer, swissprot_sequences, attn_implementation):
    """transformers' `DataCollatorWithFlattening` (one row, position restarts and cu_seq_lens_*/max_length_*) is
    the packed convention the model reads: each sequence's logits equal its own forward."""
    from transformers import DataCollatorWithFlattening

    model = PLMForMaskedLM(config_from_preset("tiny", token_dropout=True)).eval()
    model.set_attn_implementation(attn_implementation)
    features = [{"input_ids": ids} for ids in tokenize(tokenizer, swissprot_sequences[:6])]
    batch = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_tensors="pt")(features)
    assert batch["input_ids"].shape[0] == 1 and "cu_seq_lens_q" in batch
    batch["input_ids"][0, 3] = tokenizer.mask_token_id  # token dropout's rescaling is per sequence too
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            **{name: batch[name] for name in PACKED_BOUNDARIES},
        ).logits[0]
        boundaries = batch["cu_seq_lens_q"].tolist()
        for start, end in zip(boundaries[:-1], boundaries[1:]):
            alone = model(input_ids=batch["input_ids"][:, start:end]).logits[0]
            torch.testing.assert_close(packed[start:end], alone, atol=TOL, rtol=0)


def test_the_model_reads_the_boundaries_from_cu_seq_lens(tokenizer, swissprot_sequences):
    """Given `cu_seq_lens_q`, the model cuts there even where positions do not restart (learned absolute positions
    continuing over two sequences): attention stays within each sequence."""
    model = PLMForMaskedLM(config_from_preset("tiny")).eval()
    first, second = tokenize(tokenizer, swissprot_sequences[:2])
    input_ids = torch.tensor([first + second])
    positions = torch.arange(input_ids.shape[1])[None]
    boundaries = torch.tensor([0, len(first), input_ids.shape[1]], dtype=torch.int32)
    with torch.no_grad():
        together = model(input_ids=input_ids, position_ids=positions).logits[0]
        cut = model(input_ids=input_ids, position_ids=positions, cu_seq_lens_q=boundaries).logits[0]
        alone = model(input_ids=torch.tensor([first])).logits[0]
    torch.testing.assert_close(cut[: len(first)], alone, atol=TOL, rtol=0)
    assert not torch.allclose(together[: len(first)], alone, atol=1e-3)  # without them it is one sequence
    with pytest.raises(ValueError, match="cu_seq_lens_q covers"):
        model(input_ids=input_ids, position_ids=positions, cu_seq_lens_q=boundaries[:2])


def test_padding_right_and_left_keeps_every_row_and_marks_it_in_the_mask():
    rows = [[5, 6, 7], [8], torch.tensor([9, 10])]
    assert pad_rows(rows, 0).tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert pad_rows(rows, -100, side="left").tolist() == [[5, 6, 7], [-100, -100, 8], [-100, 9, 10]]
    inputs = padded_inputs([[5, 6, 7], [8]], pad_token_id=1, side="left")
    assert inputs["input_ids"].tolist() == [[5, 6, 7], [1, 1, 8]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="side must be one of"):
        pad_rows(rows, 0, side="middle")
