"""Keep a classification bundle's ``metadata.json`` in step with the model it ships.

The class list of ``t3d_bimcv_cls`` is data-derived (the curation's ``class_names``), so the output description
MONAI Label reads (``network_data_format.outputs.pred.channel_def`` / ``num_channels``, ``label_classes``,
``pred_classes``) is rewritten from the trained model's ``models/class_names.json``:

    python -m custom.engines.classification_metadata --bundle_root bundles/t3d_bimcv_cls
"""

from __future__ import annotations

import json
import os

from custom.data.classification_datalist import read_class_names

__all__ = ["model_class_names", "sync_metadata"]


def model_class_names(class_names_file: str, meta_file: str | None = None) -> list[str]:
    """The classes a model's outputs mean: its ``class_names.json`` when present (written by training), else the
    ``channel_def`` of ``meta_file`` (what a bundle served by MONAI Label with only ``models/model.pt`` has). The
    metadata is read from disk, not from ``_meta_``: MONAI Label parses ``inference.json`` without its metadata."""
    if os.path.isfile(class_names_file) or not meta_file or not os.path.isfile(meta_file):
        return read_class_names(class_names_file)
    with open(meta_file, encoding="utf-8") as f:
        channel_def = json.load(f)["network_data_format"]["outputs"]["pred"].get("channel_def") or {}
    if not channel_def:
        return read_class_names(class_names_file)
    return [channel_def[key] for key in sorted(channel_def, key=int)]


def sync_metadata(bundle_root: str = ".", class_names_file: str | None = None, meta_file: str | None = None) -> dict:
    """Rewrite the class-dependent fields of ``meta_file`` (default ``configs/metadata.json``) from
    ``class_names_file`` (default ``models/class_names.json``); returns the new metadata."""
    class_names_file = class_names_file or os.path.join(bundle_root, "models", "class_names.json")
    meta_file = meta_file or os.path.join(bundle_root, "configs", "metadata.json")
    names = read_class_names(class_names_file)
    with open(meta_file, encoding="utf-8") as f:
        meta = json.load(f)
    pred = meta["network_data_format"]["outputs"]["pred"]
    pred["num_channels"] = len(names)
    pred["channel_def"] = {str(i): name for i, name in enumerate(names)}
    meta["label_classes"] = "multi-hot vector over class_names (one 0/1 entry per class): " + ", ".join(
        f"{i} {n}" for i, n in enumerate(names)
    )
    meta["pred_classes"] = f"{len(names)} independent per-class probabilities (sigmoid), in class_names order"
    with open(meta_file, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=4)
    return meta


if __name__ == "__main__":
    import fire

    fire.Fire(sync_metadata)
