"""The `plm` command line."""

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plm",
        description="Protein language models for the Hugging Face ecosystem.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  plm demo\n  plm demo --preset esm2_8m --num-sequences 16",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="build a small model and use it as masked LM, causal LM and GLM infiller on real sequences",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example:\n  plm demo --preset small --fasta my_proteins.fasta.gz --num-sequences 16",
    )
    demo.add_argument("--preset", default="small", help="model preset (see modeling_plm.PRESETS)")
    demo.add_argument("--fasta", default=None, help="FASTA(.gz) of sequences; default: the shared Swiss-Prot sample")
    demo.add_argument("--num-sequences", type=int, default=8)
    demo.add_argument("--max-length", type=int, default=200, help="skip longer sequences")
    demo.add_argument("--output-dir", default="outputs/demo-model")
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.preset, args.fasta, args.num_sequences, args.max_length, args.output_dir, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
