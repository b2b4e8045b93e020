"""The scaling sweep end to end on real Swiss-Prot sequences: budgets become steps, the runs table is right,
finished runs are not retrained, interrupted ones resume, and runs that cannot fit the time budget are skipped."""

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from modeling_plm.cli.scaling import dispatch
from modeling_plm.scaling.sweep import read_runs_csv

from .conftest import data_path

SPROT = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
SMALL_BUDGET = 4e7
HUGE_BUDGET = 4e11  # tens of thousands of steps: minutes of training, far beyond the test's time budget


def write_sweep_yaml(tmp_path: Path, **extra) -> Path:
    values = {
        "output_dir": str(tmp_path / "sweep"),
        "objectives": ["mlm"],
        "budgets": [SMALL_BUDGET, "4e11"],  # a string as YAML 1.1 reads "4e11": accepted
        "shapes": {
            "h16l1": {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 1, "intermediate_size": 48},
            "h32l1": {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 88},
        },
        "time_budget_minutes": 1.0,
        "min_steps": 2,
        "evals_per_run": 2,
        "checkpoints_per_run": 1,
        "calibration_steps": 4,
        "tokens_per_step_sample": 50,
        "keep_checkpoints": True,
        "base": {
            "preset": "tiny",
            "train_file": [str(data_path(SPROT))],
            "valid_fraction": 0.01,
            "valid_sequences": 32,
            "crop_length": 62,
            "pack_length": 128,
            "batch_size": 2,
            "shuffle_buffer": 500,
            "learning_rate": 3e-3,
            "log_steps": 2,
        },
        **extra,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def without_timing(metrics: Path | str) -> list[dict]:
    text = metrics.read_text() if isinstance(metrics, Path) else metrics
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in text.splitlines()]


def test_sweep_table_resume_and_time_budget(tmp_path, capsys):
    config = write_sweep_yaml(tmp_path)
    out = tmp_path / "sweep"
    assert dispatch(["sweep", str(config), "--quiet"]) == 0
    rows = {row["run"]: row for row in read_runs_csv(out / "runs.csv")}
    plan = {row["run"]: row for row in read_runs_csv(out / "plan.csv")}
    assert set(plan) == {f"mlm_{shape}_C{budget}" for shape in ("h16l1", "h32l1") for budget in ("4e7", "4e11")}

    # The small budget trained at both sizes, with N, C, D and the FLOPs the plan promised.
    assert set(rows) == {"mlm_h16l1_C4e7", "mlm_h32l1_C4e7"}
    sizes = {}
    for name, row in rows.items():
        record = json.loads((out / name / "final" / "training_record.json").read_text())
        sizes[name] = row["parameters"]
        assert row["parameters"] == record["non_embedding_parameters"] > 0
        assert row["budget"] == SMALL_BUDGET and row["objective"] == "mlm" and row["final"] is True
        assert row["tokens"] == record["tokens"] and row["steps"] == plan[name]["steps"]
        assert row["flops"] == pytest.approx(6 * row["parameters"] * row["tokens"])
        assert row["flops_exact"] == pytest.approx(record["flops"]) and row["flops_exact"] > row["flops"]
        # ceil(C / (6 N tokens_per_step)) steps: 6ND lands on the budget within a step's worth of tokens.
        assert plan[name]["steps"] == math.ceil(SMALL_BUDGET / (6 * row["parameters"] * plan[name]["tokens_per_step"]))
        assert 0.85 < row["budget_ratio"] < 1.0 + 2.0 / row["steps"]
        assert row["loss"] == pytest.approx(record["final_eval"]["mlm"]["loss"]) and row["loss"] < row["initial_loss"]
        assert Path(row["metrics_path"]).exists() and row["wall_time_s"] > 0
        meta = json.loads((out / name / "scaling_run.json").read_text())
        assert meta["run"] == name and meta["budget"] == SMALL_BUDGET and meta["objective"] == "mlm"
    assert sizes["mlm_h32l1_C4e7"] > 3 * sizes["mlm_h16l1_C4e7"]

    # The huge budget cannot fit in a minute: skipped, with the estimate in the reason, and never started.
    for shape in ("h16l1", "h32l1"):
        entry = plan[f"mlm_{shape}_C4e11"]
        assert entry["status"] == "skipped" and "s left of the time budget" in entry["reason"]
        assert entry["estimated_s"] > 60 and not (out / entry["run"]).exists()
    summary = json.loads((out / "runs.json").read_text())
    assert {item["run"] for item in summary["skipped"]} == {"mlm_h16l1_C4e11", "mlm_h32l1_C4e11"}
    assert "skipped  mlm_h16l1_C4e11: estimated" in capsys.readouterr().out

    # The report fits what the finished runs support (one budget: no IsoFLOP, said so) and draws the figures.
    figures = tmp_path / "figures"
    assert dispatch(["sweep", str(config), "--quiet", "--dry-run", "--report-dir", str(figures),
                     "--figure-prefix", "t_", "--bootstrap", "4", "--parametric-bootstrap", "2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "mlm       isoflop     not fitted" in printed and (out / "fit.json").exists()
    assert (figures / "t_loss_vs_compute_mlm.png").stat().st_size > 1000

    # A second invocation retrains nothing: the finished runs' records are untouched.
    record_files = {name: out / name / "final" / "training_record.json" for name in rows}
    stamps = {name: path.stat().st_mtime_ns for name, path in record_files.items()}
    assert dispatch(["sweep", str(config), "--quiet"]) == 0
    assert {name: path.stat().st_mtime_ns for name, path in record_files.items()} == stamps
    assert read_runs_csv(out / "runs.csv") == list(rows.values())
    assert {row["run"]: row["status"] for row in read_runs_csv(out / "plan.csv")}["mlm_h16l1_C4e7"] == "done"

    # Interrupted after its last checkpoint (final/ lost): resumes, keeps one copy of every metrics row and ends
    # with the same loss. Interrupted before any checkpoint: restarts clean, same loss (the run is deterministic).
    small = out / "mlm_h16l1_C4e7"
    metrics_before = (small / "metrics.jsonl").read_text()
    assert without_timing(metrics_before)[-1]["step"] == rows["mlm_h16l1_C4e7"]["steps"]
    shutil.rmtree(small / "final")
    assert dispatch(["sweep", str(config), "--quiet", "--only", "mlm_*_C4e7"]) == 0
    assert (small / "metrics.jsonl").read_text() == metrics_before
    again = {row["run"]: row for row in read_runs_csv(out / "runs.csv")}
    assert again["mlm_h16l1_C4e7"]["loss"] == pytest.approx(rows["mlm_h16l1_C4e7"]["loss"], abs=1e-6)
    shutil.rmtree(small / "final")
    shutil.rmtree(small / "checkpoints")
    assert dispatch(["sweep", str(config), "--quiet", "--only", "mlm_h16l1_C4e7"]) == 0
    # No leftover rows from the first attempt: the same rows, step for step (timings aside).
    assert without_timing(small / "metrics.jsonl") == without_timing(metrics_before)
    again = {row["run"]: row for row in read_runs_csv(out / "runs.csv")}
    assert again["mlm_h16l1_C4e7"]["loss"] == pytest.approx(rows["mlm_h16l1_C4e7"]["loss"], abs=1e-6)


def test_plan_errors_are_explicit(tmp_path):
    with pytest.raises(ValueError, match="unknown PLMConfig fields"):
        dispatch(["sweep", str(write_sweep_yaml(tmp_path, shapes={"bad": {"hiden_size": 16}})), "--dry-run"])
    with pytest.raises(ValueError, match="set by the sweep"):
        dispatch(["sweep", str(write_sweep_yaml(tmp_path, base={"max_steps": 10}))])
    # A finished run trained with another plan is not silently reused.
    config = write_sweep_yaml(tmp_path, budgets=[SMALL_BUDGET], time_budget_minutes=None)
    assert dispatch(["sweep", str(config), "--quiet", "--only", "mlm_h32l1_*"]) == 0
    changed = write_sweep_yaml(tmp_path, budgets=[SMALL_BUDGET], time_budget_minutes=None)
    raw = yaml.safe_load(changed.read_text())
    raw["shapes"]["h32l1"]["intermediate_size"] = 96
    changed.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="trained with a different plan"):
        dispatch(["sweep", str(changed), "--quiet", "--only", "mlm_h32l1_*"])
