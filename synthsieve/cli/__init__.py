"""The `synthsieve` command line, one module per command."""

from synthsieve.cli.main import console_main, main

__all__ = ["console_main", "main"]
