"""What every bundle run does first: one-line errors as the last line printed, and no silently ignored overrides."""

from __future__ import annotations

from custom.runtime.errors import install_error_hook
from custom.runtime.overrides import check_overrides

__all__ = ["start_run"]


def start_run() -> bool:
    """The first ``initialize`` item of every bundle config: install the one-line error hook, then refuse
    command-line overrides of ids that no config file defines. Returns True (a config component's value)."""
    install_error_hook()
    return check_overrides()
