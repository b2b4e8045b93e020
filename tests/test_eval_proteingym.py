"""`plm eval proteingym`: a tiny synthetic ProteinGym (3 assays, 2 categories, one longer than the model's context)
end to end through the command line: the tables, ProteinGym's aggregation, the BLOSUM62 row, the resume, both
layouts and the input errors; and two small real assays."""

import csv
import json
import random

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from modeling_plm import PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.cli.main import main
from modeling_plm.evaluation.baselines import BLOSUM62, blosum62_scores
from modeling_plm.evaluation.metrics import assay_metrics, binarize
from modeling_plm.evaluation.proteingym import UNKNOWN_CATEGORY, load_layout, read_assay
from modeling_plm.inference.scoring import STANDARD_AMINO_ACIDS, score_variants

from .conftest import data_path

CONTEXT = 32  # residues in the test model's context
# name: (wild-type length, category, the reference's DMS_id, cutoff)
ASSAYS = {
    "AAA1_HUMAN_Smith_2020": (20, "Stability", "AAA1_HUMAN_Smith_2020", 0.0),
    "BBB2_ECOLI_Jones_2019": (24, "Activity", "BBB2_ECOLI_Jones_2019", 0.2),
    # Longer than the context, and renamed in the reference: matched by UniProt entry + author + year.
    "CCC3_YEAST_Brown_growth_2018": (50, "Activity", "CCC3_YEAST_Brown_2018", -0.1),
}
REFERENCE_COLUMNS = [
    "DMS_id",
    "DMS_filename",
    "UniProt_ID",
    "target_seq",
    "DMS_binarization_cutoff",
    "selection_type",
    "coarse_selection_type",
]


def wild_type_of(name: str) -> str:
    length = ASSAYS[name][0]
    return "".join(random.Random(name).choices(STANDARD_AMINO_ACIDS, k=length))


def mutant_rows(name: str) -> list[dict[str, str]]:
    """About 16 mutants spread over the wild type (the long one's reach past the context), one double, scores
    loosely following BLOSUM62 so that both labels occur."""
    wild_type, rng = wild_type_of(name), random.Random(f"{name}-mutants")
    rows = []
    for position in range(1, len(wild_type) + 1, 3):
        for mutant in rng.sample([aa for aa in STANDARD_AMINO_ACIDS if aa != wild_type[position - 1]], 2):
            score = BLOSUM62[(wild_type[position - 1], mutant)] / 4 + rng.gauss(0, 1)
            rows.append({"mutant": f"{wild_type[position - 1]}{position}{mutant}", "score": f"{score:.4f}"})
    double = (
        f"{wild_type[1]}2{'W' if wild_type[1] != 'W' else 'A'}:{wild_type[4]}5{'C' if wild_type[4] != 'C' else 'A'}"
    )
    rows.append({"mutant": double, "score": "-0.5"})
    return rows


def write_csv(path, columns, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def reference_rows(names=ASSAYS) -> list[dict[str, str]]:
    return [
        {
            "DMS_id": ASSAYS[name][2],
            "DMS_filename": f"{ASSAYS[name][2]}.csv",
            "UniProt_ID": "_".join(name.split("_")[:2]),
            "target_seq": wild_type_of(name),
            "DMS_binarization_cutoff": str(ASSAYS[name][3]),
            "selection_type": "free text",
            "coarse_selection_type": ASSAYS[name][1],
        }
        for name in names
    ]


def write_singles_layout(root, reference_names=ASSAYS):
    (root / "dms").mkdir(parents=True)
    for name in ASSAYS:
        write_csv(root / "dms" / f"{name}.csv", ["mutant", "score"], mutant_rows(name))
    (root / "wildtypes.fasta").write_text("".join(f">{name}.csv\n{wild_type_of(name)}\n" for name in ASSAYS))
    write_csv(root / "ProteinGym_reference_DMS_substitutions.csv", REFERENCE_COLUMNS, reference_rows(reference_names))
    return root


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A tiny random model whose context holds 32 residues, saved as a checkpoint folder."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("small-context")
    PLMForMaskedLM(config_from_preset("tiny", max_position_embeddings=CONTEXT + 2)).eval().save_pretrained(folder)
    PLMTokenizerFast().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def singles(tmp_path_factory):
    return write_singles_layout(tmp_path_factory.mktemp("proteingym") / "singles")


def run_eval(model, data, output, *extra) -> int:
    """`plm eval proteingym` as the command line runs it."""
    argv = ["eval", "proteingym", str(model), "--data", str(data), "--output-dir", str(output), "--no-progress"]
    return main([*argv, *map(str, extra)])


def read_results(output) -> dict:
    return json.loads((output / "proteingym_results.json").read_text())


def per_assay(results: dict) -> dict[tuple[str, str], dict]:
    rows = results["tables"]["Per assay"]["rows"]
    return {(row["assay"], row["scorer"]): row for row in rows}


# ---------------------------------------------------------------------------------------------------------------------
# End to end


def test_end_to_end_tables_aggregation_and_blosum62_row(small_model, singles, tmp_path, capsys):
    output = tmp_path / "run"
    assert run_eval(small_model, singles, output, "--methods", "masked-marginal", "causal", "--batch-size", 8) == 0
    out = capsys.readouterr().out
    assert "singles layout (dms/ + wildtypes.fasta)" in out
    assert "3 assays; metadata from ProteinGym_reference_DMS_substitutions.csv: 2 matched by name, 1 by UniProt" in out
    assert "| masked-marginal | 3 |" in out and "| causal | 3 |" in out and "| BLOSUM62 | 3 |" in out
    assert "Scored 9 (assay, method) results, reused 0" in out
    results = read_results(output)
    rows = per_assay(results)
    assert len(rows) == 9

    # Each per-assay row is the metrics of the scores computed directly (the long assay windowed).
    model = PLMForMaskedLM.from_pretrained(small_model).eval()
    tokenizer = PLMTokenizerFast.from_pretrained(small_model)
    for name, (_, category, _, cutoff) in ASSAYS.items():
        mutants = mutant_rows(name)
        specs, dms = [r["mutant"] for r in mutants], [float(r["score"]) for r in mutants]
        labels = binarize(dms, cutoff)
        for method in ("masked-marginal", "causal"):
            scores = score_variants(model, tokenizer, wild_type_of(name), specs, method, batch_size=8, progress=False)
            expected = assay_metrics(dms, labels, scores)
            row = rows[(name, method)]
            assert row["category"] == category and row["mutants"] == len(specs)
            assert row["Spearman"] == pytest.approx(expected["spearman"], abs=1e-6)
            assert row["NDCG"] == pytest.approx(expected["ndcg"], abs=1e-6)
        blosum = rows[(name, "BLOSUM62")]  # the baseline, scored and measured the same way
        assert blosum["Spearman"] == pytest.approx(spearmanr(dms, blosum62_scores(wild_type_of(name), specs))[0])

    # ProteinGym's aggregation: per (UniProt entry, category), per category, then the mean of the 2 categories.
    summary = {row["scorer"]: row for row in results["tables"]["Summary (ProteinGym aggregation)"]["rows"]}
    for scorer in ("masked-marginal", "causal", "BLOSUM62"):
        a, b, c = (rows[(name, scorer)]["Spearman"] for name in ASSAYS)
        assert summary[scorer]["Spearman"] == pytest.approx((a + (b + c) / 2) / 2)
        assert summary[scorer]["Spearman, mean over assays"] == pytest.approx((a + b + c) / 3)
        assert summary[scorer]["95% CI of that mean"].startswith("[")
    categories = {(r["category"], r["scorer"]): r for r in results["tables"]["By function category"]["rows"]}
    assert categories[("Activity", "causal")]["assays"] == 2
    details = {assay["assay"]: assay for assay in results["details"]["assays"]}
    long_assay = details["CCC3_YEAST_Brown_growth_2018"]
    assert long_assay["reference_id"] == "CCC3_YEAST_Brown_2018"
    assert long_assay["reference_match"] == "UniProt+author+year"
    assert long_assay["wild_type_length"] > CONTEXT and long_assay["cutoff"] == -0.1
    assert results["details"]["window"] == CONTEXT

    model_index = json.loads((output / "proteingym_model_index.json").read_text())
    assert {(e["task_name"], e["metric"]) for e in model_index} == {
        (f"Zero-shot variant effects ({method})", metric)
        for method in ("masked-marginal", "causal")
        for metric in ("spearman", "auc", "mcc", "ndcg", "top_recall")
    }
    assert model_index[0]["dataset_name"] == "ProteinGym DMS substitutions (3 assays)"
    assert "## Per assay" in (output / "proteingym_results.md").read_text()


def test_a_rerun_scores_nothing_and_an_interrupted_run_completes_to_the_same_tables(
    small_model, singles, tmp_path, capsys
):
    complete = tmp_path / "complete"
    assert run_eval(small_model, singles, complete) == 0
    assert run_eval(small_model, singles, complete) == 0
    assert "Scored 0 (assay, method) results, reused 6" in capsys.readouterr().out.split("Data:")[-1]

    # Interrupted after the first assay: its results are on disk, the rerun scores the other two only.
    interrupted = tmp_path / "interrupted"
    assert run_eval(small_model, singles, interrupted, "--assays", "AAA1_*") == 0
    assert len(list((interrupted / "proteingym_assays").glob("*.json"))) == 2
    capsys.readouterr()
    assert run_eval(small_model, singles, interrupted) == 0
    assert "Scored 4 (assay, method) results, reused 2" in capsys.readouterr().out
    assert read_results(interrupted)["tables"] == read_results(complete)["tables"]
    assert not list(interrupted.rglob("*.partial"))  # written atomically

    # Other settings in the same folder are refused, not mixed in.
    assert run_eval(small_model, singles, interrupted, "--window", 16) == 2
    assert "was scored with other settings" in capsys.readouterr().err


def test_the_official_v1_layout_with_dms_score_bin(small_model, tmp_path, capsys):
    root = tmp_path / "ProteinGym"
    (root / "DMS_ProteinGym_substitutions").mkdir(parents=True)
    for name in ASSAYS:
        dms_id = ASSAYS[name][2]
        rows = [
            {"mutant": r["mutant"], "DMS_score": r["score"], "DMS_score_bin": str(int(float(r["score"]) > 1))}
            for r in mutant_rows(name)
        ]
        write_csv(root / "DMS_ProteinGym_substitutions" / f"{dms_id}.csv", list(rows[0]), rows)
    write_csv(root / "DMS_substitutions.csv", REFERENCE_COLUMNS, reference_rows())
    output = tmp_path / "v1"
    assert run_eval(small_model, root, output, "--assays", "CCC3_*", "BBB2_ECOLI_Jones_2019") == 0
    assert "v1 layout (ProteinGym v1 reference + DMS folder)" in capsys.readouterr().out
    results = read_results(output)
    labels = {assay["assay"]: assay["labels"] for assay in results["details"]["assays"]}
    assert labels == {"BBB2_ECOLI_Jones_2019": "DMS_score_bin column", "CCC3_YEAST_Brown_2018": "DMS_score_bin column"}
    assert results["model_index"][0]["dataset_name"] == "ProteinGym DMS substitutions (2 of 3 assays)"


def test_an_assay_without_reference_metadata_gets_the_median_cutoff_and_category_unknown(tmp_path):
    root = write_singles_layout(tmp_path / "singles", reference_names=list(ASSAYS)[:2])
    layout = load_layout(root)
    assert "2 matched by name, 0 by UniProt entry + author + year, 1 unmatched" in layout.describe()
    unmatched = layout.assays[2]
    assert (unmatched.category, unmatched.cutoff, unmatched.match) == (UNKNOWN_CATEGORY, None, "none")
    data = read_assay(unmatched)
    scores = [float(row["score"]) for row in mutant_rows(unmatched.name)]
    assert data.cutoff == float(np.median(scores)) and data.label_source == "median of the DMS scores"
    assert data.labels == binarize(scores, data.cutoff).tolist()
    subset = read_assay(unmatched, max_mutants=5, seed=1)
    assert len(subset.mutants) == 5 and subset.cutoff == data.cutoff  # the median of the whole assay
    assert subset.mutants == [m for m in data.mutants if m in set(subset.mutants)]  # file order


# ---------------------------------------------------------------------------------------------------------------------
# Bad inputs


def test_bad_inputs_name_the_file_row_and_mutant(small_model, tmp_path, capsys):
    root = write_singles_layout(tmp_path / "singles")
    broken = root / "dms" / "BBB2_ECOLI_Jones_2019.csv"
    rows = mutant_rows("BBB2_ECOLI_Jones_2019")
    wrong = "W" if rows[1]["mutant"][0] != "W" else "A"
    rows[1]["mutant"] = wrong + rows[1]["mutant"][1:]  # line 3 of the file
    write_csv(broken, ["mutant", "score"], rows)
    assert run_eval(small_model, root, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"{broken}, line 3: Mutation '{rows[1]['mutant']}': wild type at 1 is" in err
    assert f"mutation says {wrong}" in err
    assert not (tmp_path / "out" / "proteingym_assays").exists()  # checked before any scoring

    write_csv(broken, ["mutant", "fitness"], [{"mutant": r["mutant"], "fitness": r["score"]} for r in rows])
    assert run_eval(small_model, root, tmp_path / "out") == 2
    assert f"{broken} has no score column 'DMS_score' or 'score'; its columns are 'mutant', 'fitness'" in (
        capsys.readouterr().err
    )
    assert run_eval(small_model, root, tmp_path / "out", "--assays", "ZZZ*") == 2
    assert "--assays 'ZZZ*' matches none of the 3 assays" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_eval(small_model, tmp_path / "empty", tmp_path / "out2") == 2
    assert "is neither a singles layout (dms/ and wildtypes.fasta) nor a ProteinGym v1 one" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Real data


def test_two_small_real_assays_and_the_reference_matching(base_model, tmp_path, capsys):
    root = data_path("proteingym_singles/wildtypes.fasta").parent
    layout = load_layout(root)
    assert len(layout.assays) == 87
    assert "63 matched by name, 18 by UniProt entry + author + year, 6 unmatched" in layout.describe()
    matched = {assay.name: assay for assay in layout.assays}
    assert matched["P53_HUMAN_Giacomelli_NULL_Nutlin_2018"].reference_id == "P53_HUMAN_Giacomelli_2018_Null_Nutlin"
    assert matched["SPIKE_SARS2_Starr_bind_2020"].reference_id == "SPIKE_SARS2_Starr_2020_binding"
    assert matched["A4_HUMAN_Seuma_2021"].match == "none"  # the reference's is Seuma 2022, another cutoff
    gcn4 = matched["GCN4_YEAST_Staller_induction_2018"]  # named GCN4_YEAST_Staller_2018 in v1
    assert (gcn4.category, gcn4.cutoff) == ("Binding", 1.293757864)

    output = tmp_path / "real"
    assays = ["F7YBW8_MESOW_Aakre_2015", "GCN4_YEAST_Staller_induction_2018"]
    assert run_eval(base_model, root, output, "--assays", *assays, "--max-mutants-per-assay", 20) == 0
    assert "not comparable to ProteinGym's numbers" in capsys.readouterr().out
    rows = per_assay(read_results(output))
    assert {key[0] for key in rows} == set(assays) and all(row["mutants"] == 20 for row in rows.values())
    assert -1 <= rows[("F7YBW8_MESOW_Aakre_2015", "masked-marginal")]["Spearman"] <= 1
