"""Download by name: pack a toy-trained bundle, download it with ``python -m monai.bundle download --name ... --url
file://...`` into a fresh venv that has only the packages the bundle's metadata names (nothing from this repository),
and run its ``inference.json`` there on the real CT. Plus the refusals: path-escape zips, names and versions MONAI
would mis-parse, vendored imports the metadata does not name, missing weights, symlinks.

The fresh venv (torch 2.13.0 CPU wheel first, then monai / numpy / nibabel / pytorch-ignite / tensorboard / fire at
the metadata's versions) is built once per requirement set under ``$T3D_BUNDLE_VENV_CACHE`` (default
``~/.cache/t3d_bundles/venvs``) and reused: about 1-2 min to build with a warm pip cache, ~1 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_toys import toy_pack
from custom.packaging.pack import PackError, bundle_requirements, check_version_order, main, pack

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_CT = os.path.join(REPO, "tests", "data", "real_ct", "example_ct_sm.nii.gz")
BUNDLE = "t3d_btcv_seg"


def _metadata(bundle: str) -> dict:
    with open(os.path.join(REPO, "bundles", bundle, "configs", "metadata.json")) as f:
        return json.load(f)


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


def test_requirements_are_exactly_the_metadata_packages():
    requirements = bundle_requirements(_metadata(BUNDLE))
    assert requirements[0] == "torch==2.13.0"  # first, alone: a bare torch resolve would pull a CUDA build
    assert {r.split("==")[0] for r in requirements} == {
        "torch", "monai", "numpy", "nibabel", "pytorch-ignite", "tensorboard", "fire"}


def test_pack_layout_and_model_info(tmp_path_factory):
    zip_path = toy_pack(BUNDLE, tmp_path_factory)
    name = f"{BUNDLE}_v{_metadata(BUNDLE)['version']}"
    assert os.path.basename(zip_path) == f"{name}.zip"
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        inference = json.loads(archive.read("t3d_btcv_seg/configs/inference.json"))
    assert {n.split("/")[0] for n in names} == {BUNDLE}  # one top folder, as MONAI's extractall(has_base=True) wants
    for required in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md",
                     "LICENSE", "custom/__init__.py", "custom/transforms/seg_checks.py", "custom/data/checks.py"):
        assert f"{BUNDLE}/{required}" in names
    assert not any("/data/" in n and n.endswith(".nii.gz") for n in names)  # no run outputs or data
    # all of custom/ (one MONAI Label process imports it once for every bundle it serves), but not the repo's tools
    assert f"{BUNDLE}/custom/transforms/brats_labels.py" in names
    assert not any(n.startswith((f"{BUNDLE}/custom/packaging", f"{BUNDLE}/custom/serving")) for n in names)
    assert inference["network_def"]["_target_"] == "BasicUNet"  # the cpu_toy overlay went into the packed inference
    with open(os.path.join(os.path.dirname(zip_path), "model_info.json")) as f:
        info = json.load(f)
    with open(zip_path, "rb") as f:
        sha1 = hashlib.sha1(f.read()).hexdigest()
    assert info == {name: {
        "checksum": sha1, "source": f"https://github.com/example/t3d/releases/download/hosting_storage_v1/{name}.zip"}}


def test_download_by_name_and_inference_on_real_ct_in_a_fresh_venv(tmp_path, tmp_path_factory):
    zip_path = toy_pack(BUNDLE, tmp_path_factory)
    python = user_venv(bundle_requirements(_metadata(BUNDLE)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    bundle_dir = tmp_path / "bundles"

    def run(args, cwd):
        result = subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    run(["-m", "monai.bundle", "download", "--name", BUNDLE, "--url", f"file://{zip_path}",
         "--bundle_dir", str(bundle_dir)], cwd=str(tmp_path))
    root = bundle_dir / BUNDLE
    assert (root / "models" / "model.pt").is_file()
    # nothing of this repository in that environment: `custom` is the bundle's vendored copy
    where = run(["-c", "import custom, custom.transforms.seg_checks as m; print(*custom.__path__, m.__file__)"],
                cwd=str(root)).split()
    assert where == [str(root / "custom"), str(root / "custom" / "transforms" / "seg_checks.py")]
    run(["-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--images", f"['{REAL_CT}']",
         "--output_dir", str(tmp_path / "out"), "--num_workers", "0"], cwd=str(root))
    saved = nib.load(str(tmp_path / "out" / "example_ct_sm_seg.nii.gz"))
    source = nib.load(REAL_CT)
    assert saved.shape == source.shape
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)
    assert set(np.unique(np.asarray(saved.dataobj)).tolist()) <= set(range(14))


@pytest.mark.parametrize("member", ["evil/../../escaped.txt", "/tmp/escaped_abs.txt"])
def test_download_refuses_path_escape_entries(tmp_path, member):
    from monai.bundle import download

    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("evil/configs/metadata.json", "{}")
        archive.writestr(member, "outside")
    target = tmp_path / "a" / "b"
    target.mkdir(parents=True)
    with pytest.raises(ValueError, match="Unsafe path"):
        download(name="evil", url=f"file://{zip_path}", bundle_dir=str(target))
    assert not (tmp_path / "a" / "escaped.txt").exists()
    assert not os.path.exists("/tmp/escaped_abs.txt")


def _fake_bundle(root, name="toy_bundle", version="0.1.0", config_text='{"imports": ["$import custom.data.checks"]}'):
    bundle = root / name
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    torch.save({"weight": torch.zeros(3)}, bundle / "models" / "model.pt")
    meta = {"version": version, "monai_version": "1.6.1", "pytorch_version": "2.13.0", "numpy_version": "2.4.6",
            "required_packages_version": {"nibabel": "5.4.2", "fire": "0.7.1"}}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    (bundle / "configs" / "inference.json").write_text(config_text)
    return bundle


@pytest.mark.parametrize("name, version, message", [
    ("my_vnet", "0.1.0", "contains '_v'"),
    ("toy-bundle", "0.1.0", "letters, digits and underscores"),
    ("toy_bundle", "1.0", "MAJOR.MINOR.PATCH"),
])
def test_pack_refuses_names_and_versions_monai_misparses(tmp_path, name, version, message):
    bundle = _fake_bundle(tmp_path, name, version)
    with pytest.raises(PackError, match=message):
        pack(str(bundle), str(tmp_path / "dist"))


def test_version_order_must_agree_as_strings_and_numbers():
    check_version_order("b", "0.2.0", ["0.1.0"])
    with pytest.raises(PackError, match="sort differently"):
        check_version_order("b", "0.10.0", ["0.9.0"])


def test_pack_refusals_are_one_line_errors(tmp_path, capsys):
    bundle = _fake_bundle(tmp_path)
    os.remove(bundle / "models" / "model.pt")
    assert main([str(bundle), "--dist", str(tmp_path / "dist")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: toy_bundle: no trained weights at {bundle}/models/model.pt (train the bundle or pass --weights PATH)")

    heavy = _fake_bundle(tmp_path / "heavy", config_text='{"x": "$custom.weights.offline_text_encoder.build"}')
    with pytest.raises(PackError, match="imports .(tokenizers|transformers).*does not name"):
        pack(str(heavy), str(tmp_path / "dist"))

    linked = _fake_bundle(tmp_path / "linked")
    os.symlink("/etc/hostname", linked / "docs_link")
    with pytest.raises(PackError, match="symbolic links"):
        pack(str(linked), str(tmp_path / "dist"))

    broken = _fake_bundle(tmp_path / "broken")
    (broken / "models" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PackError, match="does not load as a weights-only checkpoint"):
        pack(str(broken), str(tmp_path / "dist"))

    big = _fake_bundle(tmp_path / "big")
    with pytest.raises(PackError, match="--weights_url"):
        pack(str(big), str(tmp_path / "dist"), max_inline_mb=1e-6)
    zip_path = pack(str(big), str(tmp_path / "dist"), max_inline_mb=1e-6, weights_url="https://example.org/w.pt")
    with zipfile.ZipFile(zip_path) as archive:
        assert "toy_bundle/models/model.pt" not in archive.namelist()
        large_files = archive.read("toy_bundle/large_files.yml").decode()
    sha256 = hashlib.sha256((big / "models" / "model.pt").read_bytes()).hexdigest()
    assert sha256 in large_files and "https://example.org/w.pt" in large_files


def test_prepare_monailabel_app_unpacks_bundles_into_its_model_folder(tmp_path, tmp_path_factory):
    from custom.serving.prepare import main as prepare_main

    zip_path = toy_pack(BUNDLE, tmp_path_factory)
    app_dir = tmp_path / "apps" / "t3d"
    assert prepare_main(["--app_dir", str(app_dir), "--bundle", zip_path]) == 0
    assert (app_dir / "main.py").is_file()
    assert (app_dir / "model" / BUNDLE / "models" / "model.pt").is_file()
    assert (app_dir / "model" / BUNDLE / "configs" / "inference.json").is_file()
    assert prepare_main(["--app_dir", str(tmp_path / "nothing"), "--bundle", zip_path, "--stock"]) == 2
