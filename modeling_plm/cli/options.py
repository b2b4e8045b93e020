"""Argument types shared by the commands: a bad value is an argparse usage error (exit 2) that names the flag."""

import argparse
import os
from pathlib import Path

import torch


def device(text: str) -> str:
    """A torch device this machine has: "cpu", "cuda", "cuda:1", "mps"."""
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device (use cpu)")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    return text


def default_device(choice: str | None, local_rank: int = 0) -> str:
    """The device a command runs on: the one given, else this process's CUDA device (`local_rank` of a multi-process
    launch) when CUDA is available, else the CPU."""
    return choice or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")


# The variables mpirun sets (Intel MPI / MPICH, Open MPI, MVAPICH), as accelerate reads them for its multi-CPU launch.
MPI_VARIABLES = (
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
)


def launch_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process as its launcher set them: torchrun and `accelerate launch`
    (RANK, WORLD_SIZE, LOCAL_RANK), mpirun (accelerate's multi-CPU launch: PMI_*, OMPI_COMM_WORLD_*, MV2_*), a SLURM
    job array (SLURM_ARRAY_TASK_ID counted from SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT) or `srun` tasks
    (SLURM_PROCID of SLURM_NTASKS, SLURM_LOCALID); (0, 1, 0) otherwise.

    `accelerate launch --cpu --num_processes N` without an MPI hostfile starts one process and sets none of these: on
    CPUs use `accelerate launch --multi_gpu --num_processes N` (torchrun underneath) or torchrun itself."""
    env = os.environ
    if "WORLD_SIZE" in env:
        return int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    for rank, size, local_rank in MPI_VARIABLES:
        if size in env:
            return int(env.get(rank, 0)), int(env[size]), int(env.get(local_rank, 0))
    if "SLURM_ARRAY_TASK_COUNT" in env:
        task = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        return task, int(env["SLURM_ARRAY_TASK_COUNT"]), 0
    if int(env.get("SLURM_NTASKS", 1)) > 1:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def output_folder(text: str) -> str:
    """A folder to write into: absent (it is created) or a folder, never an existing file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder to write into")
    return text
