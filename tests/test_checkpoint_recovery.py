"""Interrupted and corrupt runs lose nothing: a resume skips invalid checkpoints (truncated weights or optimizer,
broken or missing trainer state, stray folders), naming the folder and the file, and continues from the newest
valid one, bit for bit; an explicit invalid checkpoint, or none valid at all, is a clear error. Real runs only:
tiny pretraining runs in-process, and a fine-tuning run killed with SIGKILL."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_plm.cli.finetune import load_finetune_config
from modeling_plm.training.finetune import finetune, read_record
from modeling_plm.training.loop import check_checkpoint, checkpoints_in
from modeling_plm.training.trainer import PretrainConfig, pretrain

from .conftest import data_path, ss_flags

REPO = Path(__file__).resolve().parents[1]
SPROT = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
LOOP_LOGGER = "modeling_plm.training.loop"


# ---- pretraining: one finished run of 12 steps with checkpoints at 4, 8 and 12, copied per test ----------------------
def tiny_config(output_dir: Path, **overrides) -> PretrainConfig:
    """A 12-step run of the tiny preset (a few seconds on 2 cores), a checkpoint every 4 steps, all kept."""
    values = dict(
        preset="tiny",
        train_file=[str(data_path(SPROT))],
        valid_fraction=0.01,
        valid_sequences=16,
        crop_length=62,
        batch_size=8,
        max_steps=12,
        log_steps=4,
        eval_steps=12,
        save_steps=4,
        save_total_limit=3,
        output_dir=str(output_dir),
        report_to="none",
        shuffle_buffer=200,
    )
    values.update(overrides)
    return PretrainConfig(**values)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """The uninterrupted run every resumed one must equal."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    pretrain(tiny_config(run_dir))
    return run_dir


def copy_of(finished_run: Path, tmp_path: Path) -> Path:
    """The finished run's folder without its final model: what a run killed after its last checkpoint leaves."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    shutil.rmtree(run_dir / "final")
    return run_dir


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def assert_same_weights(expected_file: Path, actual_file: Path) -> None:
    expected, actual = load_file(expected_file), load_file(actual_file)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def resume_warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == LOOP_LOGGER and r.levelno == logging.WARNING)


def test_truncated_model_in_the_newest_checkpoint_resumes_from_the_previous_one_bit_for_bit(
    finished_run, tmp_path, caplog
):
    run_dir = copy_of(finished_run, tmp_path)
    newest = run_dir / "checkpoints" / "step-0000012"
    truncate(newest / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger=LOOP_LOGGER):
        final = pretrain(tiny_config(run_dir, resume="auto"))
    warned = resume_warnings(caplog)
    assert f"{newest}: model.safetensors is truncated" in warned and "resuming from step-0000008 instead" in warned
    assert_same_weights(finished_run / "final" / "model.safetensors", final / "model.safetensors")
    assert check_checkpoint(newest, world_size=1) is None  # written again, whole, when the run got there


def cut_optimizer(folder: Path) -> None:
    truncate(folder / "optimizer.bin")


def break_trainer_state(folder: Path) -> None:
    (folder / "trainer_state_rank0.json").write_text('{"step": 12, "tok')  # cut off mid-write


def drop_rank_state(folder: Path) -> None:
    (folder / "trainer_state_rank0.json").unlink()


def cut_rng_states(folder: Path) -> None:
    truncate(folder / "random_states_0.pkl")


DAMAGES = {
    "truncated-optimizer": (cut_optimizer, "optimizer.bin is truncated (zip central directory missing)"),
    "corrupt-trainer-state": (break_trainer_state, "trainer_state_rank0.json is not valid JSON"),
    "missing-rank-state": (drop_rank_state, "missing trainer_state_rank0.json"),
    "truncated-rng-states": (cut_rng_states, "random_states_0.pkl is truncated (zip central directory missing)"),
}


@pytest.mark.parametrize("damage, named", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_newest_checkpoint_is_named_and_skipped(finished_run, tmp_path, caplog, damage, named):
    run_dir = copy_of(finished_run, tmp_path)
    newest = run_dir / "checkpoints" / "step-0000012"
    damage(newest)
    with caplog.at_level(logging.WARNING, logger=LOOP_LOGGER):
        final = pretrain(tiny_config(run_dir, resume="auto"))
    warned = resume_warnings(caplog)
    assert f"{newest}: " in warned and named in warned and "resuming from step-0000008 instead" in warned
    assert_same_weights(finished_run / "final" / "model.safetensors", final / "model.safetensors")


def test_a_stray_empty_folder_is_ignored_with_a_warning(finished_run, tmp_path, caplog):
    run_dir = copy_of(finished_run, tmp_path)
    stray = run_dir / "checkpoints" / "step-9999999"
    stray.mkdir()
    with caplog.at_level(logging.WARNING, logger=LOOP_LOGGER):
        final = pretrain(tiny_config(run_dir, resume="auto"))
    warned = resume_warnings(caplog)
    assert f"{stray}: the folder is empty" in warned and "resuming from step-0000012 instead" in warned
    assert_same_weights(finished_run / "final" / "model.safetensors", final / "model.safetensors")


def test_retention_never_deletes_the_checkpoint_just_written_for_a_newer_invalid_one(finished_run, tmp_path):
    """With one checkpoint kept, a stray folder of a later step must not count as the newest: the checkpoint the
    resumed run writes is the one that stays (with the stray folder, left alone)."""
    run_dir = copy_of(finished_run, tmp_path)
    checkpoints = run_dir / "checkpoints"
    truncate(checkpoints / "step-0000012" / "optimizer.bin")
    (checkpoints / "step-9999999").mkdir()
    pretrain(tiny_config(run_dir, resume="auto", save_steps=2, save_total_limit=1))
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000012", "step-9999999"]
    assert check_checkpoint(checkpoints / "step-0000012", world_size=1) is None


def test_an_explicit_invalid_checkpoint_is_refused_naming_the_valid_alternative(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    newest = run_dir / "checkpoints" / "step-0000012"
    truncate(newest / "model.safetensors")
    alternative = run_dir / "checkpoints" / "step-0000008"
    expected = f"{newest}: not a valid checkpoint: model.safetensors is truncated .*pass --resume {alternative} instead"
    with pytest.raises(ValueError, match=expected):
        pretrain(tiny_config(run_dir, resume=str(newest)))
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        pretrain(tiny_config(run_dir, resume=str(run_dir / "checkpoints" / "step-0000099")))


def test_no_valid_checkpoint_at_all_is_a_clear_error_listing_them(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    checkpoints = run_dir / "checkpoints"
    truncate(checkpoints / "step-0000004" / "model.safetensors")
    truncate(checkpoints / "step-0000008" / "scheduler.bin")
    (checkpoints / "step-0000012" / "trainer_state_rank0.json").write_text("")
    expected = (
        rf"{checkpoints}: no valid checkpoint to resume from \(step-0000004: model.safetensors is truncated .*; "
        r"step-0000008: scheduler.bin is truncated .*; step-0000012: trainer_state_rank0.json is empty\)"
    )
    with pytest.raises(ValueError, match=expected):
        pretrain(tiny_config(run_dir, resume="auto"))


def test_a_checkpoint_of_another_model_shape_names_the_folder_and_the_file(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    other_shape = tiny_config(run_dir, resume="auto", model_overrides={"intermediate_size": 96})
    with pytest.raises(ValueError, match=r"(?s)step-0000012: cannot load model.safetensors: .*size mismatch"):
        pretrain(other_shape)


def test_a_checkpoint_of_one_process_lacks_the_files_of_a_second_rank(finished_run):
    folder = finished_run / "checkpoints" / "step-0000008"
    assert check_checkpoint(folder, world_size=1) is None
    assert check_checkpoint(folder, world_size=2) == "missing trainer_state_rank1.json, random_states_1.pkl"


def torchrun_pretrain(output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """Two CPU processes (DDP) of the tiny 12-step run, a checkpoint every 4 steps."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561"]
    command += ["training/pretrain.py", "training/configs/smoke.yaml", "--preset", "tiny", "--max-steps", "12"]
    command += ["--save-steps", "4", "--eval-steps", "12", "--log-steps", "4", "--valid-sequences", "16"]
    command += ["--crop-length", "62", "--batch-size", "8", "--shuffle-buffer", "200", "--report-to", "none"]
    command += ["--output-dir", str(output_dir), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_every_rank_skips_a_checkpoint_whose_damage_only_one_rank_reads(tmp_path):
    """Rank 1's trainer state is corrupt: rank 0, whose own files are whole, must skip the checkpoint too."""
    data_path(SPROT)
    run_dir = tmp_path / "ddp"
    torchrun_pretrain(run_dir)
    reference = load_file(run_dir / "final" / "model.safetensors")
    shutil.rmtree(run_dir / "final")
    newest = run_dir / "checkpoints" / "step-0000012"
    (newest / "trainer_state_rank1.json").write_text("{")
    resumed = torchrun_pretrain(run_dir, "--resume", "auto")
    assert f"{newest}: trainer_state_rank1.json is not valid JSON" in resumed.stderr
    assert resumed.stderr.count("resuming from step-0000008 instead") == 1  # warned once, by rank 0
    assert resumed.stdout.count("Resumed mlm from") == 1 and "step-0000008 (step 8)" in resumed.stdout
    actual = load_file(run_dir / "final" / "model.safetensors")
    assert all(torch.equal(reference[name], actual[name]) for name in reference)


# ---- fine-tuning: killed after its checkpoints, the newest one corrupt ---------------------------------------------


def recovery_flags(base_model: str, output: Path) -> list[str]:
    """Per-residue secondary structure, 40 training chunks in batches of 4 (10 steps an epoch), a checkpoint every
    4 steps, 3 kept."""
    run = {"--max-test-samples": 8, "--batch-size": 4, "--epochs": 8, "--eval-steps": 4, "--save-steps": 4}
    return ss_flags(base_model, output, **run, **{"--save-total-limit": 3, "--early-stopping-patience": 0})


def test_fine_tuning_killed_with_a_corrupt_newest_checkpoint_resumes_from_the_previous_one(
    base_model, tmp_path, caplog
):
    interrupted = tmp_path / "interrupted"
    command = [sys.executable, str(REPO / "training" / "finetune.py"), *recovery_flags(base_model, interrupted)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # this process's threads: bitwise equal
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = interrupted / "checkpoints"
    deadline = time.time() + 240
    while not (checkpoints / "step-0000008").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    output = process.communicate()[0]
    assert (checkpoints / "step-0000008").exists(), output[-3000:]
    assert read_record(interrupted)["status"] == "training"  # really killed before the end
    *_, previous, newest = checkpoints_in(checkpoints)  # not a .tmp one the kill may have left
    truncate(newest / "best_weights.safetensors")
    with caplog.at_level(logging.WARNING, logger=LOOP_LOGGER):
        finetune(load_finetune_config([*recovery_flags(base_model, interrupted), "--resume", "auto"]))
    warned = resume_warnings(caplog)
    assert f"{newest}: best_weights.safetensors is truncated" in warned
    assert f"resuming from {previous.name} instead" in warned
    assert read_record(interrupted)["resumed_from"] == [str(previous)]
    reference = finetune(load_finetune_config(recovery_flags(base_model, tmp_path / "reference")))
    assert_same_weights(reference / "adapter_model.safetensors", interrupted / "adapter_model.safetensors")
    records = [read_record(folder) for folder in (reference, interrupted)]
    for key in ("status", "steps", "best_step", "best_valid", "test"):
        assert records[1][key] == records[0][key], key
