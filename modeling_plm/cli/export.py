"""`plm export CHECKPOINT OUTPUT_DIR [--push REPO]`: a self-contained hub folder with a model card."""

import argparse

from ..hub.export import EXPORT_HELP as HELP
from ..hub.export import add_export_arguments as add_arguments

__all__ = ["HELP", "add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from ..hub.export import run_export

    return run_export(args)
