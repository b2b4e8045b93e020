"""`plm eval proteingym | probe | contacts MODEL ...`: the field's benchmarks in one command each. The subcommands
live in `cli/eval_<name>.py`; the work in `modeling_plm.evaluation`."""

import argparse
import importlib

from . import options
from .main import run_command

HELP = "benchmarks: ProteinGym zero-shot variant effects, frozen-embedding probes, contacts (see: plm eval --help)"
BENCHMARKS = ("proteingym", "probe", "contacts")
EXAMPLES = """examples:
  plm eval proteingym runs/demo/final --data ../shared/data/proteingym_singles --output-dir evals/demo
  plm eval probe runs/demo/final --task deeploc --output-dir evals/demo
  plm eval contacts runs/demo/final --data ../shared/data/structures --output-dir evals/demo
  plm export runs/demo/final exports/plm-demo --eval-results evals/demo/*_model_index.json

Each writes OUTPUT_DIR/<benchmark>_results.json (everything), <benchmark>_results.md (the tables) and
<benchmark>_model_index.json (for the model card). Rerunning with the same OUTPUT_DIR resumes: finished work is kept.
"""


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --model-dtype and --no-progress, the same for every benchmark."""
    from ..inference.embedding import STORAGE_DTYPES

    parser.add_argument(
        "--device", type=options.device, default=None, help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument("--model-dtype", choices=list(STORAGE_DTYPES), default=None, help="default: as saved")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def load_model(args: argparse.Namespace, auto_class) -> tuple:
    """(model in eval mode on --device in --model-dtype, tokenizer) of the positional MODEL."""
    from ..hub.loading import load_pretrained, load_tokenizer
    from ..inference.embedding import STORAGE_DTYPES

    load_kwargs = {"dtype": STORAGE_DTYPES[args.model_dtype]} if args.model_dtype else {}
    model = load_pretrained(auto_class, args.model, **load_kwargs).to(options.default_device(args.device)).eval()
    return model, load_tokenizer(args.model)


def benchmark_module(name: str):
    return importlib.import_module(f"{__package__}.eval_{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plm eval", description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    benchmarks = parser.add_subparsers(dest="benchmark", required=True)
    for name in BENCHMARKS:
        module = benchmark_module(name)
        module.add_arguments(
            benchmarks.add_parser(name, help=module.HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"eval {args.benchmark}", lambda: benchmark_module(args.benchmark).run(args))
