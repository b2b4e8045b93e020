"""`plm shard IN.fasta[.gz] OUT_DIR --shard-size N`: a FASTA file as sharded parquet (columns id, description,
sequence) for the sharded pretraining data path (`--train-file OUT_DIR`, `--num-workers`)."""

import argparse
from pathlib import Path

HELP = "write a FASTA file as sharded parquet (id, description, sequence) for pretraining"
EXAMPLES = """examples:
  plm shard sprot.fasta.gz corpora/sprot --shard-size 50000
  plm shard metagenome.fasta corpora/metagenome --shard-size 10000 --no-description
  plm pretrain training/configs/smoke.yaml --train-file corpora/sprot:3 --train-file corpora/metagenome:1 \\
      --num-workers 4

Each shard is OUT_DIR/shard-NNNNN.parquet. Records are written as read (cleaning happens at training time); a
DataLoader worker (per rank) needs at least one shard of its own, so write at least ranks x workers shards.
"""
PARSER_OPTIONS = {"epilog": EXAMPLES, "formatter_class": argparse.RawDescriptionHelpFormatter}
SHARD_NAME = "shard-{:05d}.parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fasta", help="input FASTA or FASTA.gz")
    parser.add_argument("output_dir", help="folder for the parquet shards (created; must be empty)")
    parser.add_argument("--shard-size", type=int, default=100_000, help="records per shard (default: 100000)")
    parser.add_argument("--row-group-size", type=int, default=10_000, help="records per row group (default: 10000)")
    parser.add_argument("--no-description", action="store_true", help="leave out the FASTA header's description")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in OUTPUT_DIR")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise ImportError("plm shard needs pyarrow: pip install 'modeling_plm[data]'") from error
    return pyarrow


def _write_shard(pa, rows: dict[str, list[str]], path: Path, row_group_size: int) -> None:
    table = pa.table({name: pa.array(values, type=pa.string()) for name, values in rows.items()})
    partial = path.with_suffix(".parquet.partial")
    pa.parquet.write_table(table, partial, row_group_size=row_group_size)
    partial.rename(path)  # a shard is there whole or not at all


def fasta_to_parquet(
    fasta: str | Path,
    output_dir: str | Path,
    shard_size: int = 100_000,
    row_group_size: int = 10_000,
    description: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write the records of `fasta` as parquet shards of `shard_size` records; returns the shard paths."""
    from tqdm.auto import tqdm

    from ..data.fasta import read_fasta

    pa = _pyarrow()
    fasta, output_dir = Path(fasta), Path(output_dir)
    if shard_size < 1 or row_group_size < 1:
        raise ValueError(f"--shard-size and --row-group-size must be at least 1, got {shard_size}, {row_group_size}")
    if fasta.is_dir():
        raise IsADirectoryError(f"{fasta} is a directory, not a FASTA file")
    if not fasta.is_file():
        raise FileNotFoundError(f"{fasta}: no such FASTA file")
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir} is a file, not a folder for the shards")
    existing = sorted(output_dir.glob("shard-*.parquet*")) if output_dir.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds shards ({existing[0].name}, ...): pass --overwrite")
    for path in existing:
        path.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)
    columns = ("id", "description", "sequence") if description else ("id", "sequence")
    rows: dict[str, list[str]] = {name: [] for name in columns}
    shards: list[Path] = []
    for record in tqdm(read_fasta(fasta), desc=f"sharding {fasta.name}", unit=" records", disable=not progress):
        for name in columns:
            rows[name].append(getattr(record, name))
        if len(rows["id"]) >= shard_size:
            shards.append(output_dir / SHARD_NAME.format(len(shards)))
            _write_shard(pa, rows, shards[-1], row_group_size)
            rows = {name: [] for name in columns}
    if rows["id"]:
        shards.append(output_dir / SHARD_NAME.format(len(shards)))
        _write_shard(pa, rows, shards[-1], row_group_size)
    return shards


def run(args: argparse.Namespace) -> int:
    shards = fasta_to_parquet(
        args.fasta,
        args.output_dir,
        shard_size=args.shard_size,
        row_group_size=args.row_group_size,
        description=not args.no_description,
        overwrite=args.overwrite,
    )
    print(f"Wrote {len(shards)} parquet shard(s) to {args.output_dir}")
    return 0
