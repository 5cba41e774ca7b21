"""The ``sparqforge`` command line (``sparqforge --help``)."""

__all__ = ["main", "build_parser"]

from .main import build_parser, main
