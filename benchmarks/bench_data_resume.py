"""Resume time against position: the sharded parquet path (a stored state) vs the FASTA `ProteinStream` (a replay).

The 50k Swiss-Prot sample is written as parquet shards (`plm shard`); a stream is advanced to each position, its
state is taken, and a fresh stream is timed from load_state_dict to its first batch (best of --repeats).

    python benchmarks/bench_data_resume.py                       # positions 10, 100, 1000, 5000 micro-batches
    python benchmarks/bench_data_resume.py --positions 10 1000 --shard-size 5000
"""

import argparse
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

BATCH_SIZE, CROP, BUFFER, SEED = 16, 510, 2000, 0


def sharded(corpus: Path, collator) -> ShardedBatcher:
    config = ShardedStreamConfig([DataSource(str(corpus))], seed=SEED, crop_length=CROP, shuffle_buffer=BUFFER)
    return ShardedBatcher(config, BatchRules(BATCH_SIZE), collator, phase_seed=SEED)


def fasta_stream(fasta: Path) -> ProteinStream:
    return ProteinStream([DataSource(str(fasta))], seed=SEED, crop_length=CROP, shuffle_buffer=BUFFER)


def time_sharded(corpus: Path, collator, position: int, repeats: int) -> float:
    run = sharded(corpus, collator)
    for _ in range(position):
        run.next_collated()
    state, best = run.state_dict(), float("inf")
    for _ in range(repeats):
        resumed = sharded(corpus, collator)
        started = time.perf_counter()
        resumed.load_state_dict(state)
        resumed.next_collated()
        best = min(best, time.perf_counter() - started)
    return best


def time_fasta(fasta: Path, position: int, repeats: int) -> float:
    state = {**fasta_stream(fasta).state_dict(), "consumed": position * BATCH_SIZE}
    best = float("inf")
    for _ in range(repeats):
        resumed = fasta_stream(fasta)
        started = time.perf_counter()
        resumed.load_state_dict(state)
        iterator = iter(resumed)
        for _ in range(BATCH_SIZE):
            next(iterator)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, nargs="+", default=[10, 100, 1000, 5000], help="micro-batches")
    parser.add_argument("--shard-size", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data_dir = find_data_dir(Path(__file__).parent)
    if data_dir is None:
        raise SystemExit("shared data not found: set PLM_DATA_DIR")
    fasta = data_dir / SWISSPROT_SAMPLE
    collator = build_collator("mlm", PLMTokenizerFast(), pack_length=None, mask_ratio=0.15)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "sprot"
        fasta_to_parquet(fasta, corpus, shard_size=args.shard_size, progress=False)
        for position in args.positions:
            rows.append(
                {
                    "position_micro_batches": position,
                    "sequences": position * BATCH_SIZE,
                    "parquet_sharded_resume_s": time_sharded(corpus, collator, position, args.repeats),
                    "fasta_replay_resume_s": time_fasta(fasta, position, args.repeats),
                }
            )
    extra = {
        "batch_size": BATCH_SIZE,
        "shuffle_buffer": BUFFER,
        "shard_size": args.shard_size,
        "corpus": SWISSPROT_SAMPLE,
    }
    report("data_resume", rows, extra)


if __name__ == "__main__":
    main()
