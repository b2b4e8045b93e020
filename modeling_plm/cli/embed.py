"""`plm embed MODEL FASTA OUTPUT_DIR`: bulk embeddings into resumable safetensors shards."""

import argparse
import json

from transformers import AutoModel

from ..data.residues import INVALID_RESIDUE_POLICIES
from ..hub.loading import load_pretrained, load_tokenizer
from ..inference.embedding import POOLING_METHODS, STORAGE_DTYPES, embed_fasta
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

read them back:
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


def run(args: argparse.Namespace) -> int:
    """`plm embed`: load the model and tokenizer, run `embed_fasta`, print the summary. Returns the exit status."""
    load_kwargs = {"dtype": STORAGE_DTYPES[args.model_dtype]} if args.model_dtype else {}
    tokenizer = load_tokenizer(args.model)
    model = load_pretrained(AutoModel, args.model, **load_kwargs).to(options.default_device(args.device)).eval()
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
    )
    print(json.dumps(summary, indent=2))
    return 0
