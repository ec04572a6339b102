"""The weights a bundle is packed with: they load weights-only and fit the packed ``network_def``.

Before anything is written, the packed ``inference.json``'s ``network_def`` (with the overlays being packed) is
instantiated and the weights are loaded into it strictly: weights trained with another network (the CPU toy's
BasicUNet under the paper's SwinUNETR config) are refused with one line naming the weights, the config and the first
mismatched keys, instead of failing on the user's side.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from t3d_tools.packaging.errors import PackError
from t3d_tools.packaging.toy_builds import toy_overlays

if TYPE_CHECKING:
    import torch

__all__ = ["merged_inference", "merged_inference_config", "check_weights", "check_network_fits_weights"]


def _overlay_path(bundle_dir: str, overlay: str) -> str:
    path = os.path.join(bundle_dir, "configs", os.path.basename(overlay))
    if not os.path.isfile(path):
        raise PackError(
            f"--overlay {overlay}: expected a config file in {os.path.join(bundle_dir, 'configs')}, found none"
        )
    return path


def merged_inference(bundle_dir: str, overlays: list[str]) -> dict:
    """``configs/inference.json`` with the values of ``overlays`` (file names in configs/) for the ids it already has;
    ids the inference config does not use (a training datalist, epochs) are left out."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_dir, "configs", "inference.json"))
    for overlay in overlays:
        with open(_overlay_path(bundle_dir, overlay), encoding="utf-8") as f:
            values = json.load(f)
        for key, value in values.items():
            if key in parser:
                parser[key] = value
    return {k: v for k, v in parser.get().items() if k != "_meta_"}


def merged_inference_config(bundle_dir: str, overlays: list[str]) -> str:
    """:func:`merged_inference` as the JSON text that is packed as ``configs/inference.json``."""
    return json.dumps(merged_inference(bundle_dir, overlays), indent=4) + "\n"


def check_weights(name: str, weights: str) -> None:
    """The weights must load as tensors only (``weights_only=True``): what MONAI's loaders and MONAI Label read."""
    from custom.weights.checkpoint import CheckpointLoadError, NonFiniteWeightsError, load_weights_only

    try:
        load_weights_only(weights)
    except NonFiniteWeightsError as err:  # a model of NaNs is not shipped
        raise PackError(f"{name}: {err}") from None
    except CheckpointLoadError as err:  # torch's real reason (e.g. the refused global), never its retry advice
        raise PackError(f"{name}: {weights} does not load as a weights-only checkpoint ({err.reason})") from None


def _checkpoint_loaders(value: object) -> list[dict]:
    """Every ``CheckpointLoader`` component of a config, at any depth."""
    if isinstance(value, dict):
        found = [value] if str(value.get("_target_", "")).split(".")[-1] == "CheckpointLoader" else []
        return found + [c for item in value.values() for c in _checkpoint_loaders(item)]
    if isinstance(value, list):
        return [c for item in value for c in _checkpoint_loaders(item)]
    return []


def _first(keys: list[str], count: int = 3) -> str:
    shown = ", ".join(keys[:count])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > count else shown


def check_network_fits_weights(name: str, bundle_dir: str, weights: str, overlays: list[str]) -> torch.nn.Module:
    """Instantiate the packed ``inference.json``'s ``network_def`` (``overlays`` merged, as they will be packed) and
    load the weights into it with ``load_state_dict(strict=True)``; refuse a mismatch with one line naming the weights
    file, the config and the first missing / unexpected / differently shaped keys. Returns the network, weights loaded.

    The state dict is taken the way the config's ``CheckpointLoader`` takes it (its one ``load_dict`` key, e.g.
    ``{"model": state_dict}``, or the bare state dict). A loader with ``strict: false`` (``t3d_pretrain``: the full
    T3D checkpoint feeds the image-only embedder) makes the checkpoint's extra keys expected; the network's own keys
    must all be there with their shapes, since MONAI's non-strict loader silently skips the others."""
    import torch
    from monai.bundle import ConfigParser

    from custom.weights.checkpoint import load_weights_only

    config_label = " + ".join(["configs/inference.json", *[os.path.basename(o) for o in overlays]])
    config = merged_inference(bundle_dir, overlays)
    if "network_def" not in config:
        raise PackError(f"{name}: expected a 'network_def' in {config_label}, found keys {sorted(config)}")
    # the bundle as it will be unpacked: its own configs, the weights' folder as models/ (class names, thresholds)
    config.update(bundle_root=bundle_dir, ckpt_dir=os.path.dirname(os.path.abspath(weights)))
    if "device" in config:
        config["device"] = "$torch.device('cpu')"
    parser = ConfigParser(config)
    try:
        network = parser.get_parsed_content("network_def")
    except Exception as err:  # noqa: BLE001 - whatever the config raises, one line naming it
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PackError(f"{name}: network_def of {config_label} does not instantiate ({reason})") from None
    target = type(network).__name__

    loaders = _checkpoint_loaders(config)
    loader = loaders[0] if loaders else {}
    load_keys = list((loader.get("load_dict") or {"model": None}).keys())
    strict = loader.get("strict", True) is not False
    state = load_weights_only(weights)
    if isinstance(state, dict) and len(load_keys) == 1 and isinstance(state.get(load_keys[0]), dict):
        state = state[load_keys[0]]  # MONAI's CheckpointLoader: {"model": state_dict} or the state dict itself
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PackError(
            f"{name}: {weights} does not fit {config_label} network_def ({target}): expected a state "
            f"dict of tensors, found {type(state).__name__}"
        )
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected] if strict else []
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        try:
            network.load_state_dict({k: state[k] for k in expected} if not strict else state, strict=True)
        except RuntimeError as err:
            shapes = [str(err).strip().splitlines()[-1].strip()]
    if missing or unexpected or shapes:
        parts = [
            f"{len(missing)} missing key(s): {_first(missing)}" if missing else "",
            f"{len(unexpected)} unexpected key(s): {_first(unexpected)}" if unexpected else "",
            f"{len(shapes)} shape mismatch(es) (checkpoint vs network): {_first(shapes, 2)}" if shapes else "",
        ]
        toys = sorted(f for f in os.listdir(os.path.join(bundle_dir, "configs")) if toy_overlays([f]))
        hint = (
            (
                "pack with the overlays the weights were trained with"
                + (f" (CPU toy weights: --overlay {toys[0]})" if toys else " (--overlay NAME.json)")
            )
            if not overlays
            else "pack with exactly the overlays the weights were trained with (none for paper-size weights)"
        )
        raise PackError(
            f"{name}: {weights} does not fit {config_label} network_def ({target}): "
            + "; ".join(p for p in parts if p)
            + f"; {hint}"
        )
    return network
