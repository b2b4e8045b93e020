"""The `plm` command line: one module per subcommand in this package, and the one place where errors become
messages and exit codes.

A command module defines `HELP` (one line for `plm --help`) and either
- `add_arguments(parser)` and `run(args) -> int`, or
- `main(argv) -> int`, when the command parses its own arguments (a YAML config plus flags, or sub-subcommands).
"""

import argparse
import importlib
import os
import sys

import yaml

COMMANDS = ("pretrain", "finetune", "scaling", "demo", "embed", "generate", "score", "export", "convert")
EXAMPLES = """examples:
  plm pretrain training/configs/demo.yaml && plm demo --model runs/demo/final
  plm demo --preset esm2_8m --num-sequences 16
  plm finetune training/configs/finetune_gb1.yaml
  plm scaling plan --flops 1e21 --objective mlm --transfer
  plm embed runs/demo/final proteins.fasta.gz embeddings/ --pooling mean max
  plm generate runs/demo/final --infill 'MKTAYIAK<smask>SHFSRQ'
  plm score runs/demo/final --sequence MKTAYIAKQR --mutation K2A
  plm export runs/demo/final exports/plm-demo --push my-name/plm-demo
  plm convert esm2 ./esm2_t6_8M_UR50D ./esm2-8m-plm
  plm convert to-esm2 ./esm2-8m-plm ./esm2-8m-back"""
# Errors that describe the user's input or files: a message and exit code 2, no traceback (PLM_DEBUG=1 shows one).
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, yaml.YAMLError)


def command_module(name: str):
    return importlib.import_module(f"{__package__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plm",
        description="Protein language models for the Hugging Face ecosystem.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = command_module(name)
        if hasattr(module, "main"):  # parses its own arguments: `plm NAME --help` lists them
            commands.add_parser(name, help=module.HELP, add_help=False)
        else:
            module.add_arguments(commands.add_parser(name, help=module.HELP, **getattr(module, "PARSER_OPTIONS", {})))
    return parser


def run_command(name: str, call) -> int:
    """Runs one command; a user error becomes `plm NAME: error: ...` on stderr and exit code 2."""
    try:
        return call() or 0
    except KeyboardInterrupt:
        print(f"plm {name}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if os.environ.get("PLM_DEBUG"):
            raise
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        print(f"plm {name}: error: {message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS and hasattr(command_module(argv[0]), "main"):
        return run_command(argv[0], lambda: command_module(argv[0]).main(argv[1:]))
    args = build_parser().parse_args(argv)
    return run_command(args.command, lambda: command_module(args.command).run(args))
