"""`plm score MODEL`: sequence likelihoods and zero-shot variant effects."""

import argparse

from ..inference.scoring import SCORE_HELP as HELP
from ..inference.scoring import add_score_arguments as add_arguments

__all__ = ["HELP", "add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from ..inference.scoring import run_score

    return run_score(args)
