"""Refuse command-line overrides of config ids that no config file defines.

``python -m monai.bundle run --config_file configs/train.json --max_epoch 1`` silently adds a new id ``max_epoch``
that nothing reads, and trains for the configured ``max_epochs``. :func:`check_overrides` (an ``initialize`` item
of every bundle config) reads the ``--id value`` pairs of the ``monai.bundle run`` command line, loads the config
files it names, and raises :class:`UnknownOverrideError` naming the closest existing id. Ids inside a list or a
plain dict that exists (``prepare_data#synthetic_pairs#shape``) are accepted; a new keyword of a component must be
a parameter of its ``_target_`` (``--train#trainer#epoch_lenght 2`` is refused, naming ``epoch_length``).

Values are held to the configured one's form (:func:`check_override_value`): a number where the config has a number
(``--max_epochs one``), ``true``/``false`` where it has a bool, a list of the configured length where it has a list
of numbers (``--roi_size [32,32]`` for a 3D ``roi_size``); ``$`` expressions and ``@`` references are not judged.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Sequence

from monai.bundle import ConfigParser

from custom.errors import OneLineError

__all__ = [
    "RUN_ARGUMENTS",
    "UnknownOverrideError",
    "check_overrides",
    "check_override_value",
    "command_line_overrides",
    "command_line_values",
]

#: ``monai.bundle run`` arguments that are not config ids
RUN_ARGUMENTS = frozenset(
    {"config_file", "meta_file", "logging_file", "args_file", "run_id", "init_id", "final_id", "tracking", "runner_id"}
)


class UnknownOverrideError(OneLineError, ValueError):
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


def command_line_values(argv: Sequence[str]) -> dict[str, str]:
    """``{override id: its value as typed}`` of a ``monai.bundle run`` command line (``--id value``, ``--id=value``)."""
    args = list(argv)
    if "run" not in args:
        return {}
    args = args[args.index("run") + 1 :]
    values = {}
    for position, token in enumerate(args):
        if not token.startswith("--"):
            continue
        key, equals, inline = token[2:].partition("=")
        if key in RUN_ARGUMENTS:
            continue
        if equals:
            values[key] = inline
        elif position + 1 < len(args) and not args[position + 1].startswith("--"):
            values[key] = args[position + 1]
    return values


def _parsed(text: str) -> object:
    """The value as ``monai.bundle run`` (python-fire) parses it."""
    from fire.parser import DefaultParseValue

    try:
        return DefaultParseValue(text)
    except Exception:  # noqa: BLE001 - fire keeps what it cannot parse as the string
        return text


#: values an id takes besides its configured type's (``--resume force``: see ``ResumableCheckpoint``)
_ALSO_ACCEPTED = {"resume": ("force",)}


def check_override_value(key: str, typed: str, configured: object) -> None:
    """Raise :class:`UnknownOverrideError` when ``typed`` (the command-line text) is not of ``configured``'s form."""
    if isinstance(configured, str) and configured.startswith(("$", "@", "%")):
        return  # an expression or reference: its type is known only once evaluated
    value = _parsed(typed)
    if value in _ALSO_ACCEPTED.get(key, ()):
        return
    if isinstance(value, str) and value.startswith(("$", "@", "%")):
        return
    expected = None
    if isinstance(configured, bool):
        if not isinstance(value, bool):
            expected = f"true or false (the configured {configured})"
    elif isinstance(configured, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            expected = f"a number (the configured {configured})"
        elif isinstance(configured, int) and isinstance(value, float) and not value.is_integer():
            expected = f"a whole number (the configured {configured})"
    elif (
        isinstance(configured, list)
        and configured
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in configured)
    ):
        if not isinstance(value, (list, tuple)):
            expected = f"a list of {len(configured)} numbers (the configured {configured})"
        elif len(value) != len(configured):
            expected = f"a list of {len(configured)} numbers (the configured {configured}), not {len(value)}"
        elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            expected = f"numbers (the configured {configured})"
    if expected:
        raise UnknownOverrideError(f"--{key} {typed}: expected {expected}, found {value!r}")


def _target_parameters(component: dict) -> list[str] | None:
    """The keyword names a component's ``_target_`` accepts, or None when it takes any (``**kwargs``) or cannot be
    located here."""
    from pydoc import locate

    from monai.bundle.config_item import ComponentLocator

    target = component.get("_target_")
    if not isinstance(target, str) or target.startswith(("$", "@", "%")):
        return None
    try:
        module = ComponentLocator().get_component_module_name(target)  # "SwinUNETR" -> "monai.networks.nets"
        callable_ = locate(f"{module}.{target}" if isinstance(module, str) else target)
        signature = inspect.signature(callable_)
    except Exception:  # noqa: BLE001 - an unlocatable target: MONAI reports it when it instantiates
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return [p for p in signature.parameters if p != "self"]


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
    argv = sys.argv if argv is None else argv
    files, ids = command_line_overrides(argv)
    if not files or not ids:
        return True
    parser = ConfigParser()
    parser.read_config(files)
    known = _all_ids(parser.get())
    known_set = set(known)
    values = command_line_values(argv)
    for override in ids:
        if override in known_set:
            if override in values:
                check_override_value(override, values[override], parser[override])
            continue
        parent = override.rsplit("#", 1)[0] if "#" in override else ""
        if parent in known_set and isinstance(parser[parent], list):
            continue  # an element of an existing list
        if parent in known_set and isinstance(parser[parent], dict):
            accepted = _target_parameters(parser[parent])
            keyword = override.rsplit("#", 1)[1]
            if accepted is None or keyword in accepted:
                continue  # a plain dict, or a keyword its _target_ takes
            close = difflib.get_close_matches(keyword, accepted, n=1, cutoff=0.6)
            hint = f"; did you mean '{parent}#{close[0]}'?" if close else ""
            raise UnknownOverrideError(
                f"--{override}: expected a parameter of {parser[parent]['_target_']} (at {parent}), found "
                f"'{keyword}'{hint}"
            )
        close = difflib.get_close_matches(override, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownOverrideError(
            f"--{override}: expected a config id defined in {', '.join(files)}, found none{hint}"
        )
    return True
