"""The `plm` command line: one module per subcommand in this package, and the one place where errors become
messages and exit codes.

Exit codes: 0 success; 2 a usage or input error (one line `plm CMD: error: ...` naming the file, record, position or
flag); 3 out of memory (lower the batch size or token budget); 130 interrupted (Ctrl-C); 1 anything else, which is a
bug and shows its traceback. `plm --debug CMD ...` (or PLM_DEBUG=1) shows the traceback of user errors too.

A command module defines `HELP` (one line for `plm --help`) and either
- `add_arguments(parser)` and `run(args) -> int`, or
- `main(argv) -> int`, when the command parses its own arguments (a YAML config plus flags, or sub-subcommands).
"""

import argparse
import importlib
import os
import sys
import traceback

import torch
import yaml

COMMANDS = (
    "pretrain",
    "finetune",
    "scaling",
    "demo",
    "embed",
    "generate",
    "score",
    "eval",
    "export",
    "convert",
    "shard",
)
EXAMPLES = """examples:
  plm pretrain training/configs/demo.yaml && plm demo --model runs/demo/final
  plm demo --preset esm2_8m --num-sequences 16
  plm finetune training/configs/finetune_gb1.yaml
  plm scaling plan --flops 1e21 --objective mlm --transfer
  plm embed runs/demo/final proteins.fasta.gz embeddings/ --pooling mean max
  plm generate runs/demo/final --infill 'MKTAYIAK<smask>SHFSRQ'
  plm score runs/demo/final --sequence MKTAYIAKQR --mutation K2A
  plm eval proteingym runs/demo/final --data ../shared/data/proteingym_singles --output-dir evals/demo
  plm export runs/demo/final exports/plm-demo --push my-name/plm-demo
  plm convert esm2 ./esm2_t6_8M_UR50D ./esm2-8m-plm
  plm convert to-esm2 ./esm2-8m-plm ./esm2-8m-back

exit codes: 0 done, 2 usage or input error (the message names the file, record and field), 3 out of memory,
130 interrupted, 1 a bug (with its traceback). plm --debug CMD ... shows the traceback of any error."""
# Errors that describe the user's input or files: a message and exit code 2, no traceback (--debug shows one). Other
# exceptions (TypeError, KeyError, RuntimeError, ...) are bugs: they keep their traceback.
USER_ERRORS = (ValueError, OSError, yaml.YAMLError)
EXIT_USAGE, EXIT_OUT_OF_MEMORY, EXIT_INTERRUPTED = 2, 3, 130
DEBUG_FLAG, DEBUG_ENV = "--debug", "PLM_DEBUG"


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
        return EXIT_INTERRUPTED
    except torch.OutOfMemoryError as error:
        return report_error(name, f"out of memory ({error}); lower --batch-size or --token-budget", EXIT_OUT_OF_MEMORY)
    except USER_ERRORS as error:
        return report_error(name, str(error), EXIT_USAGE)


def report_error(name: str, message: str, code: int) -> int:
    """One line on stderr, after the traceback under --debug; returns the exit code."""
    if os.environ.get(DEBUG_ENV):
        traceback.print_exc(file=sys.stderr)
    print(f"plm {name}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if DEBUG_FLAG in argv:
        argv = [arg for arg in argv if arg != DEBUG_FLAG]
        os.environ[DEBUG_ENV] = "1"
    if argv and argv[0] in COMMANDS and hasattr(command_module(argv[0]), "main"):
        return run_command(argv[0], lambda: command_module(argv[0]).main(argv[1:]))
    args = build_parser().parse_args(argv)
    return run_command(args.command, lambda: command_module(args.command).run(args))
