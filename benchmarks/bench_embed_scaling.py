"""Bulk-embedding scaling on one machine: `plm embed` over the same real Swiss-Prot sequences as 1 process x 1 thread,
1 process x 2 threads and 2 processes x 1 thread (torchrun), and whether the three outputs are identical.

The model is a random ESM-2 8M-shaped network converted to modeling_plm (`common.esm_twin_folders`, as
bench_embedding.py uses). Each run is a fresh `plm embed` command, so `wall_s` includes starting Python and loading
the model; `embed_s` is embed_fasta's own time (the slowest process's), and residues/s is given for both. The shard
size defaults to a tenth of the records so that two processes get about the same work (shard k goes to process k % 2).

    python benchmarks/bench_embed_scaling.py                      # 2,000 sequences
    python benchmarks/bench_embed_scaling.py --sequences 300
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import esm_twin_folders, report, swissprot_sequences

from modeling_plm.inference.embedding import load_embeddings

# (name, processes, threads per process)
CONFIGURATIONS = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)]


def embed_command(processes: int, log_dir: Path) -> list[str]:
    """`plm embed` as one process, or under torchrun with each rank's stdout in its own file under `log_dir`."""
    if processes == 1:
        return [sys.executable, "-m", "modeling_plm", "embed"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    return [*torchrun, "--log-dir", str(log_dir), "--redirects", "1", "-m", "modeling_plm", "embed"]


def run_embed(model: Path, fasta: Path, output: Path, processes: int, threads: int, flags: list[str]) -> dict:
    """One `plm embed` run: its wall time and the slowest process's embed_fasta seconds."""
    log_dir = output.with_name(output.name + "-logs")
    command = [*embed_command(processes, log_dir), str(model), str(fasta), str(output), *flags, "--no-progress"]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    outputs = [completed.stdout] if processes == 1 else [path.read_text() for path in log_dir.rglob("stdout.log")]
    summaries = [json.loads(text) for text in outputs]
    if len(summaries) != processes:
        raise RuntimeError(f"expected {processes} summaries, found {len(summaries)} (under {log_dir})")
    return {"wall_s": wall, "embed_s": max(summary["seconds"] for summary in summaries)}


def store_bytes(folder: Path) -> dict[str, bytes]:
    """The shards and the merged manifest (the per-process manifests are the only files a one-process run lacks)."""
    return {path.name: path.read_bytes() for path in folder.iterdir() if not path.name.startswith("manifest.rank-")}


def max_difference(got: Path, want: Path) -> float:
    worst = 0.0
    for mine, theirs in zip(load_embeddings(got), load_embeddings(want), strict=True):
        assert (mine.index, mine.id) == (theirs.index, theirs.id)
        worst = max(worst, float(np.abs(mine.arrays["mean"] - theirs.arrays["mean"]).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=None, help="records per shard (default: a tenth)")
    parser.add_argument("--token-budget", type=int, default=8192)
    args = parser.parse_args()
    sequences = swissprot_sequences(args.sequences)
    residues = sum(map(len, sequences))
    shard_size = args.shard_size or max(1, len(sequences) // 10)
    flags = ["--pooling", "mean", "--shard-size", str(shard_size), "--token-budget", str(args.token_budget)]

    rows, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, model = esm_twin_folders("esm2_8m", tmp / "model")
        fasta = tmp / "sequences.fasta"
        fasta.write_text("".join(f">seq{index}\n{sequence}\n" for index, sequence in enumerate(sequences)))
        for name, processes, threads in CONFIGURATIONS:
            output = tmp / f"out-{processes}x{threads}"
            timing = run_embed(model, fasta, output, processes, threads, flags)
            outputs[name] = output
            baseline = outputs[CONFIGURATIONS[0][0]]
            rows.append(
                {
                    "configuration": name,
                    "processes": processes,
                    "threads_per_process": threads,
                    "wall_s": timing["wall_s"],
                    "embed_s": timing["embed_s"],
                    "residues_per_s": residues / timing["embed_s"],
                    "residues_per_s_wall": residues / timing["wall_s"],
                    "identical_to_1x1": store_bytes(output) == store_bytes(baseline),
                    "max_abs_diff_mean": max_difference(output, baseline),
                }
            )
    report(
        "embed_scaling",
        rows,
        {
            "shape": "esm2_8m",
            "sequences": len(sequences),
            "residues": residues,
            "shard_size": shard_size,
            "token_budget": args.token_budget,
            "cpu_cores": os.cpu_count(),
            "load_average_at_end": round(os.getloadavg()[0], 2),
        },
    )


if __name__ == "__main__":
    main()
