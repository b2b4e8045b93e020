"""Shared helpers of the benchmarks: real Swiss-Prot sequences, timing, and the result table/JSON."""

import itertools
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from modeling_plm.collators import STANDARD_AMINO_ACIDS
from modeling_plm.data import find_data_dir, read_fasta

RESULTS = Path(__file__).parent / "results"
SWISSPROT_SAMPLE = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
STANDARD = set(STANDARD_AMINO_ACIDS)


def swissprot_sequences(count: int, max_length: int = 1022) -> list[str]:
    """The first `count` sequences of the Swiss-Prot sample that fit ESM-2's context, in file order: a real length
    distribution (median ~300 residues)."""
    data_dir = find_data_dir(Path(__file__).parent)
    if data_dir is None:
        raise FileNotFoundError("shared data not found: set PLM_DATA_DIR")
    records = read_fasta(data_dir / SWISSPROT_SAMPLE)
    keep = (r.sequence for r in records if len(r.sequence) <= max_length and set(r.sequence) <= STANDARD)
    return list(itertools.islice(keep, count))


def best_time(function: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time of `repeats` runs after one warm-up (the minimum is the least noisy estimate)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> dict[str, object]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def report(name: str, rows: list[dict[str, object]], extra: dict[str, object]) -> None:
    """Print a table and write results/<name>.json."""
    keys = list(rows[0])
    widths = [max(len(str(k)), *(len(_fmt(r[k])) for r in rows)) for k in keys]
    print(" | ".join(str(k).ljust(w) for k, w in zip(keys, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(_fmt(row[k]).ljust(w) for k, w in zip(keys, widths)))
    for key, value in extra.items():
        print(f"{key}: {_fmt(value)}")
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "rows": rows, **extra, "machine": machine()}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")


def _fmt(value: object) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)
