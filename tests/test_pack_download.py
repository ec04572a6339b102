"""Download by name: pack a toy-trained bundle, download it with ``python -m monai.bundle download --name ... --url
file://...`` into a fresh venv that has only the packages the bundle's metadata names (nothing from this repository),
and run its ``inference.json`` there on the real CT; every toy build the same way (zero-shot for ``t3d_pretrain``); the
release recipe end to end. Packing's own checks: ``test_pack.py``; unsafe archives: ``test_archive_safety.py``.

The fresh venv (torch 2.13.0 CPU wheel first, then monai / numpy / nibabel / pytorch-ignite / tensorboard / fire at
the metadata's versions) is built once per requirement set under ``$T3D_BUNDLE_VENV_CACHE`` (default
``~/.cache/t3d_bundles/venvs``) and reused: about 1-2 min to build with a warm pip cache, ~1 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest
from bundle_toys import bundle_metadata, toy_name, toy_pack, toy_validation_rows, toy_weights
from conftest import run_bundle

from t3d_tools.packaging.pack import bundle_requirements, pack

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_CT = os.path.join(REPO, "tests", "data", "real_ct", "example_ct_sm.nii.gz")
BUNDLE = "t3d_btcv_seg"


def user_venv(requirements: list[str]) -> str:
    """A venv with exactly ``requirements`` (torch first, alone), cached by requirement set; returns its python."""
    key = hashlib.sha1("\n".join([sys.version, *requirements]).encode()).hexdigest()[:16]
    cache = os.environ.get("T3D_BUNDLE_VENV_CACHE", os.path.expanduser("~/.cache/t3d_bundles/venvs"))
    venv = os.path.join(cache, key)
    python = os.path.join(venv, "bin", "python")
    if os.path.isfile(os.path.join(venv, ".complete")):
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    torch = [r for r in requirements if r.startswith("torch==")]
    for group in (torch, [r for r in requirements if r not in torch]):
        result = subprocess.run(pip + group, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(venv, ".complete"), "w") as f:
        f.write("\n".join(requirements) + "\n")
    return python


def test_download_by_name_and_inference_on_real_ct_in_a_fresh_venv(tmp_path, tmp_path_factory):
    zip_path = toy_pack(BUNDLE, tmp_path_factory)
    python = user_venv(bundle_requirements(bundle_metadata(BUNDLE)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    bundle_dir = tmp_path / "bundles"

    def run(args, cwd):
        result = subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    run(
        [
            "-m",
            "monai.bundle",
            "download",
            "--name",
            toy_name(BUNDLE),
            "--url",
            f"file://{zip_path}",
            "--bundle_dir",
            str(bundle_dir),
        ],
        cwd=str(tmp_path),
    )
    root = bundle_dir / toy_name(BUNDLE)
    assert (root / "models" / "model.pt").is_file()
    # nothing of this repository in that environment: `custom` is the bundle's vendored copy
    where = run(
        ["-c", "import custom, custom.transforms.seg_checks as m; print(*custom.__path__, m.__file__)"], cwd=str(root)
    ).split()
    assert where == [str(root / "custom"), str(root / "custom" / "transforms" / "seg_checks.py")]
    run(
        [
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/inference.json",
            "--images",
            f"['{REAL_CT}']",
            "--output_dir",
            str(tmp_path / "out"),
            "--num_workers",
            "0",
        ],
        cwd=str(root),
    )
    saved = nib.load(str(tmp_path / "out" / "example_ct_sm_seg.nii.gz"))
    source = nib.load(REAL_CT)
    assert saved.shape == source.shape
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)
    assert set(np.unique(np.asarray(saved.dataobj)).tolist()) <= set(range(14))


# what each downloaded bundle runs in the user's venv: the configs and the extra command-line arguments
_FROM_DOWNLOAD = {
    "t3d_pretrain": (["train.json", "evaluate_zero_shot.json", "cpu_toy.json"], ["--ckpt_dir", "models"]),
    "t3d_msd_lung": (["inference.json"], ["--images", f"['{REAL_CT}']"]),
    "t3d_brats": (["inference.json", "cpu_toy.json"], []),  # --dataset_dir: the toy's BraTS miniature, below
    "t3d_bimcv_cls": (["inference.json"], ["--images", f"['{REAL_CT}']"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(_FROM_DOWNLOAD))
def test_downloaded_toy_build_runs_in_a_venv_with_only_its_metadata_packages(bundle, tmp_path, tmp_path_factory):
    """Each toy build, downloaded by name into a fresh venv holding only the packages its metadata names, runs from
    its own folder: zero-shot classification for ``t3d_pretrain`` (prompt sets from the vendored package data),
    inference for the others (``t3d_btcv_seg``: ``test_download_by_name_and_inference_on_real_ct_in_a_fresh_venv``)."""
    zip_path = toy_pack(bundle, tmp_path_factory)
    name = toy_name(bundle)
    with zipfile.ZipFile(zip_path) as archive:
        packed_metadata = json.loads(archive.read(f"{name}/configs/metadata.json"))
    python = user_venv(bundle_requirements(packed_metadata))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")

    def run(args, cwd):
        result = subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    bundles = tmp_path / "bundles"
    run(["-m", "monai.bundle", "download", "--name", name, "--url", f"file://{zip_path}",
         "--bundle_dir", str(bundles)], cwd=str(tmp_path))  # fmt: skip
    root = bundles / name
    configs, extra = _FROM_DOWNLOAD[bundle]
    if bundle == "t3d_brats":
        case = toy_validation_rows(bundle, "datalist.json", tmp_path_factory)[0]["image"][0]
        extra = ["--dataset_dir", os.path.dirname(os.path.dirname(case))]
    out = tmp_path / "out"
    config_file = "[" + ",".join(f"'configs/{c}'" for c in configs) + "]"
    log = run(["-m", "monai.bundle", "run", "--config_file", config_file, "--output_dir", str(out),
               "--num_workers", "0", *extra], cwd=str(root))  # fmt: skip
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    if bundle == "t3d_pretrain":
        assert "zero_shot_metrics.json" in written, (written, log[-2000:])
        metrics_text = next(out.rglob("zero_shot_metrics.json")).read_text()
        # the prompt set came from the zip's vendored package data
        assert str(root / "custom" / "data" / "prompts" / "findings_v1.json") in metrics_text, metrics_text[:1500]
    elif bundle == "t3d_bimcv_cls":
        assert any(n.endswith(".json") or n.endswith(".csv") for n in written), written
    else:
        saved = [p for p in out.rglob("*.nii.gz")]
        assert saved, written
        label = nib.load(str(saved[0]))
        assert label.ndim == 3 and set(np.unique(np.asarray(label.dataobj)).astype(int).tolist()) <= set(range(14))
    print(f"\n[{name} from its zip, venv of its metadata] wrote {written[:6]}")


def test_release_recipe_end_to_end(tmp_path, tmp_path_factory):
    """The release recipe of docs/using_bundles.md with toy weights: train, evaluate, pack with the weights hosted
    apart (``large_files.yml``: URL + sha256), the ``model_info.json`` entry, download by name (archive checked
    against that entry's sha1 first), ``download_large_files``, inference on the real CT from the downloaded copy."""
    weights = toy_weights(BUNDLE, tmp_path_factory)  # 1. train (the CPU toy, 2 iterations)
    evaluation = tmp_path / "eval"  # 2. evaluate the trained weights
    run_bundle(
        BUNDLE,
        ["train.json", "evaluate.json", "cpu_toy.json"],
        os.path.dirname(os.path.dirname(weights)),
        output_dir=str(evaluation),
        num_workers=0,
    )
    assert (evaluation / "val_mean_dice_raw.csv").is_file()
    hosted = tmp_path / "hosted" / "model.pt"  # 3. pack; the weights are hosted apart (a release asset)
    hosted.parent.mkdir()
    shutil.copy(weights, hosted)
    dist = tmp_path / "dist"
    zip_path = pack(
        BUNDLE, str(dist), weights=str(hosted), max_inline_mb=1e-6, weights_url=f"file://{hosted}",
        repo="example/t3d", overlays=["cpu_toy.json"],
    )  # fmt: skip
    name = toy_name(BUNDLE)
    with open(dist / "model_info.json") as f:  # 4. the model_info.json entry names the zip's sha1
        entry = json.load(f)[os.path.basename(zip_path)[: -len(".zip")]]
    assert entry["checksum"] == hashlib.sha1(pathlib.Path(zip_path).read_bytes()).hexdigest()
    assert entry["source"].endswith(f"/releases/download/hosting_storage_v1/{os.path.basename(zip_path)}")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(OMP_NUM_THREADS="1")

    def run(args, cwd):
        result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    bundles = tmp_path / "bundles"  # 5. download by name
    run(["-m", "t3d_tools.packaging.download", "--name", name, "--url", f"file://{zip_path}",
         "--bundle_dir", str(bundles)], cwd=str(tmp_path))  # fmt: skip
    root = bundles / name
    assert not (root / "models" / "model.pt").exists()
    assert hashlib.sha256(hosted.read_bytes()).hexdigest() in (root / "large_files.yml").read_text()
    run(["-m", "monai.bundle", "download_large_files", "--bundle_path", str(root)], cwd=str(tmp_path))  # 6.
    assert (root / "models" / "model.pt").read_bytes() == hosted.read_bytes()
    run(["-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--images", f"['{REAL_CT}']",
         "--output_dir", str(tmp_path / "out"), "--num_workers", "0"], cwd=str(root))  # fmt: skip  # 7. inference
    saved, source = nib.load(str(tmp_path / "out" / "example_ct_sm_seg.nii.gz")), nib.load(REAL_CT)
    assert saved.shape == source.shape
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)
