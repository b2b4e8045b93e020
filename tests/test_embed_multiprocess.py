"""`plm embed` in several processes (torchrun, accelerate launch, a SLURM array, by hand): each embeds its own shards
into the shared output folder, the last to finish merges them, and the result equals a one-process run's byte for
byte; a killed process resumes its own part and nothing is lost or duplicated; a folder refuses another world size."""

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pyarrow.parquet
import pytest

from modeling_plm.cli.main import main
from modeling_plm.cli.options import launch_rank
from modeling_plm.data.fasta import read_fasta
from modeling_plm.inference.embedding import load_embeddings
from modeling_plm.inference.exports import export_embeddings
from tests.conftest import data_path, optional_module

SWISSPROT = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
OPTIONS = ["--shard-size", "10", "--token-budget", "512", "--pooling", "mean", "max", "--layers", "0", "-1"]


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    """95 real Swiss-Prot records of up to 150 residues: 10 shards, the last one short."""
    short = (r for r in read_fasta(data_path(SWISSPROT)) if len(r.sequence) <= 150)
    path = tmp_path_factory.mktemp("fasta") / "sprot95.fasta"
    path.write_text("".join(f">{r.id}\n{r.sequence}\n" for r in itertools.islice(short, 95)))
    return path


def plm_embed(*args: str, env: dict | None = None, wait: bool = True):
    command = [sys.executable, "-m", "modeling_plm", "embed", *map(str, args), *OPTIONS, "--no-progress"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def single_run(base_model, fasta, tmp_path_factory):
    output = tmp_path_factory.mktemp("single") / "out"
    plm_embed(base_model, fasta, output)
    return output


def assert_same_store(got, want) -> None:
    """The same files with the same bytes: shards and the merged manifest."""
    names = sorted(path.name for path in want.iterdir())
    assert sorted(path.name for path in got.iterdir() if not path.name.startswith("manifest.rank-")) == names
    for name in names:
        assert (got / name).read_bytes() == (want / name).read_bytes(), name
    records = list(load_embeddings(got))
    assert [record.index for record in records] == list(range(95))  # every record once, in file order


def test_torchrun_two_processes_equal_one(base_model, fasta, single_run, tmp_path):
    output = tmp_path / "out"
    command = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "modeling_plm", "embed"]
    completed = subprocess.run(
        [sys.executable, *command, base_model, str(fasta), str(output), *OPTIONS, "--no-progress"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    parts = sorted(path.name for path in output.glob("manifest.rank-*.jsonl"))
    assert parts == ["manifest.rank-00000-of-00002.jsonl", "manifest.rank-00001-of-00002.jsonl"]
    assert_same_store(output, single_run)


def test_a_killed_rank_resumes_and_nothing_is_lost_or_duplicated(base_model, fasta, single_run, tmp_path):
    output = tmp_path / "out"
    first = plm_embed(base_model, fasta, output, "--rank", "0", "--world-size", "3")
    assert first["complete"] is False and first["records"] == 35  # shards 0, 3, 6, 9 (the last holds 5)
    with pytest.raises(ValueError, match="not all finished"):
        list(load_embeddings(output))
    # Rank 1 is killed after its first shard.
    process = plm_embed(base_model, fasta, output, "--rank", "1", "--world-size", "3", wait=False)
    part = output / "manifest.rank-00001-of-00003.jsonl"
    deadline = time.monotonic() + 120
    while (not part.exists() or len(part.read_bytes().split(b"\n")) < 3) and time.monotonic() < deadline:
        time.sleep(0.005)  # the header and one shard
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    plm_embed(base_model, fasta, output, "--rank", "2", "--world-size", "3")
    assert not (output / "manifest.jsonl").exists()  # rank 1 is unfinished
    resumed = plm_embed(base_model, fasta, output, "--rank", "1", "--world-size", "3")
    assert resumed["complete"] is True and resumed["resumed"] >= 10
    assert_same_store(output, single_run)


def test_accelerate_launch_two_processes_equal_one(base_model, fasta, single_run, tmp_path):
    # On CPUs `--multi_gpu` is accelerate's torchrun launch; `--cpu` alone would start one process (see launch_rank).
    output = tmp_path / "out"
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    completed = subprocess.run(
        [sys.executable, *launch, "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "modeling_plm", "embed"]
        + [base_model, str(fasta), str(output), *OPTIONS, "--no-progress"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(path.name for path in output.glob("manifest.rank-*.jsonl")) == [
        "manifest.rank-00000-of-00002.jsonl",
        "manifest.rank-00001-of-00002.jsonl",
    ]
    assert_same_store(output, single_run)


def plm_embed_here(model, fasta, output, *flags: str, capsys) -> tuple[int, str]:
    """`plm embed` in this process (fast: no interpreter start): the exit code and stdout, or stderr on an error.
    `flags` come after OPTIONS, so they win."""
    code = main(["embed", model, str(fasta), str(output), *OPTIONS, *flags, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out if code == 0 else captured.err


def folder_bytes(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_folder_refuses_another_world_size_and_a_finished_one_reruns_as_a_no_op(
    base_model, fasta, single_run, tmp_path, capsys, monkeypatch
):
    for name in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_COUNT", "SLURM_NTASKS", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    output = tmp_path / "out"
    assert plm_embed_here(base_model, fasta, output, "--rank", "0", "--world-size", "2", capsys=capsys)[0] == 0
    unfinished = folder_bytes(output)
    refusals = [
        ("--rank", "0", "--world-size", "3"),  # another split
        ("--rank", "2", "--world-size", "3"),
        (),  # one process over a multi-process folder
        ("--no-resume",),  # starting over in place would leave the other parts' shards: also refused
    ]
    for flags in refusals:
        code, error = plm_embed_here(base_model, fasta, output, *flags, capsys=capsys)
        new = flags[3] if len(flags) == 4 else "1"
        assert code == 2 and "Traceback" not in error, error
        assert f"{output} was written by a run with world size 2" in error and f"this run has world size {new}" in error
        assert "Rerun with world size 2" in error and "new output folder" in error
        assert folder_bytes(output) == unfinished  # nothing written or deleted
    # Every process of a run needs the same settings (the shard size sets the split too).
    code, error = plm_embed_here(
        base_model, fasta, output, "--rank", "1", "--world-size", "2", "--shard-size", "20", capsys=capsys
    )
    assert code == 2 and "process 0 of 2 embeds with other settings (shard_size: 10 -> 20)" in error, error
    assert folder_bytes(output) == unfinished

    code, out = plm_embed_here(base_model, fasta, output, "--rank", "1", "--world-size", "2", capsys=capsys)
    assert code == 0 and json.loads(out)["complete"] is True
    assert_same_store(output, single_run)
    finished = folder_bytes(output)
    for rank in (0, 1):  # a finished folder reruns with its world size as a no-op: nothing redone or duplicated
        code, out = plm_embed_here(base_model, fasta, output, "--rank", str(rank), "--world-size", "2", capsys=capsys)
        summary = json.loads(out)
        assert code == 0 and summary["complete"] is True and summary["resumed"] == (50, 45)[rank], summary
        assert folder_bytes(output) == finished
    assert plm_embed_here(base_model, fasta, output, capsys=capsys)[0] == 2  # and still refuses one process

    # The reverse: a folder one process wrote refuses several.
    single = tmp_path / "single"
    shutil.copytree(single_run, single)
    code, error = plm_embed_here(base_model, fasta, single, "--rank", "1", "--world-size", "2", capsys=capsys)
    assert code == 2 and f"{single} was written by a run with world size 1 (one process" in error, error
    assert "this run has world size 2" in error and folder_bytes(single) == folder_bytes(single_run)


def test_a_slurm_array_splits_the_file(base_model, fasta, single_run, tmp_path):
    output = tmp_path / "out"
    for task in (3, 4):  # --array=3-4: task ids count from SLURM_ARRAY_TASK_MIN
        slurm = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_COUNT": "2"}
        summary = plm_embed(base_model, fasta, output, env=slurm)
        assert (summary["rank"], summary["world_size"]) == (task - 3, 2)
    assert_same_store(output, single_run)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0, 1, 0)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4, 1)),
        ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3, 0)),
        ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}, (5, 8, 1)),
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"}, (1, 2, 1)),  # accelerate's multi-CPU mpirun
        ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}, (2, 3, 0)),
    ],
)
def test_launch_rank_reads_each_launcher(env, expected, monkeypatch):
    launcher_variables = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
    for name in (*launcher_variables, "SLURM_NTASKS", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launch_rank() == expected


@pytest.mark.parametrize("suffix", [".h5", ".parquet"])
def test_exports_round_trip_through_load_embeddings_and_their_own_readers(single_run, tmp_path, suffix):
    path = tmp_path / f"embeddings{suffix}"
    summary = export_embeddings(single_run, path)
    assert summary["records"] == 95 and summary["format"] == ("hdf5" if suffix == ".h5" else "parquet")
    want = list(load_embeddings(single_run))
    got = list(load_embeddings(path))
    assert [(r.index, r.id) for r in got] == [(r.index, r.id) for r in want]
    for mine, theirs in zip(got, want):
        assert mine.arrays.keys() == theirs.arrays.keys() == {"mean", "max"}
        for name in mine.arrays:
            assert mine.arrays[name].dtype == theirs.arrays[name].dtype
            np.testing.assert_array_equal(mine.arrays[name], theirs.arrays[name])
    first = want[0]
    if suffix == ".h5":  # keyed by id, as ESM's extract.py and bio_embeddings users read it
        with h5py.File(path) as handle:
            np.testing.assert_array_equal(handle["mean"][first.id][()], first.arrays["mean"])
            assert handle["mean"][first.id].attrs["index"] == 0
    else:
        table = pyarrow.parquet.read_table(path)
        assert table.column_names == ["index", "id", "mean", "max"] and table.num_rows == 95
        np.testing.assert_array_equal(np.asarray(table["mean"][0].as_py(), np.float32), first.arrays["mean"])
        datasets = optional_module("datasets")  # fails instead of skipping under PLM_REQUIRE_DATA (CI)
        rows = datasets.load_dataset("parquet", data_files=str(path), split="train")
        assert rows[0]["id"] == first.id and np.allclose(rows[0]["mean"], first.arrays["mean"])


def test_plm_embed_exports_when_the_run_completes(base_model, fasta, tmp_path):
    summary = plm_embed(base_model, fasta, tmp_path / "out", "--export", tmp_path / "out.h5")
    assert summary["export"]["records"] == 95 and (tmp_path / "out.h5").is_file()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeling_plm",
            "embed",
            base_model,
            str(fasta),
            str(tmp_path / "x"),
            "--export",
            "x.csv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2 and "export to .h5/.hdf5 (HDF5) or .parquet" in completed.stderr
