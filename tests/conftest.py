"""Shared fixtures: a small synthetic pairs set, the offline text encoder, and an in-process bundle runner.

Bundles run in this process (``monai.bundle.run``) rather than in subprocesses: importing monai costs ~10 s here.
"""

from __future__ import annotations

import hashlib
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLES = os.path.join(REPO_ROOT, "bundles")
META_SCHEMA = os.path.join(REPO_ROOT, "tests", "data", "monai", "meta_schema_20240725.json")


@pytest.fixture(scope="session")
def offline_text_encoder(tmp_path_factory) -> str:
    from custom.weights.offline_text_encoder import build_offline_text_encoder

    return build_offline_text_encoder(str(tmp_path_factory.mktemp("text") / "offline_text_encoder"))


@pytest.fixture(scope="session")
def synthetic_pairs(tmp_path_factory) -> str:
    """Folder with ``pairs_datalist.json``: 8 training and 4 validation studies, 64^3 at 4 mm."""
    from custom.data.make_synthetic_pairs import make_synthetic_pairs

    out_dir = str(tmp_path_factory.mktemp("synthetic_pairs"))
    make_synthetic_pairs(out_dir, num_train=8, num_val=4, shape=(64, 64, 64), spacing=(4.0, 4.0, 4.0), seed=3)
    return out_dir


def run_bundle(bundle: str, configs: list[str], bundle_root: str, workflow: str = "run", **overrides):
    """``python -m monai.bundle run`` of ``bundles/<bundle>`` with ``configs`` (file names in its configs/),
    outputs under ``bundle_root``; returns the ConfigWorkflow so tests can inspect its parsed objects."""
    from monai.bundle import ConfigWorkflow

    config_dir = os.path.join(BUNDLES, bundle, "configs")
    workflow_ = ConfigWorkflow(
        config_file=[os.path.join(config_dir, name) for name in configs],
        meta_file=os.path.join(config_dir, "metadata.json"),
        logging_file=os.path.join(config_dir, "logging.conf"),
        workflow_type=None,
        bundle_root=bundle_root,
        **overrides,
    )
    workflow_.initialize()
    workflow_.run()
    workflow_.finalize()
    return workflow_


def folder_tree(folder) -> dict[str, str]:
    """``{relative path: sha1 of the bytes | "<dir>" | "-> link target"}`` of everything under ``folder``."""
    result = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                result[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                result[rel] = "<dir>"
            else:
                with open(path, "rb") as f:
                    result[rel] = hashlib.sha1(f.read()).hexdigest()
    return result


def updated_parameters(network, optimizer) -> set[str]:
    """Names of ``network``'s parameters that received a non-zero gradient in a finished run: those with a non-zero
    Adam first moment. A branch a run skips has no gradient (no state), and one whose loss weight is 0 but still runs
    gets zero gradients (a zero moment): either way its parameters are not in the set. Every parameter must be
    finite."""
    import torch

    network = getattr(network, "module", network)
    names = {}
    for name, parameter in network.named_parameters():
        assert torch.isfinite(parameter).all(), f"{name}: non-finite after training"
        names[parameter] = name
    return {
        names[p]
        for p, state in optimizer.state.items()
        if p in names and "exp_avg" in state and bool(state["exp_avg"].abs().sum() > 0)
    }
