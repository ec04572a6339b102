"""Refuse command-line overrides of config ids that no config file defines.

``python -m monai.bundle run --config_file configs/train.json --max_epoch 1`` silently adds a new id ``max_epoch``
that nothing reads, and trains for the configured ``max_epochs``. :func:`check_overrides` (an ``initialize`` item
of every bundle config) reads the ``--id value`` pairs of the ``monai.bundle run`` command line, loads the config
files it names, and raises :class:`UnknownOverrideError` naming the closest existing id. Ids inside a list or a
component that exists (``prepare_data#synthetic_pairs#shape``, a new keyword of a ``_target_``) are accepted.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence

from monai.bundle import ConfigParser

__all__ = ["RUN_ARGUMENTS", "UnknownOverrideError", "check_overrides", "command_line_overrides"]

#: ``monai.bundle run`` arguments that are not config ids
RUN_ARGUMENTS = frozenset(
    {"config_file", "meta_file", "logging_file", "args_file", "run_id", "init_id", "final_id", "tracking", "runner_id"}
)


class UnknownOverrideError(ValueError):
    """An override names a config id that is in none of the config files."""


def command_line_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(config_files, override_ids)`` of a ``monai.bundle run`` command line; empty when it is not one."""
    args = list(argv)
    if "run" not in args:
        return [], []
    args = args[args.index("run") + 1 :]
    files: list[str] = []
    ids: list[str] = []
    for position, token in enumerate(args):
        if not token.startswith("--"):
            continue
        key, _, inline = token[2:].partition("=")
        key = key.replace("-", "_") if key in {k.replace("_", "-") for k in RUN_ARGUMENTS} else key
        if key == "config_file":
            value = inline or (args[position + 1] if position + 1 < len(args) else "")
            files = _file_list(value)
        elif key not in RUN_ARGUMENTS:
            ids.append(key)
    return files, ids


def _file_list(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return [v.strip().strip("'\"") for v in value.strip("[]").split(",") if v.strip()]
    return [v.strip() for v in value.split(",") if v.strip()]


def _all_ids(config: object, prefix: str = "") -> list[str]:
    ids = []
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return ids
    for key, value in items:
        full = f"{prefix}#{key}" if prefix else str(key)
        ids.append(full)
        ids.extend(_all_ids(value, full))
    return ids


def check_overrides(argv: Sequence[str] | None = None) -> bool:
    """Raise :class:`UnknownOverrideError` for the first override id that no config file defines; True otherwise."""
    files, ids = command_line_overrides(sys.argv if argv is None else argv)
    if not files or not ids:
        return True
    parser = ConfigParser()
    parser.read_config(files)
    known = _all_ids(parser.get())
    known_set = set(known)
    for override in ids:
        if override in known_set:
            continue
        parent = override.rsplit("#", 1)[0] if "#" in override else ""
        if parent in known_set and isinstance(parser[parent], (dict, list)):
            continue  # a new keyword of an existing component, or an element of an existing list
        close = difflib.get_close_matches(override, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownOverrideError(
            f"--{override}: expected a config id defined in {', '.join(files)}, found none{hint}"
        )
    return True
