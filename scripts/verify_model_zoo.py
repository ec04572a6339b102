"""Run the model zoo's own verifier (``ci/verify_bundle.py``, min and full modes) on the bundles as they ship.

    python scripts/verify_model_zoo.py --zoo /path/to/model-zoo [--bundles t3d_btcv_seg,t3d_brats] [--work DIR]

``--zoo`` is a checkout of Project-MONAI/model-zoo; only its ``ci/`` folder is copied into the work folder and run
(it is never committed here). Every bundle is verified in two builds, each packed by ``t3d_tools.packaging`` and
unzipped into ``<work>/zoo/models/`` the way the zoo lays its bundles out:

- **toy** (``<name>_toy``): the CPU toy trained for 2 iterations, packed with ``--overlay cpu_toy.json``;
- **release** (``<name>``): the paper-size ``inference.json`` with randomly initialised weights (what the zoo's own
  ``_produce_fake_weights`` makes), packed as the release recipe packs trained weights: weights over 100 MB go to
  ``large_files.yml`` with a ``file://`` URL and their sha256, which the verifier downloads and checks first.

Offline by construction: each bundle's ``eval/schema.json`` is the committed copy of MONAI's metadata schema (the
verifier would download it) and ``models/model_info.json`` is empty (nothing is published, so every version is new).

TorchScript: the verifier scripts ``network_def`` unless the zoo lists the bundle in
``exclude_verify_torchscript_list`` (``ci/bundle_custom_data.py``), as it lists its own swin_unetr_btcv_segmentation.
MONAI's SwinUNETR does not script, nor does the classifier that runs sliding windows inside its forward, and the
pre-training bundle's ``model.pt`` holds more than its ``network_def`` (reasons in :data:`TORCHSCRIPT_EXEMPT`). Those
builds are added to that list in the copied ``ci/`` (the change a model-zoo pull request would make, reasons
printed) and export by tracing instead (``docs/using_bundles.md``, ``tests/test_export.py``); every other build is
scripted by the verifier.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLES = ("t3d_pretrain", "t3d_btcv_seg", "t3d_msd_lung", "t3d_brats", "t3d_bimcv_cls")
SCHEMA = os.path.join(REPO, "tests", "data", "monai", "meta_schema_20240725.json")
_SWIN = "MONAI's SwinUNETR does not script (as the zoo's swin_unetr_btcv_segmentation)"
_CLASSIFIER = "the classifier runs sliding windows over the whole volume inside forward(); it does not script"
_WHOLE_T3D = (
    "models/model.pt is the whole T3D checkpoint (image and text towers: zero-shot needs both); inference.json "
    "loads its image tower with strict: false, the verifier's ckpt_export loads strictly"
)
#: build name -> why the zoo would exempt it from TorchScript scripting
TORCHSCRIPT_EXEMPT = {
    "t3d_pretrain": _SWIN,
    "t3d_pretrain_toy": _WHOLE_T3D,
    "t3d_btcv_seg": _SWIN,
    "t3d_msd_lung": _SWIN,
    "t3d_brats": _SWIN,
    "t3d_bimcv_cls": _CLASSIFIER,
    "t3d_bimcv_cls_toy": _CLASSIFIER,
}
#: the override that makes one toy epoch 2 iterations long
_EPOCH_LENGTH_ID = {"t3d_pretrain": "epoch_length"}


def _run(command: list[str], cwd: str, log: str) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {' '.join(command)}   (in {cwd})\n")
        f.flush()
        result = subprocess.run(command, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ})
    if result.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed (exit {result.returncode}); see {log}")


def _toy_weights(bundle: str, work: str, log: str) -> str:
    root = os.path.join(work, "train", bundle)
    configs = "['configs/train.json','configs/cpu_toy.json']"
    epoch_length = _EPOCH_LENGTH_ID.get(bundle, "train#trainer#epoch_length")
    _run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", root,
         "--max_epochs", "1", "--val_interval", "1", "--num_workers", "0", f"--{epoch_length}", "2"],
        os.path.join(REPO, "bundles", bundle),
        log,
    )  # fmt: skip
    return os.path.join(root, "models", "model.pt")


def _random_weights(bundle: str, work: str) -> str:
    """State dict of the paper-size ``inference.json`` network, randomly initialised (seed 0)."""
    import torch
    from monai.bundle import ConfigParser

    torch.manual_seed(0)
    parser = ConfigParser()
    parser.read_config(os.path.join(REPO, "bundles", bundle, "configs", "inference.json"))
    parser.read_meta(os.path.join(REPO, "bundles", bundle, "configs", "metadata.json"))
    parser["bundle_root"] = os.path.join(REPO, "bundles", bundle)
    path = os.path.join(work, "weights", f"{bundle}.pt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def _unzip(zip_path: str, models: str) -> str:
    with zipfile.ZipFile(zip_path) as archive:
        (top,) = {n.split("/")[0] for n in archive.namelist()}
        shutil.rmtree(os.path.join(models, top), ignore_errors=True)
        archive.extractall(models)
    os.makedirs(os.path.join(models, top, "eval"), exist_ok=True)
    shutil.copy(SCHEMA, os.path.join(models, top, "eval", "schema.json"))
    return top


def _stage_zoo_ci(zoo: str, work: str) -> str:
    """``<work>/zoo`` with the zoo's ``ci/`` (exemptions of :data:`TORCHSCRIPT_EXEMPT` appended) and ``models/``."""
    root = os.path.join(work, "zoo")
    shutil.rmtree(os.path.join(root, "ci"), ignore_errors=True)
    shutil.copytree(os.path.join(zoo, "ci"), os.path.join(root, "ci"))
    with open(os.path.join(root, "ci", "bundle_custom_data.py"), "a", encoding="utf-8") as f:
        exempt = sorted(TORCHSCRIPT_EXEMPT)
        f.write(f"\n# T3D bundles (scripts/verify_model_zoo.py)\nexclude_verify_torchscript_list += {exempt}\n")
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    with open(os.path.join(root, "models", "model_info.json"), "w", encoding="utf-8") as f:
        json.dump({}, f)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", required=True, help="a checkout of Project-MONAI/model-zoo (its ci/ is used)")
    parser.add_argument("--bundles", default=",".join(BUNDLES), help="comma-separated bundle names")
    parser.add_argument("--builds", default="toy,release", help="comma-separated: toy, release")
    parser.add_argument("--work", default=os.path.join(REPO, "dist", "model_zoo_verify"), help="work folder")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.zoo, "ci", "verify_bundle.py")):
        print(f"error: --zoo: expected a model-zoo checkout with ci/verify_bundle.py, found none at {args.zoo}")
        return 2
    os.makedirs(args.work, exist_ok=True)
    log = os.path.join(args.work, "verify.log")
    zoo = _stage_zoo_ci(args.zoo, args.work)
    models = os.path.join(zoo, "models")
    dist = os.path.join(args.work, "dist")
    rows = []
    for bundle in args.bundles.split(","):
        for build in args.builds.split(","):
            pack = [sys.executable, "-m", "t3d_tools.packaging", bundle, "--dist", dist, "--repo", "example/t3d",
                    "--model_info", os.path.join(args.work, "packed_model_info.json")]  # fmt: skip
            if build == "toy":
                pack += ["--weights", _toy_weights(bundle, args.work, log), "--overlay", "cpu_toy.json"]
            else:
                weights = _random_weights(bundle, args.work)
                pack += ["--weights", weights, "--weights_url", "file://" + os.path.abspath(weights)]
            _run(pack, REPO, log)
            zips = sorted((os.path.getmtime(os.path.join(dist, z)), z) for z in os.listdir(dist) if z.endswith(".zip"))
            name = _unzip(os.path.join(dist, zips[-1][1]), models)
            results = {}
            for mode in ("min", "full"):
                started = time.time()
                command = [sys.executable, "ci/verify_bundle.py", "-b", name, "-p", "models", "-m", mode]
                with open(log, "a", encoding="utf-8") as f:
                    f.write(f"\n$ {' '.join(command)}   (in {zoo})\n")
                    f.flush()
                    done = subprocess.run(command, cwd=zoo, stdout=f, stderr=subprocess.STDOUT)
                results[mode] = ("pass" if done.returncode == 0 else "FAIL") + f" ({time.time() - started:.0f} s)"
            exempt = TORCHSCRIPT_EXEMPT.get(name)
            rows.append((name, build, results["min"], results["full"], f"exempt: {exempt}" if exempt else "scripted"))
            print(" | ".join(rows[-1]), flush=True)
    print(f"\n{sum(r[2].startswith('pass') and r[3].startswith('pass') for r in rows)} of {len(rows)} builds pass "
          f"min and full (model-zoo ci/verify_bundle.py); log: {log}")  # fmt: skip
    return 0 if all(r[2].startswith("pass") and r[3].startswith("pass") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
