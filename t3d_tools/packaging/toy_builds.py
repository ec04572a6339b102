"""Toy builds (weights trained by the CPU toy) and the model card as packed.

Weights that fit only with a CPU-toy overlay (``--overlay cpu_toy.json``) make a *toy build*: bundle name
``<name>_toy``, version ``<version>-toy``, metadata name, description and intended use saying so, and a model card that
starts with the banner "Weights trained on synthetic data by the CPU toy; not a research or clinical model." Download
by the real name never finds a toy build, and a toy build never carries the real name. The committed card's "no
trained weights are published" note (between ``<!-- weights-status:begin ... -->`` and
``<!-- weights-status:end -->``) is dropped from every packed card.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from t3d_tools.packaging.errors import PackError
from t3d_tools.packaging.release_names import _MONAI_NAME_SPLIT

if TYPE_CHECKING:
    import torch

__all__ = [
    "TOY_NAME_SUFFIX",
    "TOY_VERSION_SUFFIX",
    "TOY_BANNER",
    "WEIGHTS_NOTE_BEGIN",
    "WEIGHTS_NOTE_END",
    "toy_overlays",
    "toy_metadata",
    "measured_output_channels",
    "packed_model_card",
]


TOY_NAME_SUFFIX = "_toy"  # bundle name t3d_btcv_seg -> t3d_btcv_seg_toy: download by the real name never gets a toy
TOY_VERSION_SUFFIX = "-toy"  # version 0.2.0 -> 0.2.0-toy (a pre-release in SemVer terms: never above 0.2.0)
TOY_BANNER = "Weights trained on synthetic data by the CPU toy; not a research or clinical model."
WEIGHTS_NOTE_BEGIN = "<!-- weights-status:begin"
WEIGHTS_NOTE_END = "<!-- weights-status:end -->"


def toy_overlays(overlays: Iterable[str]) -> list[str]:
    """The CPU-toy overlays among ``overlays`` (``cpu_toy.json``, ``cpu_toy_swin.json``: names starting
    ``cpu_toy``): weights that fit the network only with one of them were trained by the toy."""
    return [o for o in overlays if os.path.basename(o).startswith("cpu_toy")]


def measured_output_channels(network: torch.nn.Module, metadata: dict) -> dict[str, int]:
    """``{output key: channel count}`` of ``network`` on a zero input of the metadata's first input (its
    ``num_channels``, its ``spatial_shape`` with ``n = p = 1``, as the model zoo's ``verify_net_in_out`` builds it)."""
    import torch
    from monai.bundle.scripts import _get_fake_spatial_shape

    data_format = metadata.get("network_data_format", {})
    inputs, outputs = data_format.get("inputs", {}), data_format.get("outputs", {})
    if len(inputs) != 1 or len(outputs) != 1:
        return {}
    (spec,) = inputs.values()
    shape = (1, int(spec.get("num_channels", 1)), *_get_fake_spatial_shape(spec.get("spatial_shape", [])))
    was_training = network.training
    network.eval()
    with torch.no_grad():
        output = network(torch.zeros(shape))
    network.train(was_training)
    return {next(iter(outputs)): int(output.shape[1])} if isinstance(output, torch.Tensor) else {}


def toy_metadata(metadata: dict, version: str, overlays: list[str], network: torch.nn.Module | None = None) -> dict:
    """``metadata.json`` of a toy build: version ``<version>-toy``, name, description and intended use saying so,
    and (given the packed ``network``) each output's ``num_channels`` as the toy network gives it (the pre-training
    toy embeds in 64 dimensions where the paper's network gives 512)."""
    meta = dict(metadata)
    if network is not None:
        data_format = json.loads(json.dumps(metadata.get("network_data_format", {})))
        for key, channels in measured_output_channels(network, metadata).items():
            data_format["outputs"][key]["num_channels"] = channels
        meta["network_data_format"] = data_format
    toy_version = version + TOY_VERSION_SUFFIX
    used = ", ".join(f"configs/{os.path.basename(o)}" for o in overlays)
    meta["version"] = toy_version
    meta["changelog"] = {
        toy_version: f"CPU toy build of {version} (network and data of {used}); for tests and demonstrations only",
        **metadata.get("changelog", {}),
    }
    meta["name"] = f"{metadata.get('name', '')} [CPU TOY]".strip()
    meta["description"] = (
        f"CPU TOY BUILD: {TOY_BANNER} The network is the small one of {used}, trained on the "
        f"project's synthetic data. {metadata.get('description', '')}"
    ).strip()
    meta["intended_use"] = f"Tests and demonstrations of the bundle's plumbing only. {TOY_BANNER}"
    return meta


def packed_model_card(card: str, toy: bool, name: str, overlays: list[str]) -> str:
    """The model card as packed: the committed card's "no trained weights are published" note (between the
    ``weights-status`` markers) is dropped, since the zip carries weights; a toy build starts with the toy banner."""
    if WEIGHTS_NOTE_BEGIN in card and WEIGHTS_NOTE_END in card:
        head, rest = card.split(WEIGHTS_NOTE_BEGIN, 1)
        card = head + rest.split(WEIGHTS_NOTE_END, 1)[1].lstrip("\n")
    if not toy:
        return card
    used = " + ".join(os.path.basename(o) for o in overlays)
    banner = (
        f"> **{TOY_BANNER}**\n>\n> Toy build `{name}{TOY_NAME_SUFFIX}`: the network of `configs/inference.json` "
        f"merged with `{used}`, trained by the CPU toy on the project's synthetic data. It shows that the "
        "bundle runs end to end; its outputs mean nothing clinically.\n\n"
    )
    return banner + card


def _packed_names(name: str, version: str, toy: bool) -> tuple[str, str]:
    """(bundle name, version) of the zip: ``<name>_toy`` / ``<version>-toy`` for a toy build; both must come back
    unchanged from MONAI's parsing of ``<name>_v<version>.zip`` (``re.split(r"_v\\d*.", asset)[0]`` for the name, the
    rest after ``<name>_v`` for the version)."""
    packed = (name + TOY_NAME_SUFFIX, version + TOY_VERSION_SUFFIX) if toy else (name, version)
    asset = f"{packed[0]}_v{packed[1]}.zip"
    parsed = (_MONAI_NAME_SPLIT.split(asset)[0], asset.split(f"{packed[0]}_v")[-1].replace(".zip", ""))
    if parsed != packed:
        raise PackError(f"{name}: MONAI would read the asset {asset} as name {parsed[0]!r} version {parsed[1]!r}")
    return packed
