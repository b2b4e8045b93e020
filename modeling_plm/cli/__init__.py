"""The `plm` command: one module per subcommand; `main` dispatches."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
