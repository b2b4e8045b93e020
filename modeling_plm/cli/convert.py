"""`plm convert FAMILY SOURCE DESTINATION`: one subcommand per registered converter (`esm2`, `to-esm2`, ...; see
`modeling_plm.hub.convert.CONVERTERS`)."""

import argparse

from ..hub.convert import CONVERTERS

HELP = "convert checkpoints between other model families (ESM-2) and modeling_plm"
PARSER_OPTIONS = {
    "formatter_class": argparse.RawDescriptionHelpFormatter,
    "epilog": (
        "examples:\n"
        "  plm convert esm2 ./esm2_t6_8M_UR50D ./esm2-8m-plm       # a local folder laid out like facebook/esm2_*\n"
        "  plm convert esm2 facebook/esm2_t6_8M_UR50D ./esm2-8m-plm  # a hub id, when online\n"
        "  plm convert to-esm2 ./esm2-8m-plm ./esm2-8m-esm          # back to transformers' EsmForMaskedLM"
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    directions = parser.add_subparsers(dest="direction", required=True)
    for name, converter in CONVERTERS.items():
        direction = directions.add_parser(name, help=converter.help)
        direction.add_argument("source", help=converter.source_help)
        direction.add_argument("destination", help=converter.destination_help)


def run(args: argparse.Namespace) -> int:
    print(f"Wrote {CONVERTERS[args.direction].convert(args.source, args.destination)}")
    return 0
