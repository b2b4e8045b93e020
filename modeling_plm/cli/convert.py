"""`plm convert esm2 SRC DST` and `plm convert to-esm2 SRC DST`."""

import argparse

HELP = "convert checkpoints between transformers' ESM-2 and modeling_plm"
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
    to_plm = directions.add_parser("esm2", help="ESM-2 checkpoint (folder or hub id) -> modeling_plm checkpoint")
    to_plm.add_argument("source", help="folder with config.json, model.safetensors or pytorch_model.bin, vocab.txt")
    to_plm.add_argument("destination", help="output folder (safetensors, config, remote code, tokenizer)")
    to_esm = directions.add_parser("to-esm2", help="modeling_plm checkpoint -> transformers ESM-2 checkpoint")
    to_esm.add_argument("source", help="a modeling_plm checkpoint folder whose architecture ESM-2 can express")
    to_esm.add_argument("destination", help="output folder (EsmForMaskedLM safetensors, config, vocab.txt)")


def run(args: argparse.Namespace) -> int:
    from ..hub.convert import convert_esm2, convert_plm_to_esm2

    convert = convert_esm2 if args.direction == "esm2" else convert_plm_to_esm2
    print(f"Wrote {convert(args.source, args.destination)}")
    return 0
