"""`plm scaling plan | fit | validate | sweep`."""

HELP = "compute-optimal planning, scaling-law fits and sweeps (see: plm scaling --help)"


def main(argv: list[str]) -> int:
    from ..scaling.cli import main as scaling_main

    return scaling_main(argv)
