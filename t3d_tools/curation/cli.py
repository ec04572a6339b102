"""The curation commands' shared entry: ``fire`` over a command table, input problems as one line."""

from __future__ import annotations

import sys
from collections.abc import Callable

import fire

from custom.errors import DataError


def run_commands(commands: dict[str, Callable]) -> None:
    """``fire.Fire(commands)``; a :class:`DataError` is printed as ``error: ...`` (the last line) and exits 1."""
    try:
        fire.Fire(commands)
    except DataError as err:  # input problems are one line for the user, not a traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
