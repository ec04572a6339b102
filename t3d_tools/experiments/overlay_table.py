"""The pre-training card's table of CPU overlays, read from the config files themselves so docs and configs agree.

    python -m t3d_tools.experiments.overlay_table [--write]

Prints the table (``--write``: replaces the block between the ``cpu-overlays`` markers of
``bundles/t3d_pretrain/docs/README.md``); ``tests/test_size_overlays.py`` fails when the committed block differs.
"""

from __future__ import annotations

import argparse
import os
import re

from t3d_tools import REPO_ROOT
from t3d_tools.experiments.learning_check import PATHS

__all__ = ["STACKS", "overlay_rows", "markdown_table", "CARD", "replace_block"]

CONFIGS = os.path.join(REPO_ROOT, "bundles", "t3d_pretrain", "configs")
CARD = os.path.join(REPO_ROOT, "bundles", "t3d_pretrain", "docs", "README.md")
BEGIN, END = (
    "<!-- cpu-overlays:begin (python -m t3d_tools.experiments.overlay_table --write) -->",
    "<!-- cpu-overlays:end -->",
)

#: (what it is, config stack)
STACKS: list[tuple[str, list[str]]] = [
    ("paper size (GPU)", ["train.json"]),
    ("learning check, UNet path (size keys only)", PATHS["unet"]),
    ("learning check, SwinUNETR path (size keys only)", PATHS["swin"]),
    ("README demo (toy)", ["train.json", "cpu_toy.json"]),
    ("sub-volume toy", ["train.json", "cpu_toy.json", "cpu_toy_subvolume.json"]),
    ("SwinUNETR toy", ["train.json", "cpu_toy.json", "cpu_toy_swin.json"]),
]


def _parser(configs: list[str]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([os.path.join(CONFIGS, c) for c in configs])
    return parser


def _cube(values) -> str:
    values = [int(v) if float(v).is_integer() else float(v) for v in values]
    return f"{values[0]}³" if len(set(values)) == 1 else "×".join(str(v) for v in values)


def _data(parser) -> str:
    prepare = parser["prepare_data"]
    for name, world in (("world", "world v2"), ("synthetic_pairs", "world v1")):
        if name in prepare:
            entry = prepare[name]
            studies = f"{entry['num_train']} + {entry['num_val']}" + (
                f" + {entry['num_test']}" if entry.get("num_test") else ""
            )
            style = f", {entry['report_style']} reports" if "report_style" in entry else ""
            spacing = _cube(entry["spacing"]).replace("³", "")
            return f"{world}: {studies} studies of {_cube(entry['shape'])} at {spacing} mm{style}"
    return "your data (`dataset_dir`)"


def _backbone(parser) -> str:
    backbone = parser["image_backbone"]
    if backbone["_target_"].endswith("SwinUNETRBackbone"):
        return f"SwinUNETR fs{backbone['feature_size']}"
    features = ",".join(str(f) for f in backbone["features"])
    # resolved, not read: the CPU toys name custom.networks.unet_backbone.CPU_TOY_NORM
    norm = parser.get_parsed_content("image_backbone#norm") if "norm" in backbone else "instance"
    return f"BasicUNet ({features}), {norm if isinstance(norm, str) else norm[0]} norm"


def _text(parser) -> str:
    frozen = parser["text_frozen_layers"]
    whitening = parser["text_whitening"]
    freezing = "fully frozen" if frozen < 0 else f"first {frozen} layers frozen"
    return freezing + (f", whitened to {whitening}" if whitening else "")


def overlay_rows() -> list[dict[str, str]]:
    """One row per :data:`STACKS` entry, every value read from the stacked config files."""
    rows = []
    for what, configs in STACKS:
        parser = _parser(configs)
        epochs, length = parser["max_epochs"], parser["epoch_length"]
        steps = f"{epochs} × {length}" if length else f"{epochs} epochs"
        jitter = parser["crop_jitter"]
        rows.append(
            {
                "what": what,
                "configs": " + ".join(f"`{c}`" for c in configs),
                "data": _data(parser),
                "backbone": _backbone(parser),
                "crop, K": f"{_cube(parser['crop_size'])}, K = {parser['crops_per_volume']}",
                "volumes a step": str(parser["batch_size"]),
                "steps": steps,
                "sampling": f"{parser['crop_sampling']}, jitter {jitter}",
                "affinity": str(parser["report_affinity"]),
                "text encoder": _text(parser),
                "lr": f"{parser['learning_rate']:g}",
                "eval grid": f"{parser['eval_grid']}³",
            }
        )
    return rows


def markdown_table() -> str:
    rows = overlay_rows()
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines)


def replace_block(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``; one-line error when the markers are gone."""
    pattern = re.compile(re.escape(BEGIN) + r"\n(?:.*?\n)?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{CARD}: expected the markers {BEGIN!r} ... {END!r}, found none")
    return pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    table = markdown_table()
    if args.write:
        with open(CARD, encoding="utf-8") as f:
            text = replace_block(f.read(), table)  # before opening for writing: a refusal must leave the card whole
        with open(CARD, "w", encoding="utf-8") as f:
            f.write(text)
    print(table)
    return table


if __name__ == "__main__":
    main()
