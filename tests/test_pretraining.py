"""The pretraining loop end to end on real Swiss-Prot sequences: learning, exact resume, DDP, bad inputs."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_plm import PLMForCausalLM, PLMForMaskedLM
from modeling_plm.cli.pretrain import load_pretrain_config
from modeling_plm.training.trainer import PretrainConfig, learning_rate_factor, pretrain

from .conftest import data_path

REPO = Path(__file__).resolve().parents[1]
SPROT = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"


def tiny_config(tmp_path: Path, **overrides) -> PretrainConfig:
    """A run that learns something real in well under a minute on 2 CPU cores."""
    values = dict(
        preset="small",
        train_file=[str(data_path(SPROT))],
        valid_fraction=0.01,
        valid_sequences=64,
        crop_length=126,
        batch_size=16,
        max_steps=60,
        learning_rate=3e-3,
        log_steps=10,
        eval_steps=60,
        save_steps=60,
        output_dir=str(tmp_path / "run"),
        report_to="none",
        shuffle_buffer=2000,
    )
    values.update(overrides)
    return PretrainConfig(**values)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_learning_rate_schedule_follows_the_paper_recipe():
    config = PretrainConfig(train_file=["x"], warmup_ratio=0.025, min_lr_ratio=0.1)
    factors = [learning_rate_factor(step, 1000, config) for step in range(1000)]
    assert factors[0] == pytest.approx(1 / 25) and factors[24] == pytest.approx(1.0)  # 2.5% linear warm-up
    assert all(a >= b for a, b in zip(factors[25:], factors[26:]))  # then monotone cosine decay
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)  # to 10% of the peak
    wsd = PretrainConfig(train_file=["x"], lr_schedule="wsd", wsd_decay_ratio=0.2)
    wsd_factors = [learning_rate_factor(step, 1000, wsd) for step in range(1000)]
    assert wsd_factors[500] == 1.0 and wsd_factors[799] == 1.0 and wsd_factors[-1] == pytest.approx(0.1, abs=5e-3)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_tiny_run_lowers_validation_loss_by_ten_percent(objective, tmp_path):
    final = pretrain(tiny_config(tmp_path, objective=objective))
    record = json.loads((final / "training_record.json").read_text())
    initial, last = record["initial_eval"][objective]["loss"], record["final_eval"][objective]["loss"]
    assert last <= 0.9 * initial, (initial, last)
    # The record and the metrics feed export and the scaling-law tools.
    assert record["tokens"] > 0 and record["flops"] > record["flops_6nd"] > 0
    assert record["flops_6nd"] == pytest.approx(6 * record["non_embedding_parameters"] * record["tokens"])
    metrics = read_metrics(tmp_path / "run")
    train_rows = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in train_rows] == [10, 20, 30, 40, 50, 60]
    assert all({"tokens", "flops", "flops_6nd", "learning_rate", "tokens_per_s"} <= m.keys() for m in train_rows)
    model_class = PLMForCausalLM if objective == "clm" else PLMForMaskedLM
    model = model_class.from_pretrained(final)
    assert model.config.model_type == "plm" and (final / "tokenizer.json").exists()


def test_packed_glm_run_and_transfer_recipe(tmp_path):
    """CLM for a share of the steps, then MLM from those weights with a fresh optimizer and schedule."""
    config = tiny_config(
        tmp_path,
        objective="clm-mlm",
        transfer_fraction=0.25,
        max_steps=40,
        pack_length=128,
        batch_size=8,
        eval_steps=10,
        save_steps=10,
        eval_objectives=["mlm", "clm"],
    )
    final = pretrain(config)
    record = json.loads((final / "training_record.json").read_text())
    assert [(p["objective"], p["steps"]) for p in record["phases"]] == [("clm", 10), ("mlm", 30)]
    assert record["phases"][1]["fresh_optimizer_and_schedule"]
    rows = [m for m in read_metrics(tmp_path / "run") if "learning_rate" in m]
    first_mlm = next(m for m in rows if m["objective"] == "mlm")
    last_clm = [m for m in rows if m["objective"] == "clm"][-1]
    assert first_mlm["learning_rate"] > last_clm["learning_rate"]  # the schedule restarted
    assert (tmp_path / "run" / "phase1-clm" / "model" / "model.safetensors").exists()
    assert type(PLMForMaskedLM.from_pretrained(final)) is PLMForMaskedLM
    glm = pretrain(
        tiny_config(
            tmp_path,
            objective="glm",
            pack_length=128,
            crop_length=96,
            batch_size=4,
            max_steps=10,
            eval_steps=10,
            save_steps=10,
            output_dir=str(tmp_path / "glm"),
        )
    )
    glm_record = json.loads((glm / "training_record.json").read_text())
    assert glm_record["final_eval"]["glm"]["loss"] < glm_record["initial_eval"]["glm"]["loss"]


def run_script(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, str(REPO / "training" / "pretrain.py"), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def resume_args(tmp_path: Path, name: str) -> list[str]:
    return [
        "training/configs/smoke.yaml",
        "--output-dir",
        str(tmp_path / name),
        "--max-steps",
        "24",
        "--save-steps",
        "8",
        "--eval-steps",
        "24",
        "--log-steps",
        "4",
        "--valid-sequences",
        "32",
        "--objective",
        "glm",
        "--pack-length",
        "128",
        "--batch-size",
        "4",
        "--crop-length",
        "96",
        "--report-to",
        "none",
        "--shuffle-buffer",
        "2000",
    ]


def test_sigkill_then_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path):
    data_path(SPROT)
    reference = run_script(resume_args(tmp_path, "reference"))
    interrupted = run_script(resume_args(tmp_path, "interrupted"))
    checkpoint = tmp_path / "interrupted" / "checkpoints" / "step-0000016"
    deadline = time.time() + 240
    while not checkpoint.exists() and interrupted.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), interrupted.communicate()[0][-3000:]
    interrupted.send_signal(signal.SIGKILL)
    interrupted.wait()
    assert not (tmp_path / "interrupted" / "final").exists()  # really killed before the end
    resumed = run_script(resume_args(tmp_path, "interrupted") + ["--resume", "auto"])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert "Resumed glm from" in output
    assert reference.wait(timeout=300) == 0
    expected = load_file(tmp_path / "reference" / "final" / "model.safetensors")
    actual = load_file(tmp_path / "interrupted" / "final" / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    records = [
        json.loads((tmp_path / run / "final" / "training_record.json").read_text())
        for run in ("reference", "interrupted")
    ]
    assert records[1]["initial_eval"] == records[0]["initial_eval"] is not None  # kept across the kill
    assert records[1]["tokens"] == records[0]["tokens"] and records[1]["flops"] == records[0]["flops"]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    data_path(SPROT)
    args = resume_args(tmp_path, "preempted")
    args[args.index("--max-steps") + 1] = "100000"
    args[args.index("--save-steps") + 1] = "100000"
    process = run_script(args)
    metrics = tmp_path / "preempted" / "metrics.jsonl"
    deadline = time.time() + 240
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output[-3000:]
    assert "SIGTERM: saved" in output
    assert list((tmp_path / "preempted" / "checkpoints").glob("step-*"))


def test_torchrun_two_processes_ddp_on_cpu(tmp_path):
    data_path(SPROT)
    run_dir = tmp_path / "ddp"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "training/pretrain.py",
            "training/configs/smoke.yaml",
            "--output-dir",
            str(run_dir),
            "--max-steps",
            "40",
            "--eval-steps",
            "40",
            "--save-steps",
            "40",
            "--valid-sequences",
            "64",
            "--shuffle-buffer",
            "2000",
        ],  # with the default tracker (tensorboard): ending it must not take the process group the final save uses
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads((run_dir / "final" / "training_record.json").read_text())
    assert record["world_size"] == 2
    assert record["final_eval"]["mlm"]["loss"] < record["initial_eval"]["mlm"]["loss"]
    assert PLMForMaskedLM.from_pretrained(run_dir / "final").config.model_type == "plm"
    assert list(run_dir.rglob("events.out.tfevents.*")), "the tensorboard tracker wrote nothing"
    state = json.loads((run_dir / "checkpoints" / "step-0000040" / "trainer_state_rank1.json").read_text())
    assert state["batcher"]["stream"]["rank"] == 1 and state["batcher"]["placed"] > 0
    # One schedule step per optimizer step, whatever the number of processes (accelerate would take one per process).
    config = load_pretrain_config(["training/configs/smoke.yaml", "--max-steps", "40"])
    logged = {
        row["step"]: row["learning_rate"]
        for row in map(json.loads, open(run_dir / "metrics.jsonl"))
        if "learning_rate" in row
    }
    assert logged and all(
        lr == pytest.approx(config.learning_rate * learning_rate_factor(step, 40, config))
        for step, lr in logged.items()
    )


def test_nan_loss_stops_and_names_the_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, learning_rate=1e6, max_grad_norm=0.0, max_steps=50, save_steps=1, warmup_ratio=0)
    with pytest.raises(FloatingPointError, match=r"last good checkpoint is .*step-"):
        pretrain(config)


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in records))
    return path


def test_bad_inputs_get_the_documented_behaviour(tmp_path):
    empty = tmp_path / "empty.fasta"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.fasta: no FASTA records"):
        pretrain(tiny_config(tmp_path, train_file=[str(empty)], output_dir=str(tmp_path / "a")))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a fasta file\n")
    with pytest.raises(ValueError, match="not FASTA"):
        pretrain(tiny_config(tmp_path, train_file=[str(notes)], output_dir=str(tmp_path / "b")))
    truncated = tmp_path / "cut.fasta.gz"
    payload = gzip.compress(b"".join(b">P%d\n%s\n" % (i, b"MKTAYIAKQR" * 20) for i in range(500)))
    truncated.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match="truncated gzip"):
        pretrain(tiny_config(tmp_path, train_file=[str(truncated)], output_dir=str(tmp_path / "c")))
    good = [(f"ok{i}", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"[i % 5 :]) for i in range(400)]
    invalid = write_fasta(tmp_path / "invalid.fasta", good + [("bad1", "MKT1AY"), ("bad2", "MKJTAY*")])
    with pytest.raises(ValueError, match=r"record 'bad1': invalid residue '1' at position 4"):
        pretrain(
            tiny_config(
                tmp_path,
                train_file=[str(invalid)],
                invalid_residues="error",
                valid_fraction=0.5,
                output_dir=str(tmp_path / "d"),
            )
        )
    final = pretrain(
        tiny_config(
            tmp_path, train_file=[str(invalid)], max_steps=2, valid_fraction=0.5, output_dir=str(tmp_path / "e")
        )
    )
    stats = json.loads((final / "training_record.json").read_text())["data"]["record_stats_last_phase"]
    assert stats["invalid"] == 2 and stats["kept"] == 400  # skipped and counted, never silently changed


def test_yaml_config_and_flags(tmp_path):
    config = load_pretrain_config(
        ["training/configs/smoke.yaml", "--max-steps", "7", "--train-file", "a.fasta:2", "--train-file", "b.fasta"]
    )
    assert config.max_steps == 7 and config.preset == "small"
    assert config.train_file == ["a.fasta:2", "b.fasta"]  # flags replace the YAML's list
    with pytest.raises(SystemExit):
        load_pretrain_config(["--objective"])
    help_text = subprocess.run(
        [sys.executable, "training/pretrain.py", "--help"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert "examples:" in help_text and "--train-file" in help_text and "torchrun" in help_text


def test_yaml_values_take_the_field_type_and_bad_keys_or_values_are_named(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("train_file: a.fasta\nlearning_rate: 1e-3\nmodel_overrides: {hidden_size: 64}\n")
    config = load_pretrain_config([str(config_file), "--eval-objectives", "mlm", "--eval-objectives", "clm"])
    assert config.learning_rate == 1e-3 and isinstance(config.learning_rate, float)  # YAML 1.1 reads a string
    assert config.train_file == ["a.fasta"] and config.model_overrides == {"hidden_size": 64}
    assert config.eval_objectives == ["mlm", "clm"]
    config_file.write_text("train_file: a.fasta\nbatch_size: four\n")
    with pytest.raises(ValueError, match=r"run.yaml: key 'batch_size': 'four' is not a valid int"):
        load_pretrain_config([str(config_file)])
    config_file.write_text("train_file: a.fasta\nbatch_sise: 4\n")
    with pytest.raises(ValueError, match=r"run.yaml: unknown keys \['batch_sise'\]"):
        load_pretrain_config([str(config_file)])
    with pytest.raises(ValueError, match="invalid_residues must be one of"):
        PretrainConfig(train_file=["a.fasta"], invalid_residues="ignore").validate()


def test_accelerate_configs_parse_for_every_engine():
    from accelerate.commands.config.config_args import load_config_from_file

    engines = {}
    for path in sorted((REPO / "training" / "accelerate").glob("*.yaml")):
        engines[path.stem] = load_config_from_file(str(path)).distributed_type.value
    assert engines == {
        "cpu": "NO",
        "single_gpu": "NO",
        "ddp": "MULTI_GPU",
        "fsdp2": "FSDP",
        "fsdp2_cpu": "FSDP",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
    }
