"""`plm convert FAMILY SOURCE DESTINATION`: one subcommand per registered converter (`esm2`, `to-esm2`, ...; see
`modeling_plm.hub.convert.CONVERTERS`)."""

import argparse

from ..hub.convert import CONVERTERS

HELP = "convert checkpoints of other families (ESM-2, ESM C, ProGen2, RITA, AMPLIFY, xTrimoPGLM, Ankh/ProtT5) and back"
PARSER_OPTIONS = {
    "formatter_class": argparse.RawDescriptionHelpFormatter,
    "epilog": (
        "examples:\n"
        "  plm convert esm2 ./esm2_t6_8M_UR50D ./esm2-8m-plm       # a local folder laid out like facebook/esm2_*\n"
        "  plm convert esm2 facebook/esm2_t6_8M_UR50D ./esm2-8m-plm  # a hub id, when online\n"
        "  plm convert to-esm2 ./esm2-8m-plm ./esm2-8m-esm          # back to transformers' EsmForMaskedLM\n"
        "  plm convert esmc biohub/ESMC-300M ./esmc-300m-plm\n"
        "  plm convert progen2 hugohrban/progen2-small ./progen2-small-plm   # then: plm generate ./progen2-small-plm\n"
        "  plm convert rita lightonai/RITA_s ./rita-s-plm\n"
        "  plm convert amplify chandar-lab/AMPLIFY_120M ./amplify-120m-plm\n"
        "  plm convert xtrimopglm biomap-research/proteinglm-1b-mlm ./proteinglm-1b-mlm-plm\n"
        "  plm convert t5 Rostlab/prot_t5_xl_uniref50 ./prott5-plm         # encoders: Ankh and ProtT5"
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
