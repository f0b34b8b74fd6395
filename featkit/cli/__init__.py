"""The ``featkit`` command line: the only code that knows flag names."""

from featkit.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
