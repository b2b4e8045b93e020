"""Likelihoods and variant-effect scores: equal to direct forward passes, batched equal to unbatched, clear errors on
bad mutations, the pipeline equal to the functions, and end to end on ESM's TEM-1 beta-lactamase DMS."""

import csv
import math
import random

import pytest
import torch
from scipy.stats import spearmanr
from transformers import pipeline

from modeling_plm import PLMForCausalLM, PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.cli.main import main
from modeling_plm.data.fasta import read_fasta
from modeling_plm.inference.scoring import (
    STANDARD_AMINO_ACIDS,
    apply_mutations,
    causal_log_likelihood,
    masked_marginals,
    parse_mutations,
    pseudo_log_likelihood,
    score_variants,
)

from .conftest import data_path

BLAT_CSV = "esm_variant_examples/BLAT_ECOLX_Ranganathan2015.csv"
BLAT_LABELLED_FASTA = "esm_variant_examples/P62593_beta_lactamase_labeled_variants.fasta"
PROTEINGYM_WILDTYPES = "proteingym_singles/wildtypes.fasta"
BLAT_WILD_TYPE_ID = "BLAT_ECOLX_Stiffler_2015.csv"  # the same DMS (Stiffler et al. 2015) in ProteinGym


@pytest.fixture(scope="module")
def tokenizer():
    return PLMTokenizerFast()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-plm")
    PLMForMaskedLM(config_from_preset("tiny")).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_folder):
    return PLMForMaskedLM.from_pretrained(model_folder).eval()


def direct_log_probs(model, tokenizer, sequence, masked_index=None, attention_type="bidirectional"):
    """(L + 2, vocab) log-probabilities of one unbatched forward pass, optionally with 0-based residue masked."""
    ids = tokenizer(sequence, return_tensors="pt")["input_ids"]
    if masked_index is not None:
        ids[0, masked_index + 1] = tokenizer.mask_token_id
    with torch.no_grad():
        return model(input_ids=ids, attention_type=attention_type).logits[0].log_softmax(-1)


def blat_wild_type() -> str:
    records = [r for r in read_fasta(data_path(PROTEINGYM_WILDTYPES)) if r.id == BLAT_WILD_TYPE_ID]
    assert len(records) == 1
    return records[0].sequence


def read_blat_rows() -> list[dict[str, str]]:
    with open(data_path(BLAT_CSV), newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------------------------------
# Likelihoods against direct forward passes


def test_masked_marginals_equal_single_masked_forward_passes(model, model_folder, tokenizer, swissprot_sequences):
    sequence = swissprot_sequences[0]
    positions = [1, 7, len(sequence), 7]  # first, middle, last, and a repeat
    marginals = masked_marginals(model, tokenizer, sequence, positions, batch_size=2)
    assert marginals.shape == (4, model.config.vocab_size)
    for row, position in enumerate(positions):
        expected = direct_log_probs(model, tokenizer, sequence, position - 1)[position]
        torch.testing.assert_close(marginals[row], expected, atol=1e-5, rtol=0)
    # The causal class holds the same weights; the explicit attention type gives the same marginals.
    causal_class = PLMForCausalLM.from_pretrained(model_folder).eval()
    torch.testing.assert_close(masked_marginals(causal_class, tokenizer, sequence, positions), marginals)
    everything = masked_marginals(model, tokenizer, sequence, batch_size=64)
    assert everything.shape[0] == len(sequence)
    torch.testing.assert_close(everything[6], marginals[1], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def small_context(tokenizer):
    """A tiny model whose context holds 32 residues (34 tokens with <bos> and <eos>)."""
    torch.manual_seed(1)
    return PLMForMaskedLM(config_from_preset("tiny", max_position_embeddings=34)).eval()


# Not periodic: a window read at the wrong start would hold other residues.
LONG_SEQUENCE = "".join(random.Random(3).choices(STANDARD_AMINO_ACIDS, k=80))


def test_long_sequences_are_windowed_for_masked_scores_and_refused_for_causal(small_context, tokenizer):
    sequence = LONG_SEQUENCE
    marginals = masked_marginals(small_context, tokenizer, sequence, [5, 40, 80])
    for row, (position, start) in enumerate([(5, 0), (40, 23), (80, 48)]):
        window = sequence[start : start + 32]  # centred on the position, clamped to the ends
        expected = direct_log_probs(small_context, tokenizer, window, position - 1 - start)[position - start]
        torch.testing.assert_close(marginals[row], expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sequence 1 has 80 residues, more than the 32"):
        causal_log_likelihood(small_context, tokenizer, ["MKT", sequence])


def mutation_at(sequence: str, position: int, offset: int = 1) -> str:
    """A substitution at 1-based `position` of `sequence`, numbered from `offset`, to a different residue."""
    wild_type = sequence[position - 1]
    mutant = "W" if wild_type != "W" else "A"
    return f"{wild_type}{position + offset - 1}{mutant}"


@pytest.mark.parametrize("method", ["masked-marginal", "wt-marginal", "causal", "pseudo-likelihood"])
def test_a_wild_type_that_fits_scores_bitwise_the_same_with_any_window_it_fits(model, tokenizer, method):
    wild_type = LONG_SEQUENCE[:40]
    mutations = [
        mutation_at(wild_type, 3),
        mutation_at(wild_type, 38),
        f"{mutation_at(wild_type, 1)}:{mutation_at(wild_type, 40)}",
    ]
    default = score_variants(model, tokenizer, wild_type, mutations, method=method, progress=False)
    exact_fit = score_variants(model, tokenizer, wild_type, mutations, method=method, progress=False, window=40)
    assert exact_fit == default
    if method == "causal":  # the unwindowed definition, batched the same way: bitwise
        mutants = [apply_mutations(wild_type, parse_mutations(spec, wild_type)) for spec in mutations]
        lls = causal_log_likelihood(model, tokenizer, [wild_type, *mutants])
        assert default == [ll - lls[0] for ll in lls[1:]]


@pytest.mark.parametrize("method", ["wt-marginal", "causal"])
def test_a_long_wild_type_scores_each_mutant_as_its_window_scored_directly(small_context, tokenizer, method):
    sequence = LONG_SEQUENCE
    # (mutated 1-based positions, window start): centred on the mean 0-based index, clamped to the ends, and
    # moved to cover a multi-mutant whose centred window would miss one of its mutations.
    cases = [([40], 23), ([2], 0), ([78], 48), ([30, 45], 20), ([11, 42], 10)]
    mutations = [":".join(mutation_at(sequence, position) for position in positions) for positions, _ in cases]
    windowed = score_variants(small_context, tokenizer, sequence, mutations, method, batch_size=1, progress=False)
    for (_, start), spec, score in zip(cases, mutations, windowed):
        window = sequence[start : start + 32]
        direct = score_variants(
            small_context, tokenizer, window, [spec], method, offset=start + 1, batch_size=1, progress=False
        )
        assert score == direct[0], spec
    batched = score_variants(small_context, tokenizer, sequence, mutations, method, batch_size=4, progress=False)
    assert batched == pytest.approx(windowed, abs=1e-4)
    with pytest.raises(ValueError, match=r"Mutation '\w+:\w+' spans 56 residues .* more than the 32-residue window"):
        score_variants(
            small_context, tokenizer, sequence, [f"{mutation_at(sequence, 5)}:{mutation_at(sequence, 60)}"], method
        )


def test_the_masked_marginal_window_can_be_set(model, tokenizer):
    sequence = LONG_SEQUENCE[:40]
    spec = mutation_at(sequence, 20)
    windowed = score_variants(model, tokenizer, sequence, [spec], batch_size=1, progress=False, window=16)
    start = 19 - 8  # centred on 0-based index 19
    direct = score_variants(model, tokenizer, sequence[start : start + 16], [spec], offset=start + 1, batch_size=1)
    assert windowed == direct
    marginals = masked_marginals(model, tokenizer, sequence, [20], window=16)
    expected = direct_log_probs(model, tokenizer, sequence[start : start + 16], 19 - start)[20 - start]
    torch.testing.assert_close(marginals[0], expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="window of 1025 residues is longer than the 1024 that fit"):
        score_variants(model, tokenizer, sequence, [spec], window=1025)
    with pytest.raises(ValueError, match="window must be a positive number of residues, got 0"):
        masked_marginals(model, tokenizer, sequence, [20], window=0)


def test_pseudo_log_likelihood_equals_a_manual_loop(model, tokenizer, swissprot_sequences):
    sequences = [swissprot_sequences[1][:30], swissprot_sequences[2][:17], "MKTAYIAK"]
    totals = pseudo_log_likelihood(model, tokenizer, sequences, batch_size=5)  # batches mix lengths: padding
    for sequence, total in zip(sequences, totals):
        ids = tokenizer(sequence)["input_ids"]
        manual = sum(
            float(direct_log_probs(model, tokenizer, sequence, index)[index + 1, ids[index + 1]])
            for index in range(len(sequence))
        )
        assert total == pytest.approx(manual, abs=1e-4)
    assert pseudo_log_likelihood(model, tokenizer, sequences, batch_size=1) == pytest.approx(totals, abs=1e-4)
    with pytest.raises(TypeError, match="not one string"):
        pseudo_log_likelihood(model, tokenizer, "MKT")


def test_causal_log_likelihood_batched_equals_unbatched_and_a_manual_sum(model, tokenizer, swissprot_sequences):
    sequences = [swissprot_sequences[3], swissprot_sequences[4][:25], "MK", swissprot_sequences[5]]
    batched = causal_log_likelihood(model, tokenizer, sequences, batch_size=4)
    unbatched = causal_log_likelihood(model, tokenizer, sequences, batch_size=1)
    assert batched == pytest.approx(unbatched, abs=1e-4)
    without_eos = causal_log_likelihood(model, tokenizer, sequences, include_eos=False)
    for sequence, total, no_eos in zip(sequences, batched, without_eos):
        ids = tokenizer(sequence)["input_ids"]  # <bos> residues <eos>
        log_probs = direct_log_probs(model, tokenizer, sequence, attention_type="causal")
        terms = [float(log_probs[i, ids[i + 1]]) for i in range(len(ids) - 1)]
        assert total == pytest.approx(sum(terms), abs=1e-4)
        assert no_eos == pytest.approx(sum(terms[:-1]), abs=1e-4)  # the last term predicts <eos>
        assert len(terms) == len(sequence) + 1
    # Causal attention: a prefix's log-likelihood is the first terms of the whole sequence's, whatever follows.
    prefix = causal_log_likelihood(model, tokenizer, [sequences[0][:9]], include_eos=False)[0]
    log_probs = direct_log_probs(model, tokenizer, sequences[0], attention_type="causal")
    ids = tokenizer(sequences[0])["input_ids"]
    assert prefix == pytest.approx(sum(float(log_probs[i, ids[i + 1]]) for i in range(9)), abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# Variant scores


def test_variant_scores_match_their_definitions(model, tokenizer, swissprot_sequences):
    wild_type = swissprot_sequences[6][:40]
    first, second = f"{wild_type[2]}3A", f"{wild_type[9]}10W"
    if first[0] == "A":
        first = "A3G"
    double = f"{first}:{second}"
    mutations = [first, second, double, f"{wild_type[4]}5{wild_type[4]}"]

    masked = score_variants(model, tokenizer, wild_type, mutations, progress=False)
    assert masked[2] == pytest.approx(masked[0] + masked[1], abs=1e-6)  # additive by construction
    assert masked[3] == 0.0  # synonymous
    marginals = masked_marginals(model, tokenizer, wild_type, [3])
    index = tokenizer.convert_tokens_to_ids
    assert masked[0] == pytest.approx(float(marginals[0, index(first[-1])] - marginals[0, index(first[0])]), abs=1e-6)

    causal = score_variants(model, tokenizer, wild_type, mutations, method="causal", batch_size=3, progress=False)
    mutants = [apply_mutations(wild_type, parse_mutations(spec, wild_type)) for spec in mutations]
    lls = causal_log_likelihood(model, tokenizer, [wild_type, *mutants], batch_size=1)
    assert causal == pytest.approx([ll - lls[0] for ll in lls[1:]], abs=1e-4)
    assert causal[3] == 0.0

    wt_marginal = score_variants(model, tokenizer, wild_type, mutations, method="wt-marginal", progress=False)
    log_probs = direct_log_probs(model, tokenizer, wild_type)
    expected = float(log_probs[3, index(first[-1])] - log_probs[3, index(first[0])])
    assert wt_marginal[0] == pytest.approx(expected, abs=1e-5)
    assert wt_marginal[2] == pytest.approx(wt_marginal[0] + wt_marginal[1], abs=1e-6)

    pll = score_variants(model, tokenizer, wild_type, mutations[:2], method="pseudo-likelihood", progress=False)
    plls = pseudo_log_likelihood(model, tokenizer, [wild_type, *mutants[:2]])
    assert pll == pytest.approx([plls[1] - plls[0], plls[2] - plls[0]], abs=1e-4)
    with pytest.raises(ValueError, match="method must be one of"):
        score_variants(model, tokenizer, wild_type, mutations, method="esm1v")


def test_parse_mutations_numbering_and_separators():
    sequence = "MKTAYIAKQR"
    assert parse_mutations("K2A", sequence) == [("K", 2, "A")]
    assert parse_mutations("K25A:Q32E", sequence, offset=24) == [("K", 2, "A"), ("Q", 9, "E")]
    assert parse_mutations(" K2A ; Q9E ", sequence) == [("K", 2, "A"), ("Q", 9, "E")]
    assert apply_mutations(sequence, parse_mutations("M1V:R10W", sequence)) == "VKTAYIAKQW"


@pytest.mark.parametrize(
    ("spec", "offset", "message"),
    [
        ("A2V", 1, r"Mutation 'A2V': wild type at 2 is K, mutation says A"),
        ("K2A:A9V", 1, r"Mutation 'A9V' in 'K2A:A9V': wild type at 9 is Q, mutation says A"),
        ("K11A", 1, r"position 11 is outside the sequence, whose 10 residues are numbered 1..10"),
        ("M0A", 1, r"position 0 is outside"),
        ("M1A", 5, r"position 1 is outside the sequence, whose 10 residues are numbered 5..14 \(offset 5\)"),
        ("K2", 1, r"Malformed mutation 'K2'"),
        ("2A", 1, r"Malformed mutation '2A'"),
        ("K2A:", 1, r"Malformed mutation '' in 'K2A:'"),
        ("", 1, r"Malformed mutation ''"),
        ("K2AA", 1, r"Malformed mutation 'K2AA'"),
        ("K2*", 1, r"mutant '\*' is not one of the 20 standard amino acids"),
        ("K2X", 1, r"mutant 'X' is not one of the 20 standard amino acids"),
        ("K2A:K2G", 1, r"Mutation 'K2A:K2G' changes position 2 twice \(K2A and K2G\)"),
    ],
)
def test_parse_mutations_rejects_bad_mutations_with_clear_messages(spec, offset, message):
    with pytest.raises(ValueError, match=message):
        parse_mutations(spec, "MKTAYIAKQR", offset)


def test_score_variants_checks_every_mutation_before_any_model_work(model, tokenizer):
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ValueError, match="wild type at 5 is Y, mutation says A"):
            score_variants(model, tokenizer, "MKTAYIAKQR", ["K2A", "A5V"], progress=False)
    finally:
        handle.remove()
    assert calls == []


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline


def test_pipeline_equals_the_functions(model_folder, tokenizer, swissprot_sequences):
    scorer = pipeline("protein-scoring", model=str(model_folder))
    model = scorer.model
    sequences = [swissprot_sequences[7][:20], swissprot_sequences[8][:12]]

    results = scorer(sequences, score="pseudo-log-likelihood", batch_size=7)
    assert [r["sequence"] for r in results] == sequences
    assert [r["log_likelihood"] for r in results] == pseudo_log_likelihood(model, tokenizer, sequences, 7)
    assert results[1]["num_tokens"] == 12
    assert results[1]["perplexity"] == pytest.approx(math.exp(-results[1]["log_likelihood"] / 12))

    single = scorer(sequences[0], score="causal")
    assert single["log_likelihood"] == causal_log_likelihood(model, tokenizer, sequences[:1])[0]
    assert single["num_tokens"] == 21

    wild_type = sequences[0]
    mutations = [f"{wild_type[1]}2A", f"{wild_type[1]}2A:{wild_type[4]}5W"]
    for method in ("masked-marginal", "causal"):
        scored = scorer(wild_type, mutations=mutations, method=method)
        expected = score_variants(model, tokenizer, wild_type, mutations, method=method, progress=False)
        assert scored == [{"mutation": m, "score": s} for m, s in zip(mutations, expected)]

    with pytest.raises(ValueError, match="one wild-type sequence"):
        scorer(sequences, mutations=mutations)
    with pytest.raises(ValueError, match="score must be one of"):
        scorer(sequences, score="perplexity")
    with pytest.raises(ValueError, match=r"wild type at 2 is .*, mutation says"):
        scorer(wild_type, mutations=["Z2A" if wild_type[1] != "Z" else "A2A"])


# ---------------------------------------------------------------------------------------------------------------------
# End to end on ESM's TEM-1 beta-lactamase DMS


def test_blat_wild_type_and_offset_agree_with_the_esm_data():
    """The ProteinGym wild type (the full 286-residue precursor, P62593) numbers the DMS with offset 1."""
    wild_type = blat_wild_type()
    assert len(wild_type) == 286
    labelled = 0
    for record in read_fasta(data_path(BLAT_LABELLED_FASTA)):  # ">idx|beta-lactamase_P20P|fitness"
        mutation = record.id.split("|")[1].removeprefix("beta-lactamase_")
        assert record.sequence == apply_mutations(wild_type, parse_mutations(mutation, wild_type)), record.id
        labelled += 1
    assert labelled == 5397
    rows = read_blat_rows()
    assert len(rows) == 4996
    for row in rows:
        parse_mutations(row["mutant"], wild_type, offset=1)  # raises on any wild-type mismatch


def test_blat_dms_scores_end_to_end_with_one_masked_row_per_position(model, tokenizer):
    wild_type = blat_wild_type()
    rows = read_blat_rows()
    mutations = [row["mutant"] for row in rows]
    positions = {int(m[1:-1]) for m in mutations}
    rows_seen, calls = [], []

    def count(module, args, kwargs, output):
        calls.append(1)
        rows_seen.append(kwargs["input_ids"].shape[0])

    handle = model.register_forward_hook(count, with_kwargs=True)
    try:
        scores = score_variants(model, tokenizer, wild_type, mutations, batch_size=16, progress=False)
    finally:
        handle.remove()
    assert len(scores) == 4996 and all(math.isfinite(score) for score in scores)
    assert sum(rows_seen) == len(positions) <= len(wild_type) + 1  # the per-position cache
    assert len(calls) == math.ceil(len(positions) / 16)
    rho = spearmanr(scores, [float(row["2500"]) for row in rows]).statistic
    assert isinstance(float(rho), float) and -1.0 <= rho <= 1.0  # the value is recorded, not asserted


# ---------------------------------------------------------------------------------------------------------------------
# CLI


def run_cli(argv: list[str]) -> int:
    """`plm score ARGV` as the command line runs it (user errors: a message and exit code 2)."""
    return main(["score", *argv])


def test_cli_scores_a_dms_subset_and_prints_the_spearman(model_folder, model, tokenizer, tmp_path, capsys):
    rows = read_blat_rows()[:60]
    subset = tmp_path / "blat_subset.csv"
    with open(subset, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    output = tmp_path / "scores.csv"
    argv = [str(model_folder), "--wild-type-fasta", str(data_path(PROTEINGYM_WILDTYPES))]
    argv += ["--wild-type-id", BLAT_WILD_TYPE_ID, "--mutations-csv", str(subset), "--target-column", "2500"]
    assert run_cli([*argv, "--method", "causal", "--output", str(output), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Scored 60 mutants of a 286-residue wild type with causal" in out
    assert "Spearman vs '2500': " in out and "(n=60)" in out
    with open(output, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["mutant"] for row in written] == [row["mutant"] for row in rows]
    assert written[0]["2500"] == rows[0]["2500"]  # the input's columns are kept
    expected = score_variants(model, tokenizer, blat_wild_type(), [r["mutant"] for r in rows], "causal", progress=False)
    assert [float(row["causal"]) for row in written] == pytest.approx(expected, abs=1e-4)

    # A wrong offset is reported with the CSV line, before any scoring.
    assert run_cli([*argv, "--offset", "2", "--no-progress"]) == 2
    assert "blat_subset.csv, line 2: Mutation 'H24C': wild type at 24 is" in capsys.readouterr().err
    assert run_cli([*argv, "--mutation-column", "variant"]) == 2
    assert "has no column 'variant'" in capsys.readouterr().err


def test_cli_scores_fasta_sequences(model_folder, model, tokenizer, tmp_path, capsys):
    fasta = tmp_path / "three.fasta"
    fasta.write_text(">a first\nMKTAYIAKQR\n>b\nMSLRSEHIWIEPLE\n>c\nGGSW\n")
    output = tmp_path / "likelihoods.csv"
    assert run_cli([str(model_folder), "--fasta", str(fasta), "--output", str(output), "--no-progress"]) == 0
    assert "Scored 3 sequences (both)" in capsys.readouterr().out
    with open(output, newline="") as handle:
        written = list(csv.DictReader(handle))
    sequences = ["MKTAYIAKQR", "MSLRSEHIWIEPLE", "GGSW"]
    assert [row["id"] for row in written] == ["a", "b", "c"]
    assert [float(r["pseudo_log_likelihood"]) for r in written] == pytest.approx(
        pseudo_log_likelihood(model, tokenizer, sequences), abs=1e-4
    )
    assert [float(r["causal_log_likelihood"]) for r in written] == pytest.approx(
        causal_log_likelihood(model, tokenizer, sequences), abs=1e-4
    )
    assert float(written[2]["causal_log_likelihood_per_token"]) == pytest.approx(
        float(written[2]["causal_log_likelihood"]) / 5
    )

    fasta.write_text(">ok\nMKT\n>broken\nMK*T\n")
    assert run_cli([str(model_folder), "--fasta", str(fasta), "--score", "causal"]) == 2
    assert "record 'broken': Invalid residue '*' at position 3" in capsys.readouterr().err

    # Mutations on the command line, CSV to stdout.
    assert run_cli([str(model_folder), "--sequence", "MKTAYIAKQR", "--mutation", "K2A", "--mutation", "K2A:Q9E"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "mutation,masked_marginal" and lines[2].startswith("K2A:Q9E,")

    # --window: a causal score read in a 4-residue window around the mutation.
    argv = [str(model_folder), "--sequence", "MKTAYIAKQR", "--mutation", "K2A", "--method", "causal", "--window", "4"]
    assert run_cli(argv) == 0
    windowed = float(capsys.readouterr().out.strip().splitlines()[1].split(",")[1])
    assert windowed == score_variants(model, tokenizer, "MKTAYIAKQR", ["K2A"], "causal", window=4, progress=False)[0]
    assert windowed == score_variants(model, tokenizer, "MKTA", ["K2A"], "causal", progress=False)[0]
