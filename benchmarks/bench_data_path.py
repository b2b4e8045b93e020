"""The data path alone (no model): tokens/s of collated MLM micro-batches per DataLoader worker, for FASTA and for
parquet shards, through the sharded path (`data.sharded`), and FASTA through the in-process `ProteinStream` batcher.

Beside it, what a training step consumes at the 150M shape on one H100 (bf16 dense peak 989 TFLOP/s) at 40% and 50%
MFU, from the exact FLOP count of `training.flops` on 1,024-token packed rows, and the workers that takes. That is a
projection until `bench_gpu.py` measures the step on a GPU (its JSON reports tokens/s).

    python benchmarks/bench_data_path.py                      # 0, 1 and 2 workers, 300 micro-batches each
    python benchmarks/bench_data_path.py --workers 0 4 --batches 1000
"""

import argparse
import math
import tempfile
import time
from pathlib import Path

from common import SWISSPROT_SAMPLE, report

from modeling_plm import PLMTokenizerFast
from modeling_plm.cli.shard import fasta_to_parquet
from modeling_plm.data import DataSource, ProteinStream
from modeling_plm.data.collators import build_collator
from modeling_plm.data.fasta import find_data_dir
from modeling_plm.data.sharded import BatchRules, ShardedBatcher, ShardedStreamConfig
from modeling_plm.training.flops import training_flops
from modeling_plm.training.presets import config_from_preset

BATCH_SIZE, CROP, BUFFER = 16, 510, 2000
H100_BF16_PEAK, PACK_LENGTH, CONSUMER_PRESET = 989.4e12, 1024, "esm2_150m"


def tokens_of(batch) -> int:
    return int(batch["attention_mask"].sum())


def sharded_rate(source: str, collator, workers: int, batches: int) -> float:
    config = ShardedStreamConfig([DataSource(source)], crop_length=CROP, shuffle_buffer=BUFFER)
    batcher = ShardedBatcher(config, BatchRules(BATCH_SIZE), collator, phase_seed=0, num_workers=workers)
    batcher.next_collated()  # worker start-up and the first window are not the steady state
    started, tokens = time.perf_counter(), 0
    for _ in range(batches):
        tokens += tokens_of(batcher.next_collated())
    return tokens / (time.perf_counter() - started)


def in_process_fasta_rate(fasta: str, collator, batches: int) -> float:
    sequences = iter(ProteinStream([DataSource(fasta)], crop_length=CROP, shuffle_buffer=BUFFER))
    collator([next(sequences) for _ in range(BATCH_SIZE)], 0)
    started, tokens = time.perf_counter(), 0
    for index in range(batches):
        tokens += tokens_of(collator([next(sequences) for _ in range(BATCH_SIZE)], index))
    return tokens / (time.perf_counter() - started)


def gpu_consumption(worker_rates: dict[str, float]) -> list[dict]:
    """Tokens/s one H100 step eats at the 150M shape (packed rows, bidirectional attention), and the DataLoader
    workers of each format (at its one-worker rate) that feed it."""
    config = config_from_preset(CONSUMER_PRESET)
    flops_per_token = training_flops(config, [PACK_LENGTH], "bidirectional") / PACK_LENGTH
    rows = []
    for mfu in (0.4, 0.5):
        consumed = mfu * H100_BF16_PEAK / flops_per_token
        row = {"shape": CONSUMER_PRESET, "mfu": mfu, "training_flops_per_token": flops_per_token}
        row["consumed_tokens_per_s"] = consumed
        row.update({f"{label}_workers_needed": math.ceil(consumed / rate) for label, rate in worker_rates.items()})
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--shard-size", type=int, default=5000)
    args = parser.parse_args()
    data_dir = find_data_dir(Path(__file__).parent)
    if data_dir is None:
        raise SystemExit("shared data not found: set PLM_DATA_DIR")
    fasta = str(data_dir / SWISSPROT_SAMPLE)
    collator = build_collator("mlm", PLMTokenizerFast(), pack_length=None, mask_ratio=0.15)
    rows = [
        {
            "format": "fasta",
            "path": "ProteinStream (in the training step)",
            "workers": 0,
            "tokens_per_s": in_process_fasta_rate(fasta, collator, args.batches),
        }
    ]
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "sprot"
        fasta_to_parquet(fasta, corpus, shard_size=args.shard_size, progress=False)
        for label, source in (("fasta", fasta), ("parquet", str(corpus))):
            for workers in args.workers:
                if label == "fasta" and workers > 1:
                    continue  # one FASTA file is one shard: one worker at most
                rate = sharded_rate(source, collator, workers, args.batches)
                rows.append({"format": label, "path": "data.sharded", "workers": workers, "tokens_per_s": rate})
    for row in rows:
        row["tokens_per_s_per_worker"] = row["tokens_per_s"] / max(1, row["workers"])
    worker_rates = {row["format"]: row["tokens_per_s"] for row in rows if row["workers"] == 1}
    consumption = gpu_consumption(worker_rates)
    for row in consumption:
        needed = ", ".join(f"{row[f'{label}_workers_needed']} {label}" for label in worker_rates)
        print(
            f"{row['shape']} on one H100 at {row['mfu']:.0%} MFU eats {row['consumed_tokens_per_s']:,.0f} tokens/s: "
            f"workers needed: {needed}"
        )
    extra = {"batch_size": BATCH_SIZE, "crop_length": CROP, "corpus": SWISSPROT_SAMPLE, "gpu_consumption": consumption}
    report("data_path", rows, extra)


if __name__ == "__main__":
    main()
