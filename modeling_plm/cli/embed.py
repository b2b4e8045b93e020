"""`plm embed MODEL FASTA OUTPUT_DIR`: bulk embeddings into resumable safetensors shards."""

import argparse
import json

from transformers import AutoModel

from ..data.residues import INVALID_RESIDUE_POLICIES
from ..hub.loading import load_pretrained, load_tokenizer
from ..inference.embedding import POOLING_METHODS, STORAGE_DTYPES, embed_fasta
from ..inference.exports import export_embeddings, export_format
from . import options

__all__ = ["HELP", "add_arguments", "run"]

HELP = "embed a FASTA file into safetensors shards (pooled and/or per-residue), resumable"
DESCRIPTION = """\
Embed every record of a FASTA(.gz) file and write safetensors shards (embeddings-00000.safetensors, ...) and
manifest.jsonl to OUT. Tensor names are "{index}/{mean|max|bos|residues}", index being the record's 0-based
position in the file, so duplicate ids are kept (and counted); the manifest maps each index to its id and shard.
A killed run resumes where it stopped when the same command is run again. Sequences longer than the model's
context are embedded in overlapping windows, averaged per residue."""
EPILOG = """examples:
  plm embed runs/demo/final proteins.fasta.gz out/embeddings
  plm embed runs/demo/final proteins.fasta out/emb --pooling mean max bos --layers -1 -2
  plm embed ./esm2-8m-plm proteins.fasta out/per-residue --per-residue --shard-size 1000 --dtype float16
  plm embed runs/demo/final proteins.fasta out/emb --invalid-residues X   # map J, *, digits, ... to X

several processes (each embeds every n-th shard into OUT; the last to finish merges them into manifest.jsonl):
  torchrun --nproc_per_node 4 -m modeling_plm embed runs/demo/final uniref50.fasta.gz out/emb
  sbatch --array=0-15 --wrap "plm embed runs/demo/final uniref50.fasta.gz out/emb"   # one process per array task
  accelerate launch --multi_gpu --num_processes 4 -m modeling_plm embed runs/demo/final uniref50.fasta.gz out/emb
  (on CPUs too: `accelerate launch --cpu` without an MPI hostfile starts one process; the folder keeps its world size)
  plm embed runs/demo/final proteins.fasta out/emb --rank 1 --world-size 4           # by hand

  plm embed runs/demo/final proteins.fasta out/emb --export out/emb.h5        # also one HDF5 file, keyed by id

read them back (the folder, or the exported .h5 / .parquet file):
  from modeling_plm.inference.embedding import load_embeddings
  for index, record_id, arrays in load_embeddings("out/embeddings"): arrays["mean"]  # (H,)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `plm embed`'s arguments (and its description and examples) to a parser or subparser."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = parser.description or DESCRIPTION
    parser.epilog = parser.epilog or EPILOG
    parser.add_argument("model", help="model folder or hub id (any modeling_plm checkpoint; its backbone is used)")
    parser.add_argument("fasta", help="input FASTA or FASTA.gz file")
    parser.add_argument(
        "output_dir", metavar="OUT", type=options.output_folder, help="output folder for shards and manifest.jsonl"
    )
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=[-1],
        help="hidden-state indices (0 = embeddings, -1 = last, after the final norm); several stack on a leading "
        "axis (default: -1)",
    )
    parser.add_argument(
        "--pooling",
        nargs="*",
        choices=POOLING_METHODS,
        default=["mean"],
        help="pooled outputs over residues; none with --per-residue stores per-residue arrays only (default: mean)",
    )
    parser.add_argument("--per-residue", action="store_true", help="also store one row per residue for every record")
    parser.add_argument(
        "--token-budget", type=int, default=8192, help="tokens per forward pass, padding included (default: 8192)"
    )
    parser.add_argument("--shard-size", type=int, default=10_000, help="records per shard (default: 10000)")
    parser.add_argument(
        "--dtype", choices=list(STORAGE_DTYPES), default="float32", help="storage dtype (default: float32)"
    )
    parser.add_argument(
        "--window", type=int, default=None, help="residues per window for long sequences (default: context - 2)"
    )
    parser.add_argument("--stride", type=int, default=None, help="residues between windows (default: window / 2)")
    parser.add_argument(
        "--invalid-residues",
        choices=INVALID_RESIDUE_POLICIES,
        default="error",
        help="characters outside the residue alphabet (gaps, digits, <...>): error (names the record), skip the record "
        "(counted), X (map to X) or drop; a trailing * is always removed (counted)",
    )
    parser.add_argument("--no-resume", action="store_true", help="delete earlier shards/manifest in OUT and restart")
    parser.add_argument(
        "--device", type=options.device, default=None, help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--model-dtype", choices=list(STORAGE_DTYPES), default=None, help="dtype to run the model in (default: saved)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--rank",
        type=int,
        default=None,
        help="this process's part of a multi-process run (default: from torchrun, accelerate or SLURM, else 0)",
    )
    parser.add_argument(
        "--world-size", type=options.positive_int, default=None, help="number of processes (default: as --rank)"
    )
    parser.add_argument(
        "--export",
        metavar="FILE",
        default=None,
        help="also write the finished result as one HDF5 (.h5, keyed by id) or parquet (.parquet) file; in a "
        "multi-process run the process that merges writes it",
    )


def run(args: argparse.Namespace) -> int:
    """`plm embed`: load the model and tokenizer, run `embed_fasta`, print the summary. Returns the exit status."""
    load_kwargs = {"dtype": STORAGE_DTYPES[args.model_dtype]} if args.model_dtype else {}
    rank, world_size, local_rank = options.launch_rank()
    if (args.rank is None) != (args.world_size is None):
        raise ValueError("give --rank and --world-size together (or neither, to take them from the launcher)")
    if args.rank is not None:
        rank, world_size = args.rank, args.world_size
    if args.export:
        export_format(args.export)  # a wrong suffix fails before any work
    tokenizer = load_tokenizer(args.model)
    device = options.default_device(args.device, local_rank)
    model = load_pretrained(AutoModel, args.model, **load_kwargs).to(device).eval()
    summary = embed_fasta(
        model,
        tokenizer,
        args.fasta,
        args.output_dir,
        layers=args.layers[0] if len(args.layers) == 1 else args.layers,
        pooling=args.pooling,
        per_residue=args.per_residue,
        token_budget=args.token_budget,
        shard_size=args.shard_size,
        dtype=args.dtype,
        window=args.window,
        stride=args.stride,
        resume=not args.no_resume,
        progress=not args.no_progress,
        invalid_residues=args.invalid_residues,
        rank=rank,
        world_size=world_size,
    )
    if args.export and summary.get("complete", True):
        summary["export"] = export_embeddings(args.output_dir, args.export)
    print(json.dumps(summary, indent=2))
    return 0
