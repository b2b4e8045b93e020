"""`plm eval probe`: labelled files, the leakage check, the composition features, the metrics against hand-computed
values, and the command end to end on tiny files and on a DeepLoc subset."""

import json
import math

import numpy as np
import pytest

from modeling_plm.cli.main import main
from modeling_plm.evaluation.probe import (
    check_no_overlap,
    composition_features,
    infer_problem,
    metrics_with_intervals,
    read_labelled_csv,
    read_labelled_fasta,
)

from .conftest import data_path


def run_cli(argv: list[str]) -> int:
    """`plm eval probe ARGV` as the command line runs it (user errors: a message and exit code 2)."""
    return main(["eval", "probe", *argv])


def test_composition_features_by_hand():
    features = composition_features(["AAC", "AX", "W"])
    a, c, w = "ACDEFGHIKLMNPQRSTVWY".index("A"), "ACDEFGHIKLMNPQRSTVWY".index("C"), 18
    assert features.shape == (3, 20)
    assert features[0, a] == pytest.approx(2 / 3) and features[0, c] == pytest.approx(1 / 3)
    assert features[1, a] == pytest.approx(0.5) and features[1].sum() == pytest.approx(0.5)  # X counts in the length
    assert features[2, w] == 1.0


def test_classification_metrics_by_hand():
    # labels 0 0 1 1, predictions 0 1 1 1: accuracy 3/4; F1 class 0 = 2/3 (P 1, R 1/2), class 1 = 4/5 (P 2/3, R 1);
    # MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2*1 - 1*0) / sqrt(3*2*2*1) = 2 / sqrt(12)
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    metrics = metrics_with_intervals("classification", y_true, y_pred, resamples=100, seed=0)
    assert metrics["accuracy"]["value"] == pytest.approx(0.75)
    assert metrics["macro_f1"]["value"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert metrics["mcc"]["value"] == pytest.approx(2 / math.sqrt(12))
    for metric in metrics.values():
        assert metric["low"] <= metric["value"] <= metric["high"]


def test_regression_metrics_by_hand():
    # y 1 2 3 4, prediction 1 3 2 4: Spearman 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8; R2 = 1 - 2 / 5 = 0.6
    y_true, y_pred = np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])
    metrics = metrics_with_intervals("regression", y_true, y_pred, resamples=0, seed=0)
    assert metrics["spearman"]["value"] == pytest.approx(0.8)
    assert metrics["r2"]["value"] == pytest.approx(0.6)
    assert math.isnan(metrics["spearman"]["low"])  # no bootstrap asked


def test_labels_from_headers_and_csv_columns(tmp_path):
    fasta = tmp_path / "set.fasta"
    fasta.write_text(">P1 Nucleus-U test\nMKV\n>P2 Cytoplasm-S test\nMLL\n")
    read = read_labelled_fasta(fasta, "test", 1, lambda label: label.removesuffix("-U"))
    assert read.ids == ["P1", "P2"] and read.labels == ["Nucleus", "Cytoplasm-S"] and read.sequences[1] == "MLL"
    with pytest.raises(ValueError, match=r"set.fasta: record 0 \('P1'\) has no header field 3"):
        read_labelled_fasta(fasta, "test", 3)
    table = tmp_path / "set.csv"
    table.write_text("sequence,fitness\nMKV,0.5\nMLL,\n")
    with pytest.raises(ValueError, match=r"set.csv, line 3: empty 'fitness'"):
        read_labelled_csv(table, "train", "sequence", "fitness")
    with pytest.raises(ValueError, match=r"set.csv has no column 'label'"):
        read_labelled_csv(table, "train", "sequence", "label")
    assert infer_problem(["0", "1", "1"]) == "classification"
    assert infer_problem(["0", "1", "0.5"]) == "regression"
    assert infer_problem([str(x) for x in range(12)]) == "regression"


def test_overlap_by_id_or_sequence_is_refused(tmp_path):
    train_file, test_file = tmp_path / "train.fasta", tmp_path / "test.fasta"
    train_file.write_text(">A a\nMKVL\n>B b\nMSSW\n")
    test_file.write_text(">C a\nMKVL\n>D b\nMWWW\n>B b\nMPPP\n")
    train, test = read_labelled_fasta(train_file, "train"), read_labelled_fasta(test_file, "test")
    with pytest.raises(ValueError, match=r"test.fasta and train file .*train.fasta share 2 records .*\['C', 'B'\]"):
        check_no_overlap([train], test)
    check_no_overlap([train], test.subset([1]))  # only D: fine


# ---------------------------------------------------------------------------------------------------------------------
# The command on tiny files


HYDROPHOBIC, CHARGED = "LIVFAMW", "KEDRKEQ"


def labelled_sequences(count: int, seed: int) -> list[tuple[str, str]]:
    """(sequence, class) pairs whose class shows in their composition: 70% of residues from the class's alphabet."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        label = ("membrane", "soluble")[index % 2]
        rich = HYDROPHOBIC if label == "membrane" else CHARGED
        residues = [rng.choice(list(rich)) if rng.random() < 0.7 else rng.choice(list("GSTNPYHC")) for _ in range(40)]
        records.append(("M" + "".join(residues), label))
    return records


def write_fasta(path, records, start=0):
    path.write_text("".join(f">seq{start + i} {label}\n{sequence}\n" for i, (sequence, label) in enumerate(records)))
    return path


def test_cli_custom_fasta_end_to_end_then_cached(base_model, tmp_path, capsys):
    train = write_fasta(tmp_path / "train.fasta", labelled_sequences(60, seed=1))
    test = write_fasta(tmp_path / "test.fasta", labelled_sequences(30, seed=2), start=100)
    out = tmp_path / "eval"
    argv = [base_model, "--task", "custom", "--train", str(train), "--test", str(test), "--output-dir", str(out)]
    argv += ["--bootstrap", "100", "--no-progress"]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "| model embedding (layer -1, mean pooling) | test | 30 |" in printed
    assert "| amino-acid composition (20-d) | test | 30 |" in printed
    record = json.loads((out / "probe_results.json").read_text())
    rows = record["tables"]["custom: test metrics"]["rows"]
    assert [row["features"].split(" (")[0] for row in rows] == ["model embedding", "amino-acid composition"]
    assert rows[1]["accuracy"] >= 0.9  # the classes differ in composition
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["accuracy 95% CI"].startswith("[") for row in rows)
    details = record["details"]
    assert details["problem"] == "classification" and details["fits"]["model"]["parameter"] == "C"
    assert [split["records"] for split in details["splits"]] == [54, 6, 30]  # 10% of train held out for selection
    assert not any(entry["from_cache"] for entry in details["embedding_cache"].values())
    index = json.loads((out / "probe_model_index.json").read_text())
    assert [(entry["dataset"], entry["metric"]) for entry in index] == [("test", "accuracy")]
    assert index[0]["value"] == rows[0]["accuracy"]

    # A rerun reads the embeddings from the cache and refits to the same numbers.
    assert run_cli(argv) == 0
    again = json.loads((out / "probe_results.json").read_text())
    assert all(entry["from_cache"] for entry in again["details"]["embedding_cache"].values())
    assert again["tables"] == record["tables"]


def test_cli_refuses_overlap_and_fits_regression_from_csv(base_model, tmp_path, capsys):
    train = write_fasta(tmp_path / "train.fasta", labelled_sequences(20, seed=1))
    leaky = write_fasta(tmp_path / "leaky.fasta", labelled_sequences(20, seed=1)[:3], start=500)
    argv = [base_model, "--task", "custom", "--train", str(train), "--test", str(leaky), "--output-dir"]
    assert run_cli([*argv, str(tmp_path / "eval"), "--no-progress"]) == 2
    assert "share 3 records (the same id or the same sequence), e.g. ['seq500', 'seq501', 'seq502']" in (
        capsys.readouterr().err
    )

    rng = np.random.default_rng(0)
    rows = ["sequence,charge"]
    for _ in range(80):
        sequence = "M" + "".join(rng.choice(list("KEAGLS"), size=30))
        rows.append(f"{sequence},{sequence.count('K') / len(sequence):.4f}")
    (tmp_path / "train.csv").write_text("\n".join(rows[:61]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([rows[0], *rows[61:]]) + "\n")
    argv = [
        base_model,
        "--task",
        "custom",
        "--train",
        str(tmp_path / "train.csv"),
        "--test",
        str(tmp_path / "test.csv"),
    ]
    argv += ["--label-column", "charge", "--output-dir", str(tmp_path / "regression"), "--no-progress"]
    assert run_cli([*argv, "--bootstrap", "50"]) == 0
    record = json.loads((tmp_path / "regression" / "probe_results.json").read_text())
    assert (
        record["details"]["problem"] == "regression"
        and record["details"]["fits"]["composition"]["parameter"] == "alpha"
    )
    composition = record["tables"]["custom: test metrics"]["rows"][1]
    assert composition["Spearman"] > 0.9  # the label is the K fraction, a composition feature


def test_cli_deeploc_subset_on_real_data(base_model, tmp_path, capsys):
    data_path("deeploc/setHARD.fasta")  # skip (fail in CI) without the data
    out = tmp_path / "deeploc"
    argv = [base_model, "--task", "deeploc", "--max-train", "100", "--max-valid", "40", "--max-test", "40"]
    argv += ["--bootstrap", "50", "--c-grid", "0.01", "1", "--output-dir", str(out), "--no-progress"]
    assert run_cli(argv) == 0
    record = json.loads((out / "probe_results.json").read_text())
    rows = record["tables"]["deeploc: test metrics"]["rows"]
    assert [(row["features"].split(" (")[0], row["test set"]) for row in rows] == [
        ("model embedding", "deeploc_test"),
        ("model embedding", "setHARD"),
        ("amino-acid composition", "deeploc_test"),
        ("amino-acid composition", "setHARD"),
    ]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in rows)
    index = json.loads((out / "probe_model_index.json").read_text())
    assert [entry["dataset"] for entry in index] == ["deeploc", "deeploc-sethard"]
    assert "Light Attention's validation split" in (out / "probe_results.md").read_text()
