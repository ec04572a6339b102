"""The checks of a ``--dry_run``: config references that do not resolve, component targets that cannot be imported,
datalists that are not there and text encoders that are neither local nor cached; each check returns one-line
problems, and :class:`DryRunError` carries all of them in one line."""

from __future__ import annotations

import os

from custom.errors import OneLineError

__all__ = ["DryRunError", "resolve_problems", "datalist_problems", "text_encoder_problems"]


class DryRunError(OneLineError, RuntimeError):
    """A ``--dry_run`` found configs that do not resolve or data that is not there (one line says all of it)."""


def resolve_problems(parser, where: str) -> list[str]:
    """References that do not resolve and component targets that cannot be imported, in what ``run`` needs."""
    import pydoc

    from monai.bundle.config_item import ConfigComponent

    problems = []
    try:
        for key in ("initialize", "run"):
            if key in parser:
                parser.get_parsed_content(key, instantiate=False, eval_expr=False)
        parser.get_parsed_content("train#trainer", instantiate=False, eval_expr=False)
    except Exception as err:  # noqa: BLE001 - MONAI raises ValueError/KeyError; one line is what the user needs
        problems.append(f"{where}: config does not resolve ({str(err).splitlines()[0]})")
        return problems
    for key, item in parser.ref_resolver.items.items():
        if isinstance(item, ConfigComponent) and not item.is_disabled():
            name = item.resolve_module_name()
            if not isinstance(name, str) or "." not in name or pydoc.locate(name) is None:
                problems.append(f"{where}: component {key} target {item.get_config().get('_target_')!r} not importable")
    return problems


def datalist_problems(parser, where: str, bundle: str, scale: str) -> list[str]:
    """The datalist ``parser`` resolves to, if it does not resolve or is not a file."""
    try:
        dataset_dir = parser.get_parsed_content("dataset_dir", lazy=False)  # re-parse: evaluate expressions this time
        datalist = parser.get_parsed_content("datalist")
    except Exception as err:  # noqa: BLE001
        return [f"{where}: datalist does not resolve ({str(err).splitlines()[0]})"]
    if not os.path.isfile(str(datalist)):
        hint = f" (pass --data_dir {bundle}=DIR)" if scale == "full" else ""
        return [f"{bundle} datalist not found: {datalist} (dataset_dir {dataset_dir}){hint}"]
    return []


def text_encoder_problems(parser, where: str) -> list[str]:
    """``text_encoder_name``, if it is neither a local folder nor a Hugging Face id in the local cache."""
    name = str(parser.get_parsed_content("text_encoder_name"))
    if os.path.isdir(name):
        return []
    if not name.startswith(("/", ".")) and name.count("/") == 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(name, "config.json"), str):
                return []
        except Exception:  # noqa: BLE001 - no hub library or a malformed id: treat as not cached
            pass
    return [
        f"{where}: text encoder {name!r} is neither a local folder nor in the Hugging Face cache "
        f"(--pretrain_override [ROW:]text_encoder_name=DIR)"
    ]
