"""`plm embed MODEL FASTA OUTPUT_DIR`: bulk embeddings into resumable safetensors shards."""

import argparse

from ..inference.embedding import EMBED_HELP as HELP
from ..inference.embedding import add_embed_arguments as add_arguments

__all__ = ["HELP", "add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from ..inference.embedding import run_embed

    return run_embed(args)
