"""The `plm` command: one module per subcommand; `main` dispatches."""

from .main import main

__all__ = ["main"]
