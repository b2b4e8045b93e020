"""Bulk embedding survives a kill: embed a FASTA, SIGKILL the job once about half the shards are written, resume it,
and compare with an uninterrupted run (record indices, ids, arrays and shard bytes).

    python benchmarks/bulk_embed_resume.py runs/demo/final                          # the 50k Swiss-Prot sample
    python benchmarks/bulk_embed_resume.py runs/demo/final --fasta small.fasta --shard-size 100
"""

import argparse
import filecmp
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SWISSPROT_SAMPLE, report

from modeling_plm.data.fasta import find_data_dir
from modeling_plm.inference.embedding import load_embeddings


def embed_command(model: str, fasta: str, output: Path, shard_size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "modeling_plm.cli",
        "embed",
        model,
        fasta,
        str(output),
        "--pooling",
        "mean",
        "max",
        "bos",
        "--shard-size",
        str(shard_size),
        "--no-progress",
    ]


def complete_shards(output: Path) -> int:
    manifest = output / "manifest.jsonl"
    return manifest.read_text().count('"shard"') if manifest.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--fasta", default=None, help="default: the shared 50k Swiss-Prot sample")
    parser.add_argument("--shard-size", type=int, default=5000)
    parser.add_argument("--kill-after-shards", type=int, default=5)
    args = parser.parse_args()
    fasta = args.fasta or str(find_data_dir(Path(__file__).parent) / SWISSPROT_SAMPLE)
    with tempfile.TemporaryDirectory() as tmp:
        killed, full = Path(tmp) / "killed", Path(tmp) / "full"
        start = time.perf_counter()
        job = subprocess.Popen(embed_command(args.model, fasta, killed, args.shard_size))
        while complete_shards(killed) < args.kill_after_shards and job.poll() is None:
            time.sleep(1)
        time.sleep(5)  # inside the next shard
        job.send_signal(signal.SIGKILL)
        job.wait()
        killed_seconds = time.perf_counter() - start
        shards_at_kill = complete_shards(killed)
        start = time.perf_counter()
        subprocess.run(embed_command(args.model, fasta, killed, args.shard_size), check=True)
        resume_seconds = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(embed_command(args.model, fasta, full, args.shard_size), check=True)
        full_seconds = time.perf_counter() - start

        resumed_records = list(load_embeddings(killed))
        full_records = list(load_embeddings(full))
        indices = [r.index for r in resumed_records]
        same_arrays = all(
            a.index == b.index
            and a.id == b.id
            and a.arrays.keys() == b.arrays.keys()
            and all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
            for a, b in zip(resumed_records, full_records)
        )
        shard_files = sorted(p.name for p in full.glob("embeddings-*.safetensors"))
        same_bytes = all(filecmp.cmp(killed / name, full / name, shallow=False) for name in shard_files)
        summary = json.loads((killed / "manifest.jsonl").read_text().splitlines()[-1]).get("summary", {})
    report(
        "bulk_embed_resume",
        [
            {"run": "killed", "seconds": killed_seconds, "complete_shards": shards_at_kill},
            {"run": "resumed", "seconds": resume_seconds, "complete_shards": len(shard_files)},
            {"run": "uninterrupted", "seconds": full_seconds, "complete_shards": len(shard_files)},
        ],
        {
            "records": len(resumed_records),
            "unique_indices": len(set(indices)),
            "indices_are_0_to_n": indices == list(range(len(indices))),
            "identical_arrays": same_arrays,
            "identical_shard_bytes": same_bytes,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
