"""`plm generate MODEL`: sampling, or GLM span infilling with `--infill`; writes FASTA."""

import argparse

from ..inference.generation import add_generate_arguments as add_arguments

HELP = "generate sequences or fill GLM spans (<smask>/<gmask>); writes FASTA"
__all__ = ["HELP", "add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from ..inference.generation import run_generate

    return run_generate(args)
