"""Argument types shared by the commands: a bad value is an argparse usage error (exit 2) that names the flag."""

import argparse
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


def default_device(choice: str | None) -> str:
    """The device a command runs on: the one given, else CUDA when available, else the CPU."""
    return choice or ("cuda" if torch.cuda.is_available() else "cpu")


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
