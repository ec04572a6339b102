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
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_toys import toy_name, toy_pack, toy_validation_rows, toy_weights
from conftest import folder_tree, run_bundle

from t3d_tools.packaging.pack import TOY_BANNER, PackError, bundle_requirements, check_version_order, main, pack

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
        "torch",
        "monai",
        "numpy",
        "nibabel",
        "pytorch-ignite",
        "tensorboard",
        "fire",
        "einops",
    }  # einops: SwinUNETR


def test_pack_layout_and_model_info(tmp_path_factory):
    zip_path = toy_pack(BUNDLE, tmp_path_factory)
    version = _metadata(BUNDLE)["version"]
    top, name = toy_name(BUNDLE), f"{toy_name(BUNDLE)}_v{version}-toy"  # a toy build: never the real name / version
    assert os.path.basename(zip_path) == f"{name}.zip"
    assert re.split(r"_v\d*.", f"{name}.zip")[0] == top  # how MONAI's GitHub source reads the asset name
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        inference = json.loads(archive.read(f"{top}/configs/inference.json"))
        metadata = json.loads(archive.read(f"{top}/configs/metadata.json"))
        card = archive.read(f"{top}/docs/README.md").decode()
    assert {n.split("/")[0] for n in names} == {top}  # one top folder, as MONAI's extractall(has_base=True) wants
    for required in (
        "configs/metadata.json",
        "configs/inference.json",
        "models/model.pt",
        "docs/README.md",
        "docs/data_license.txt",
        "LICENSE",
        "custom/__init__.py",
        "custom/transforms/seg_checks.py",
        "custom/data/checks.py",
        "custom/data/prompts/findings_v1.json",
    ):
        assert f"{top}/{required}" in names
    assert not any("/data/" in n and n.endswith(".nii.gz") for n in names)  # no run outputs or data
    # every bundle's modules (one MONAI Label process imports custom/ once for every bundle it serves), no repo tools
    assert f"{top}/custom/transforms/brats_labels.py" in names
    assert not any("t3d_tools" in n for n in names)
    assert inference["network_def"]["_target_"] == "BasicUNet"  # the cpu_toy overlay went into the packed inference
    assert metadata["version"] == f"{version}-toy" and "TOY" in metadata["name"] and "TOY" in metadata["description"]
    assert card.splitlines()[0] == f"> **{TOY_BANNER}**" and "weights-status" not in card
    with open(os.path.join(os.path.dirname(zip_path), "model_info.json")) as f:
        info = json.load(f)
    with open(zip_path, "rb") as f:
        sha1 = hashlib.sha1(f.read()).hexdigest()
    assert info == {
        name: {
            "checksum": sha1,
            "source": f"https://github.com/example/t3d/releases/download/hosting_storage_v1/{name}.zip",
        }
    }


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


_LINEAR = {"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 1}


def _fake_bundle(root, name="toy_bundle", version="0.1.0", config_text=None):
    """A minimal bundle: ``network_def`` a Linear(3, 1) with matching weights, a ``cpu_toy.json`` that makes it a
    Linear(2, 1), and a model card with the weights-status note."""
    bundle = root / name
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "docs").mkdir()
    torch.save(torch.nn.Linear(3, 1).state_dict(), bundle / "models" / "model.pt")
    config_text = config_text or json.dumps({"imports": ["$import custom.data.checks"], "network_def": _LINEAR})
    (bundle / "configs" / "cpu_toy.json").write_text(json.dumps({"network_def": {**_LINEAR, "in_features": 2}}))
    (bundle / "docs" / "README.md").write_text(
        "<!-- weights-status:begin -->\n> No trained weights are published.\n<!-- weights-status:end -->\n\n# Toy\n"
    )
    meta = {
        "version": version,
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4.6",
        "required_packages_version": {"nibabel": "5.4.2", "fire": "0.7.1"},
    }
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    (bundle / "configs" / "inference.json").write_text(config_text)
    return bundle


@pytest.mark.parametrize(
    "name, version, message",
    [
        ("my_vnet", "0.1.0", "contains '_v'"),
        ("toy-bundle", "0.1.0", "letters, digits and underscores"),
        ("toy_bundle", "1.0", "MAJOR.MINOR.PATCH"),
    ],
)
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
        f"error: toy_bundle: no trained weights at {bundle}/models/model.pt (train the bundle or pass --weights PATH)"
    )

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
        packed_metadata = json.loads(archive.read("toy_bundle/configs/metadata.json"))
    sha256 = hashlib.sha256((big / "models" / "model.pt").read_bytes()).hexdigest()
    assert sha256 in large_files and "https://example.org/w.pt" in large_files
    # monai.bundle download_large_files reads large_files.yml with PyYAML: the packed metadata names it
    assert packed_metadata["required_packages_version"]["pyyaml"] == importlib.metadata.version("PyYAML")


def _network(bundle: str, overlays: list[str]) -> torch.nn.Module:
    """``network_def`` of ``bundles/<bundle>/configs/inference.json`` with ``overlays`` merged (untrained)."""
    from monai.bundle import ConfigParser

    config_dir = os.path.join(REPO, "bundles", bundle, "configs")
    parser = ConfigParser()
    parser.read_config([os.path.join(config_dir, name) for name in ["inference.json", *overlays]])
    parser["bundle_root"] = os.path.join(REPO, "bundles", bundle)
    return parser.get_parsed_content("network_def")


def test_pack_refuses_weights_of_another_network_in_one_line(tmp_path, capsys):
    """The issue's case: CPU-toy (BasicUNet) weights packed with the paper-size SwinUNETR ``inference.json``."""
    weights = tmp_path / "w" / "model.pt"
    weights.parent.mkdir()
    torch.save(_network(BUNDLE, ["cpu_toy.json"]).state_dict(), weights)
    assert main([BUNDLE, "--weights", str(weights), "--dist", str(tmp_path / "dist")]) == 2
    error = capsys.readouterr().err.strip()
    print(f"\n{error}")
    assert error.splitlines() == [error]  # one line
    assert error.startswith(f"error: {BUNDLE}: {weights} does not fit configs/inference.json network_def (SwinUNETR): ")
    assert "missing key(s): swinViT.patch_embed.proj.weight, " in error and "unexpected key(s): conv_0." in error
    assert error.endswith("(CPU toy weights: --overlay cpu_toy.json)")
    assert not (tmp_path / "dist").exists()  # nothing written


def test_toy_builds_say_so_and_releases_do_not(tmp_path):
    bundle = _fake_bundle(tmp_path)  # its weights fit the paper network_def, Linear(3, 1)
    dist = tmp_path / "dist"
    with pytest.raises(PackError) as caught:  # paper weights cannot pass as a toy
        pack(str(bundle), str(dist), overlays=["cpu_toy.json"])
    assert re.fullmatch(
        r"toy_bundle: \S+model.pt does not fit configs/inference.json \+ cpu_toy.json network_def "
        r"\(Linear\): 1 shape mismatch\(es\) \(checkpoint vs network\): "
        r"weight \[1, 3\] vs \[1, 2\]; .*",
        str(caught.value),
    )
    release = pack(str(bundle), str(dist))
    assert os.path.basename(release) == "toy_bundle_v0.1.0.zip"
    with zipfile.ZipFile(release) as archive:
        assert json.loads(archive.read("toy_bundle/configs/metadata.json"))["version"] == "0.1.0"
        assert archive.read("toy_bundle/docs/README.md").decode() == "# Toy\n"  # the "no weights" note is dropped

    toy_weights = tmp_path / "toy" / "model.pt"
    toy_weights.parent.mkdir()
    torch.save(torch.nn.Linear(2, 1).state_dict(), toy_weights)
    # toy weights cannot pass as a release
    with pytest.raises(PackError, match="does not fit configs/inference.json network_def"):
        pack(str(bundle), str(dist), weights=str(toy_weights))
    toy = pack(str(bundle), str(dist), weights=str(toy_weights), overlays=["cpu_toy.json"])
    assert os.path.basename(toy) == "toy_bundle_toy_v0.1.0-toy.zip"
    asset = os.path.basename(toy)  # MONAI's parsing (monai.bundle.scripts._get_all_bundles_info) keeps both markers
    parsed_name = re.split(r"_v\d*.", asset)[0]
    assert (parsed_name, asset.split(f"{parsed_name}_v")[-1].replace(".zip", "")) == ("toy_bundle_toy", "0.1.0-toy")
    with zipfile.ZipFile(toy) as archive:
        assert {n.split("/")[0] for n in archive.namelist()} == {"toy_bundle_toy"}
        metadata = json.loads(archive.read("toy_bundle_toy/configs/metadata.json"))
        card = archive.read("toy_bundle_toy/docs/README.md").decode()
    assert metadata["version"] == "0.1.0-toy" and "0.1.0-toy" in metadata["changelog"]
    assert "TOY" in metadata["name"]
    assert TOY_BANNER in metadata["description"] and TOY_BANNER in metadata["intended_use"]
    assert card.startswith(f"> **{TOY_BANNER}**\n") and card.endswith("# Toy\n") and "weights-status" not in card
    with open(dist / "model_info.json") as f:
        assert sorted(json.load(f)) == ["toy_bundle_toy_v0.1.0-toy", "toy_bundle_v0.1.0"]


def _config_custom_names(config_dir: str) -> set[str]:
    """``custom.*`` names of every ``_target_`` and ``$`` expression of a bundle's configs (not metadata.json)."""
    names = set()

    def walk(value, key=None):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and (value.startswith("$") or key == "_target_"):
            names.update(re.findall(r"\bcustom(?:\.\w+)+", value))

    for file_name in os.listdir(config_dir):
        if file_name.endswith(".json") and file_name != "metadata.json":
            with open(os.path.join(config_dir, file_name)) as f:
                walk(json.load(f))
    return names


_IMPORT_FROM_THE_ZIP = """
import importlib, json, os, sys
root, names = sys.argv[1], json.loads(sys.argv[2])
files = set()
for dotted in names:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:end]))
            break
        except ModuleNotFoundError as err:
            if err.name != ".".join(parts[:end]):
                raise
    files.add(obj.__file__)
    for attr in parts[end:]:
        obj = getattr(obj, attr)
outside = sorted(f for name, m in sys.modules.items() if name.split(".")[0] == "custom"
                 for f in [getattr(m, "__file__", None) or ""] if not f.startswith(root + os.sep))
assert not outside, outside
from custom.data.synthetic_ct import FINDING_NAMES
from custom.evaluation.zero_shot import load_prompt_set
for prompt_file, classes in (("findings_v1.json", list(FINDING_NAMES)), ("generic_v1.json", ["nodule", "mass"])):
    prompts = load_prompt_set(prompt_file, classes)
    assert prompts.path.startswith(os.path.join(root, "custom", "data", "prompts")), prompts.path
    print(prompt_file, prompts.version, len(prompts.prompts))
print(len(names), "names,", len(files), "modules, all from", root)
"""


def test_packed_bundle_imports_every_config_module_and_prompt_set_from_the_zip_alone(tmp_path):
    """The runtime ships whole, package data included, repository tooling not at all: unzip a packed
    ``t3d_pretrain`` and, with ``PYTHONPATH`` = the unzipped bundle only (plus the venv), import every ``custom`` name
    of every bundle's configs and load the shipped prompt sets."""
    bundle = "t3d_pretrain"
    weights = tmp_path / "w" / "model.pt"
    weights.parent.mkdir()
    torch.save(_network(bundle, ["cpu_toy.json"]).state_dict(), weights)
    zip_path = pack(bundle, str(tmp_path / "dist"), weights=str(weights), overlays=["cpu_toy.json"])
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unzipped")
    top = toy_name(bundle)
    vendored = sorted(n[len(f"{top}/custom/") :] for n in names if n.startswith(f"{top}/custom/"))
    runtime = sorted(
        p.relative_to(os.path.join(REPO, "custom")).as_posix()
        for p in pathlib.Path(REPO, "custom").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    assert vendored == runtime, sorted(set(vendored) ^ set(runtime))
    assert {"data/prompts/findings_v1.json", "data/prompts/generic_v1.json"} <= set(vendored)
    assert not [n for n in names if "t3d_tools" in n], "repository tooling shipped"
    # the toy build's metadata describes the toy network: its embedding width, not the paper's 512
    with open(os.path.join(REPO, "bundles", bundle, "configs", "cpu_toy.json")) as f:
        toy_width = json.load(f)["embed_dim"]
    with zipfile.ZipFile(zip_path) as archive:
        packed = json.loads(archive.read(f"{top}/configs/metadata.json"))
    assert packed["network_data_format"]["outputs"]["pred"]["num_channels"] == toy_width == 64
    assert _metadata(bundle)["network_data_format"]["outputs"]["pred"]["num_channels"] == 512
    print(f"\n{os.path.basename(zip_path)}: {len(names)} files, custom/ {len(vendored)}")

    config_names = set()
    for name in sorted(os.listdir(os.path.join(REPO, "bundles"))):
        config_names |= _config_custom_names(os.path.join(REPO, "bundles", name, "configs"))
    root = str(tmp_path / "unzipped" / top)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=root, PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_FROM_THE_ZIP, root, json.dumps(sorted(config_names))],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(result.stdout.strip())


def test_prepare_monailabel_app_unpacks_bundles_into_its_model_folder(tmp_path, tmp_path_factory):
    from t3d_tools.serving.prepare import main as prepare_main

    zip_path = toy_pack(BUNDLE, tmp_path_factory)
    app_dir = tmp_path / "apps" / "t3d"
    assert prepare_main(["--app_dir", str(app_dir), "--bundle", zip_path]) == 0
    assert (app_dir / "main.py").is_file()
    assert (app_dir / "model" / toy_name(BUNDLE) / "models" / "model.pt").is_file()
    assert (app_dir / "model" / toy_name(BUNDLE) / "configs" / "inference.json").is_file()
    assert prepare_main(["--app_dir", str(tmp_path / "nothing"), "--bundle", zip_path, "--stock"]) == 2


# ---- archive validation shared by serving.prepare and packaging.download (t3d_tools.packaging.archive) ----


def _zip(path, members) -> str:
    """A zip with ``members``: (name, data) pairs; data ``None`` makes a symbolic-link entry pointing at /etc/passwd."""
    import stat

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            if data is None:
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, "/etc/passwd")
            else:
                archive.writestr(name, data)
    return str(path)


_BUNDLE_FILES = [("good_bundle/configs/metadata.json", '{"version": "0.1.0"}'), ("good_bundle/models/model.pt", b"w")]
_UNSAFE = {  # case -> (members, offending member, what is wrong with it)
    "dotdot": (
        [("../configs/metadata.json", "{}"), ("../models/model.pt", "w")],
        "../configs/metadata.json",
        "a '..' component",
    ),
    "dot": (
        [("./configs/metadata.json", "{}"), ("./good_bundle/models/model.pt", "w")],
        "./configs/metadata.json",
        "a '.' component",
    ),
    "absolute": (
        [("/configs/metadata.json", "{}"), ("/models/model.pt", "w")],
        "/configs/metadata.json",
        "an absolute path",
    ),
    "symlink": (
        [("evil/configs/metadata.json", "{}"), ("evil/models/model.pt", None)],
        "evil/models/model.pt",
        "a symbolic link",
    ),
    "inner_dotdot": (
        [("evil/configs/metadata.json", "{}"), ("evil/../../escaped.txt", "outside")],
        "evil/../../escaped.txt",
        "a '..' component",
    ),
}


def _prepared_app(tmp_path) -> tuple:
    """An app folder holding one unpacked bundle, with sibling files next to the app and next to the bundle."""
    from t3d_tools.serving.prepare import main as prepare_main

    app = tmp_path / "apps" / "t3d"
    assert prepare_main(["--app_dir", str(app), "--bundle", _zip(tmp_path / "good.zip", _BUNDLE_FILES)]) == 0
    (tmp_path / "apps" / "other_app").mkdir()
    (tmp_path / "apps" / "other_app" / "main.py").write_text("# another app")
    (tmp_path / "apps" / "notes.txt").write_text("next to the app")
    (app / "model" / "readme.txt").write_text("next to the bundles")
    return prepare_main, app


@pytest.mark.parametrize("case", sorted(_UNSAFE))
def test_prepare_refuses_unsafe_archives_before_touching_the_disk(tmp_path, capsys, case):
    prepare_main, app = _prepared_app(tmp_path)
    members, member, problem = _UNSAFE[case]
    evil = _zip(tmp_path / f"{case}.zip", members)
    capsys.readouterr()
    before = folder_tree(tmp_path)
    assert prepare_main(["--app_dir", str(app), "--bundle", evil]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {evil}: expected relative paths of plain files and folders inside one bundle folder, found member "
        f"{member!r} with {problem}"
    ]
    assert folder_tree(tmp_path) == before  # the app, its bundles and every sibling byte for byte; nothing new either
    assert not os.path.exists(tmp_path / "escaped.txt") and not os.path.exists(tmp_path / "apps" / "escaped.txt")
    # the same zips through the library call: the project's error type (a DataError, so a ValueError)
    from custom.data.checks import DataError
    from t3d_tools.packaging.archive import ArchiveError
    from t3d_tools.serving.prepare import prepare_app

    with pytest.raises(ArchiveError, match="found member") as caught:
        prepare_app(str(app), [evil])
    assert isinstance(caught.value, DataError) and evil in str(caught.value) and repr(member) in str(caught.value)
    assert folder_tree(tmp_path) == before


def test_prepare_validates_every_zip_first_and_replaces_only_its_own_bundle(tmp_path, capsys):
    prepare_main, app = _prepared_app(tmp_path)
    other = _zip(tmp_path / "other.zip", [("other_bundle/configs/metadata.json", "{}")])
    evil = _zip(tmp_path / "two_tops.zip", [("a/configs/metadata.json", "{}"), ("b/configs/metadata.json", "{}")])
    fresh = tmp_path / "apps" / "fresh"
    assert prepare_main(["--app_dir", str(fresh), "--bundle", other, "--bundle", evil]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {evil}: expected one top-level bundle folder, found 2: ['a', 'b']"
    )
    assert not fresh.exists()  # the valid first zip was not unpacked either: all are checked before any write

    # a damaged member (CRC mismatch) is found before anything is written, too
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("good_bundle/models/model.pt", b"weights" * 100)
    data = bytearray(damaged.read_bytes())
    data[data.index(b"weights") + 3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    before = folder_tree(tmp_path)
    assert prepare_main(["--app_dir", str(app), "--bundle", str(damaged)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {damaged}: expected intact member data, found a CRC mismatch in member 'good_bundle/models/model.pt'"
    )
    assert folder_tree(tmp_path) == before

    # a new version replaces <model>/good_bundle only (a file it no longer has is gone); siblings stay
    updated = _zip(tmp_path / "good_v2.zip", [("good_bundle/configs/metadata.json", '{"version": "0.2.0"}')])
    siblings = {k: v for k, v in folder_tree(tmp_path / "apps").items() if not k.startswith("t3d/model/good_bundle")}
    assert prepare_main(["--app_dir", str(app), "--bundle", updated]) == 0
    after = folder_tree(tmp_path / "apps")
    assert {k: v for k, v in after.items() if not k.startswith("t3d/model/good_bundle")} == siblings
    assert sorted(k for k in after if k.startswith("t3d/model/good_bundle")) == [
        "t3d/model/good_bundle",
        "t3d/model/good_bundle/configs",
        "t3d/model/good_bundle/configs/metadata.json",
    ]
    assert json.loads((app / "model" / "good_bundle" / "configs" / "metadata.json").read_text())["version"] == "0.2.0"


def test_download_wrapper_validates_first_leaves_nothing_and_a_retry_is_refused_again(tmp_path, capsys):
    from monai.bundle import download

    from t3d_tools.packaging.download import main as download_main

    members, member, problem = _UNSAFE["inner_dotdot"]
    evil = _zip(tmp_path / "evil.zip", members)
    bundles = tmp_path / "a" / "bundles"
    (bundles / "other_bundle").mkdir(parents=True)
    (bundles / "other_bundle" / "model.pt").write_bytes(b"weights")
    before = folder_tree(tmp_path / "a")
    for _ in range(2):  # the retry is refused the same way: nothing partial was left to be taken for a finished copy
        assert (
            download_main(["--name", "evil", "--url", f"file://{evil}", "--bundle_dir", str(bundles), "--no_progress"])
            == 2
        )
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"error: file://{evil}: expected relative paths of plain files and folders inside one bundle folder, "
            f"found member {member!r} with {problem}"
        )
        assert folder_tree(tmp_path / "a") == before
    assert not (tmp_path / "a" / "escaped.txt").exists()

    # for contrast, MONAI's own download (what the wrapper replaces in the docs): refuses mid-extraction, leaves the
    # partial folder and the zip, and the re-run then "succeeds" without the bundle
    monai_dir = tmp_path / "monai_bundles"
    monai_dir.mkdir()
    with pytest.raises(ValueError, match="Unsafe path"):
        download(name="evil", url=f"file://{evil}", bundle_dir=str(monai_dir), progress=False)
    assert (monai_dir / "evil" / "configs" / "metadata.json").is_file()
    download(name="evil", url=f"file://{evil}", bundle_dir=str(monai_dir), progress=False)  # no error

    # a wrong top folder, a missing file: one line each, nothing left
    good = _zip(tmp_path / "good.zip", _BUNDLE_FILES)
    assert (
        download_main(
            ["--name", "other_bundle", "--url", f"file://{good}", "--bundle_dir", str(bundles), "--no_progress"]
        )
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: file://{good}: expected the bundle folder 'other_bundle', found 'good_bundle' "
        "(member 'good_bundle/configs/metadata.json')"
    )
    missing = tmp_path / "nowhere.zip"
    assert (
        download_main(
            ["--name", "good_bundle", "--url", f"file://{missing}", "--bundle_dir", str(bundles), "--no_progress"]
        )
        == 2
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        line.startswith(f"error: file://{missing}: expected a downloadable bundle zip, found ") and str(missing) in line
    )
    assert folder_tree(tmp_path / "a") == before

    # a good zip: unpacked to <bundle_dir>/<name>, no temporary folder or zip left; again: replaced, exit 0
    for _ in range(2):
        assert (
            download_main(
                ["--name", "good_bundle", "--url", f"file://{good}", "--bundle_dir", str(bundles), "--no_progress"]
            )
            == 0
        )
        assert folder_tree(tmp_path / "a") == {
            **before,
            "bundles/good_bundle": "<dir>",
            "bundles/good_bundle/configs": "<dir>",
            "bundles/good_bundle/models": "<dir>",
            "bundles/good_bundle/configs/metadata.json": hashlib.sha1(b'{"version": "0.1.0"}').hexdigest(),
            "bundles/good_bundle/models/model.pt": hashlib.sha1(b"w").hexdigest(),
        }
