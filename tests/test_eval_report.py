"""`plm eval`'s one result format (evaluation.report) and its way onto the model card through `plm export`."""

import json
import math

import pytest
from huggingface_hub import ModelCard

from modeling_plm import PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.cli.main import main as plm
from modeling_plm.evaluation.report import markdown_table, model_index_entry, write_report


def test_markdown_table_formats_floats_and_missing_cells():
    rows = [{"model": "ours", "spearman": 0.12345, "n": 3}, {"model": "BLOSUM62", "spearman": float("nan")}]
    assert markdown_table(rows, ["model", "spearman", "n"]).splitlines() == [
        "| model | spearman | n |",
        "|---|---|---|",
        "| ours | 0.123 | 3 |",
        "| BLOSUM62 | n/a |  |",
    ]


def test_model_index_entry_refuses_values_that_are_not_finite_numbers():
    entry = model_index_entry(task="t", dataset="d", metric="spearman", value=0.5, metric_name="mean Spearman")
    assert entry == {
        "task": "t",
        "dataset": "d",
        "metric": "spearman",
        "metric_name": "mean Spearman",
        "value": 0.5,
    }
    for bad in (float("nan"), math.inf, True, "0.5"):
        with pytest.raises(ValueError, match="spearman on d"):
            model_index_entry(task="t", dataset="d", metric="spearman", value=bad)


def test_write_report_writes_json_markdown_and_model_index(tmp_path):
    entries = [model_index_entry(task="t", dataset="d", metric="accuracy", value=0.25)]
    rows = [{"model": "ours", "accuracy": 0.25, "interval": float("nan")}]
    paths = write_report(
        tmp_path / "out",
        benchmark="probe",
        model="runs/x",
        tables={"Summary": (rows, ["model", "accuracy"]), "Other": ([{"a": 1}], ["a"])},
        model_index=entries,
        details={"path": tmp_path},
    )
    record = json.loads(paths["json"].read_text())
    assert record["benchmark"] == "probe" and record["model"] == "runs/x"
    assert record["tables"]["Summary"]["rows"][0]["interval"] is None  # NaN is not JSON
    assert record["details"]["path"] == str(tmp_path)
    assert json.loads(paths["model_index"].read_text()) == entries
    markdown = paths["markdown"].read_text()
    assert markdown.index("## Summary") < markdown.index("## Other")
    assert "| ours | 0.250 |" in markdown
    assert not list((tmp_path / "out").glob("*.partial"))


def test_plm_export_puts_every_eval_file_on_the_card(tmp_path, capsys):
    model_dir = tmp_path / "model"
    PLMForMaskedLM(config_from_preset("tiny")).save_pretrained(model_dir)
    PLMTokenizerFast().save_pretrained(model_dir)
    gym = model_index_entry(
        task="zero-shot-variant-effect",
        task_name="Zero-shot variant effects",
        dataset="proteingym-substitutions",
        dataset_name="ProteinGym substitutions",
        dataset_split="test",
        metric="spearman",
        metric_name="mean Spearman",
        value=0.123456,
    )
    probe = model_index_entry(task="probe", dataset="deeploc", metric="accuracy", value=0.5, source="plm eval")
    gym_paths = write_report(tmp_path / "evals", benchmark="proteingym", model="m", tables={}, model_index=[gym])
    probe_paths = write_report(tmp_path / "evals", benchmark="probe", model="m", tables={}, model_index=[probe])
    out = tmp_path / "hub"
    code = plm(["export", str(model_dir), str(out), "--eval-results", str(gym_paths["model_index"]),
                str(probe_paths["json"])])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    card = ModelCard.load(out / "README.md")
    results = {(result.dataset_type, result.metric_type): result.metric_value for result in card.data.eval_results}
    assert results == {("proteingym-substitutions", "spearman"): 0.123456, ("deeploc", "accuracy"): 0.5}
    assert "| Zero-shot variant effects | ProteinGym substitutions (test) | mean Spearman | 0.1235 |" in card.text
    assert json.loads((out / "eval_results.json").read_text()) == [gym, probe]
