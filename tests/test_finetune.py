"""Fine-tuning end to end on real FLIP rows with a tiny fresh model: LoRA and full, sequence regression and
classification, per-residue classification with a mask; exact reload; transformers' Trainer; clear errors on bad
input."""

import csv
import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoTokenizer, DataCollatorForTokenClassification, Trainer, TrainingArguments

from modeling_plm import PLMForMaskedLM, PLMForSequenceClassification, PLMTokenizerFast, config_from_preset
from modeling_plm.cli.finetune import load_finetune_config, main
from modeling_plm.training.finetune import (
    FinetuneConfig,
    build_model,
    encode_examples,
    evaluate,
    finetune,
    load_data,
    load_finetuned,
    predict,
    read_record,
    trainer_compute_metrics,
)

from .conftest import data_path, ss_flags

REPO = Path(__file__).resolve().parents[1]
GB1 = "flip/gb1/three_vs_rest.csv.gz"
SS = "flip/secondary_structure/"


@pytest.fixture(scope="module")
def gb1_rows() -> list[dict[str, str]]:
    with gzip.open(data_path(GB1), "rt") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, rows: list[dict[str, str]], fieldnames: list[str]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def ss_config(base_model: str, tmp_path: Path, **overrides) -> FinetuneConfig:
    values = dict(
        model=base_model,
        task="token-classification",
        train_file=str(data_path(SS + "sequences.fasta.gz")),
        labels_fasta=str(data_path(SS + "sampled.fasta.gz")),
        mask_fasta=str(data_path(SS + "mask.fasta.gz")),
        split_column="SET",
        validation_column="VALIDATION",
        max_train_samples=64,
        max_valid_samples=16,
        max_test_samples=16,
        max_length=128,
        batch_size=8,
        learning_rate=5e-3,
        log_steps=4,
        output_dir=str(tmp_path / "ss"),
    )
    values.update(overrides)
    return FinetuneConfig(**values)


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "task, labels",
    [("sequence-regression", None), ("sequence-classification", ["a", "b"]), ("token-classification", ["C", "E", "H"])],
)
def test_lora_trains_only_the_adapter_and_the_head(base_model, task, labels):
    model = build_model(base_model, task, labels, method="lora")
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in name for name in trainable) and any("classifier" in name for name in trainable)
    assert all("lora_" in name or "classifier.modules_to_save" in name for name in trainable)
    assert model.config.num_labels == (1 if labels is None else len(labels))
    full = build_model(base_model, task, labels, method="full")
    assert all(p.requires_grad for p in full.parameters())


def test_per_residue_lora_learns_on_real_secondary_structure_and_reloads_exactly(base_model, tmp_path):
    output = finetune(ss_config(base_model, tmp_path, epochs=3))
    metrics = read_metrics(output)
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.05  # the training loss goes down
    record = read_record(output)
    assert record["best_step"] > 0 and record["best_valid"]["accuracy"] > record["initial_valid"]["accuracy"]
    assert record["model_kwargs"]["id2label"] == {"0": "C", "1": "E", "2": "H"}
    # Masked residues are neither trained on nor scored: the metric counts exactly the mask's 1s.
    assert record["test"]["count"] == record["data"]["scored_residues"]["test"] < record["data"]["residues"]["test"]
    saved = load_file(output / "adapter_model.safetensors")
    assert saved and all("lora_" in key or "classifier" in key for key in saved)

    # The reloaded adapter reproduces the best validation metric, and merged equals unmerged.
    config = ss_config(base_model, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(output)
    data = load_data(config, tokenizer.valid_residues)
    label2id = {name: i for i, name in enumerate(data.label_names)}
    valid = encode_examples(tokenizer, data.valid, config.task, label2id)
    model = load_finetuned(output)
    assert isinstance(model, PeftModel)
    metrics_again, predictions = evaluate(model, valid, config.task, tokenizer.pad_token_id, 3)
    assert metrics_again["accuracy"] == record["best_valid"]["accuracy"]
    merged = load_finetuned(output, merge=True)
    assert not isinstance(merged, PeftModel)
    _, merged_predictions = evaluate(merged, valid, config.task, tokenizer.pad_token_id, 3)
    assert np.mean(merged_predictions == predictions) > 0.999  # float rounding may flip a near-tie
    sequence = data.valid[0].sequence
    states = predict(model, tokenizer, [sequence])[0]
    assert len(states) == len(sequence) and set(states) <= {"C", "E", "H"}
    # Longer than max_length: predicted chunk by chunk, as in training.
    chunks = [sequence[start : start + 20] for start in range(0, len(sequence), 20)]
    assert predict(model, tokenizer, [sequence], max_length=20)[0] == "".join(predict(model, tokenizer, chunks))


def test_regression_head_saves_in_label_units(base_model, tmp_path, gb1_rows):
    train = [r for r in gb1_rows if r["set"] == "train"][:96]
    path = write_csv(tmp_path / "gb1.csv", train + [r for r in gb1_rows if r["set"] == "test"][:32], list(gb1_rows[0]))
    config = FinetuneConfig(
        model=base_model,
        train_file=str(path),
        split_column="set",
        validation_column=None,
        valid_fraction=0.25,
        epochs=2,
        batch_size=16,
        output_dir=str(tmp_path / "gb1"),
    )
    output = finetune(config)
    record = read_record(output)
    assert record["data"]["sequences"] == {"train": 72, "valid": 24, "test": 32}
    assert record["regression_target"]["std"] > 0.5  # trained on standardised targets ...
    # ... but saved predicting in label units: the reloaded model reproduces the validation MSE measured in training.
    valid = load_data(config, PLMTokenizerFast().valid_residues).valid
    model, tokenizer = load_finetuned(output), AutoTokenizer.from_pretrained(output)
    values = np.array(predict(model, tokenizer, [e.sequence for e in valid]))
    mse = np.mean((values - np.array([e.label for e in valid])) ** 2)
    assert mse == pytest.approx(record["best_valid"]["mse"], rel=1e-5)
    assert record["best_valid"]["mse"] != pytest.approx(record["best_valid"]["loss"], rel=1e-3)  # the units differ


@pytest.mark.parametrize("task", ["sequence-regression", "token-classification"])
def test_gradient_accumulation_makes_the_step_of_one_larger_batch(tmp_path, gb1_rows, task):
    """The training loop accumulates exactly: windows of 2 micro-batches of 4 take the steps that batches of 8 take
    (the same examples, no dropout), for the per-batch mean loss of sequence heads and for the per-residue loss over
    the window's labels. Every logged loss after the first depends on the updates before it."""
    base = tmp_path / "base"
    torch.manual_seed(0)
    PLMForMaskedLM(config_from_preset("tiny", hidden_dropout=0.0, attention_dropout=0.0)).save_pretrained(base)
    PLMTokenizerFast().save_pretrained(base)
    common = dict(method="full", epochs=1, group_by_length=False, early_stopping_patience=0, log_steps=1)
    if task == "token-classification":
        settings = dict(max_train_samples=32, learning_rate=5e-3, **common)
        make = partial(ss_config, str(base), tmp_path, **settings)
    else:
        rows = [r for r in gb1_rows if r["set"] == "train"][:96]  # 72 train rows: whole batches of 8
        path = write_csv(tmp_path / "gb1.csv", rows, list(gb1_rows[0]))
        settings = dict(train_file=str(path), split_column="set", valid_fraction=0.25, learning_rate=1e-3, **common)
        make = partial(FinetuneConfig, model=str(base), **settings)
    one = finetune(make(batch_size=8, gradient_accumulation_steps=1, output_dir=str(tmp_path / "one")))
    two = finetune(make(batch_size=4, gradient_accumulation_steps=2, output_dir=str(tmp_path / "two")))

    def losses(output: Path) -> list[float]:
        return [m["loss"] for m in read_metrics(output) if "loss" in m]

    assert len(losses(one)) == len(losses(two)) > 2
    assert losses(one)[0] != losses(one)[-1]
    np.testing.assert_allclose(losses(two), losses(one), rtol=2e-5)


def test_full_fine_tuning_of_a_classifier_from_fasta(base_model, tmp_path, gb1_rows):
    # GB1 variants labelled fit/unfit, written as FASTA with the label and split in the header.
    rows = [r for r in gb1_rows if r["set"] == "train"][:60] + [r for r in gb1_rows if r["set"] == "test"][:20]
    fasta = tmp_path / "gb1.fasta"
    fasta.write_text(
        "".join(
            f">v{i} FIT={'yes' if float(r['target']) > 1 else 'no'} SET={r['set']} VAL={i % 4 == 0}\n{r['sequence']}\n"
            for i, r in enumerate(rows)
        )
    )
    output = finetune(
        FinetuneConfig(
            model=base_model,
            task="sequence-classification",
            method="full",
            train_file=str(fasta),
            label_column="FIT",
            split_column="SET",
            validation_column="VAL",
            epochs=1,
            batch_size=16,
            output_dir=str(tmp_path / "cls"),
        )
    )
    assert (output / "model.safetensors").exists() and not (output / "adapter_model.safetensors").exists()
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "no", "1": "yes"} and config["problem_type"] == "single_label_classification"
    model = load_finetuned(output)
    assert type(model) is PLMForSequenceClassification
    assert set(predict(model, AutoTokenizer.from_pretrained(output), [rows[0]["sequence"]])) <= {"no", "yes"}
    record = read_record(output)
    assert {"accuracy", "macro_f1"} <= set(record["test"]) and record["data"]["sequences"]["test"] == 20


def test_transformers_trainer_runs_a_lora_model(base_model, tmp_path):
    config = ss_config(base_model, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    data = load_data(config, tokenizer.valid_residues)
    label2id = {name: i for i, name in enumerate(data.label_names)}
    train = encode_examples(tokenizer, data.train, config.task, label2id)
    valid = encode_examples(tokenizer, data.valid, config.task, label2id)
    torch.manual_seed(0)
    model = build_model(base_model, config.task, data.label_names, lora_dropout=0.0)
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=16,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        logging_steps=4,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=valid,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        compute_metrics=trainer_compute_metrics(config.task),
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0]
    metrics = trainer.evaluate()
    assert 0.3 < metrics["eval_accuracy"] <= 1 and metrics["eval_count"] == data.stats["scored_residues"]["valid"]
    trainer.save_model(str(tmp_path / "adapter"))
    model.eval()
    batch = DataCollatorForTokenClassification(tokenizer)(valid[:4])
    with torch.no_grad():
        expected = model(**batch).logits
        base = build_model(base_model, config.task, data.label_names, method="full")
        reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        assert torch.equal(reloaded(**batch).logits, expected)


def test_torchrun_two_processes_shard_the_batches_evenly(base_model, tmp_path):
    """DDP on CPU: each process takes half of the (length-grouped) batches, the same number of steps, and they agree
    on early stopping and the best checkpoint."""
    output = tmp_path / "ddp"
    flags = ss_flags(base_model, output, **{"--max-test-samples": 8, "--epochs": 2})
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547"]
    command += [str(REPO / "training" / "finetune.py")] + flags
    completed = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("best valid accuracy") == 1  # printed by the main process only
    record = read_record(output)
    inputs = record["data"]["chunks"]["train"] - record["data"]["train_inputs_without_scored_residues"]
    assert record["world_size"] == 2 and record["status"] == "finished"
    assert record["steps"] == 2 * math.ceil(math.ceil(inputs / 8) / 2)
    evaluations = [m["step"] for m in read_metrics(output) if "valid_accuracy" in m]
    assert evaluations == [0, record["steps"] // 2, record["steps"]]  # once per epoch, at the same steps


def test_sigterm_saves_the_best_model_so_far_and_exits_cleanly(base_model, tmp_path):
    """The training loop's SIGTERM handling, for fine-tuning: the step finishes, the best weights so far are saved
    with status "interrupted", the process exits 0 and the folder loads."""
    output = tmp_path / "preempted"
    long_run = {"--epochs": 100000, "--eval-steps": 2, "--log-steps": 1, "--early-stopping-patience": 0}
    flags = ss_flags(base_model, output, **long_run)
    command = [sys.executable, str(REPO / "training" / "finetune.py")] + flags
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (
        (output / "metrics.jsonl").exists() and sum("valid_" in line for line in open(output / "metrics.jsonl")) >= 2
    ):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    printed = process.communicate(timeout=120)[0]
    assert process.returncode == 0, printed[-3000:]
    assert "SIGTERM: saved the best model so far" in printed
    record = read_record(output)
    assert record["status"] == "interrupted" and record["best_step"] >= 0
    assert isinstance(load_finetuned(output), PeftModel)
    assert list((output / "checkpoints").glob("step-*")), "SIGTERM wrote no resumable checkpoint"
    # Resuming with other settings would be another run: refused, naming what changed.
    changed = load_finetune_config(flags + ["--resume", "auto", "--learning-rate", "0.5"])
    with pytest.raises(ValueError, match=r"cannot resume with other settings .*learning_rate None -> 0.5"):
        finetune(changed)


def run_finetune_script(flags: list[str]) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "training" / "finetune.py")] + flags
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every run: bitwise comparable
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_then_resume_equals_the_uninterrupted_run_bit_for_bit(base_model, tmp_path):
    """Killed (SIGKILL) after a checkpoint and resumed with `--resume auto`: the same batches, dropout, schedule and
    early-stopping state follow, so the adapter, the record's metrics and metrics.jsonl equal an uninterrupted run's.
    Accumulation windows of 3 batches cross the epochs' ends (10 batches each), so the skipped data is counted right."""
    run = {"--batch-size": 4, "--gradient-accumulation-steps": 3, "--epochs": 12, "--eval-steps": 4}
    run |= {"--log-steps": 1, "--early-stopping-patience": 0, "--max-test-samples": 8}
    reference = run_finetune_script(ss_flags(base_model, tmp_path / "reference", **run))
    interrupted_flags = ss_flags(base_model, tmp_path / "interrupted", **run)
    interrupted = run_finetune_script(interrupted_flags)
    checkpoint = tmp_path / "interrupted" / "checkpoints" / "step-0000008"
    deadline = time.time() + 240
    while not checkpoint.exists() and interrupted.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    interrupted.send_signal(signal.SIGKILL)
    output = interrupted.communicate()[0]
    assert checkpoint.exists(), output[-3000:]
    assert read_record(tmp_path / "interrupted")["status"] == "training"  # really killed before the end
    resumed = run_finetune_script(interrupted_flags + ["--resume", "auto"])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert "Resumed fine-tuning from" in output
    assert reference.wait(timeout=300) == 0
    expected, actual = (load_file(tmp_path / run / "adapter_model.safetensors") for run in ("reference", "interrupted"))
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    records = [read_record(tmp_path / run) for run in ("reference", "interrupted")]
    for key in ("status", "steps", "best_step", "best_valid", "initial_valid", "test"):
        assert records[1][key] == records[0][key], key
    assert records[1]["resumed_from"][0].endswith("step-0000008") or len(records[1]["resumed_from"]) == 1
    assert read_metrics(tmp_path / "interrupted") == read_metrics(tmp_path / "reference")  # each step once


def test_bad_csv_input_names_the_row_and_column(base_model, tmp_path, gb1_rows):
    columns = list(gb1_rows[0])
    rows = [dict(r) for r in gb1_rows[:6]]

    def error_of(rows, **overrides) -> str:
        path = write_csv(tmp_path / "bad.csv", rows, list(rows[0]))
        config = FinetuneConfig(model=base_model, train_file=str(path), valid_fraction=0.3, **overrides)
        with pytest.raises(ValueError) as caught:
            load_data(config, PLMTokenizerFast().valid_residues)
        return str(caught.value)

    message = error_of(rows, label_column="fitness")
    assert "line 1 (header)" in message and "'fitness'" in message and "--label-column" in message
    assert all(repr(c) in message for c in columns)  # lists the columns there are
    bad = [dict(r) for r in rows]
    bad[3]["target"] = "n/a"
    assert "bad.csv, line 5, column 'target': label 'n/a' is not a number" in error_of(bad)
    bad = [dict(r) for r in rows]
    bad[2]["sequence"] = bad[2]["sequence"][:10] + "J" + bad[2]["sequence"][11:]
    message = error_of(bad)
    assert "bad.csv, line 4, column 'sequence': invalid residue 'J' at position 11" in message
    assert "--invalid-residues X" in message
    bad[2]["sequence"] = bad[2]["sequence"].replace("J", "*")
    assert "invalid residue '*' at position 11" in error_of(bad)
    assert "split 'holdout' is neither 'train'" in error_of([{**rows[0], "set": "holdout"}], split_column="set")
    assert "'maybe' is not a boolean" in error_of([{**rows[0], "validation": "maybe"}], validation_column="validation")


def test_invalid_residue_policies_skip_map_and_drop(base_model, tmp_path, gb1_rows, caplog):
    rows = [dict(r) for r in gb1_rows[:6]]
    rows[2]["sequence"] = rows[2]["sequence"][:10] + "J" + rows[2]["sequence"][11:]
    path = write_csv(tmp_path / "bad.csv", rows, list(rows[0]))
    residues = PLMTokenizerFast().valid_residues

    def train_sequences(policy: str) -> list[str]:
        config = FinetuneConfig(model=base_model, train_file=str(path), valid_file=str(path), invalid_residues=policy)
        return [example.sequence for example in load_data(config, residues).train]

    with caplog.at_level("WARNING", logger="modeling_plm.training.finetune"):
        assert len(train_sequences("skip")) == 5  # left out and counted in the log
    assert "bad.csv: left out 1 sequences with invalid residues" in caplog.text
    assert any(sequence[10] == "X" for sequence in train_sequences("X"))
    assert sum(map(len, train_sequences("drop"))) == sum(len(r["sequence"]) for r in rows) - 1
    with pytest.raises(ValueError, match="would shift per-residue labels"):
        FinetuneConfig(
            model=base_model, task="token-classification", train_file="x.csv", invalid_residues="drop"
        ).validate()


def test_bad_fasta_input_names_the_record(base_model, tmp_path):
    sequences = tmp_path / "seq.fasta"
    labels = tmp_path / "labels.fasta"
    sequences.write_text(">a\nMKTAYIAK\n>b\nMKTAY1AK\n")
    labels.write_text(">a SET=train VALIDATION=False\nCCHHHHCC\n>b SET=train VALIDATION=True\nCCHHHHCC\n")
    config = FinetuneConfig(
        model=base_model,
        task="token-classification",
        train_file=str(sequences),
        labels_fasta=str(labels),
        split_column="SET",
        validation_column="VALIDATION",
    )
    valid_residues = PLMTokenizerFast().valid_residues
    with pytest.raises(ValueError, match=r"seq.fasta, record 2 \(id b\): invalid residue '1' at position 6"):
        load_data(config, valid_residues)
    sequences.write_text(">a\nMKTAYIAK\n>b\nMKTAYIAKLL\n")
    with pytest.raises(ValueError, match=r"labels.fasta, record 2 \(id b\): 8 labels for a sequence of 10 residues"):
        load_data(config, valid_residues)
    sequences.write_text(">a\nMKTAYIAK\n>c\nMKTAYIAK\n")
    with pytest.raises(ValueError, match=r"record 2 \(id c\): no record with this id in the labels FASTA"):
        load_data(config, valid_residues)
    with pytest.raises(ValueError, match="needs --labels-fasta"):
        FinetuneConfig(model=base_model, task="token-classification", train_file=str(sequences)).validate()


def test_command_line_help_and_yaml_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--split-column" in text and "token-classification" in text
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("model: some/model\ntrain_file: data.csv\nepochs: 7\nlearning_rate: 0.002\n")
    config = load_finetune_config([str(yaml_file), "--epochs", "3", "--no-group-by-length"])
    assert (config.model, config.epochs, config.learning_rate, config.group_by_length) == (
        "some/model",
        3,
        0.002,
        False,
    )
    yaml_file.write_text("model: m\nepochz: 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_finetune_config([str(yaml_file)])
