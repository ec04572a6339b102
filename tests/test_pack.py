"""Packing: the zip's layout and what it vendors, and the refusals (names and versions MONAI would mis-parse,
vendored imports the metadata does not name, missing weights, weights of another network); toy builds say they are
toys, releases do not."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest
import torch
from bundle_toys import bundle_metadata, toy_name, toy_pack

from t3d_tools.packaging.pack import TOY_BANNER, PackError, bundle_requirements, check_version_order, main, pack

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_CT = os.path.join(REPO, "tests", "data", "real_ct", "example_ct_sm.nii.gz")
BUNDLE = "t3d_btcv_seg"


def test_requirements_are_exactly_the_metadata_packages():
    requirements = bundle_requirements(bundle_metadata(BUNDLE))
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
        "tqdm",
    }  # einops: SwinUNETR; tqdm: the shared runtime's progress bars (the runtime imports report affinity's error)


def test_pack_layout_and_model_info(tmp_path_factory):
    zip_path = toy_pack(BUNDLE, tmp_path_factory)
    version = bundle_metadata(BUNDLE)["version"]
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
    assert bundle_metadata(bundle)["network_data_format"]["outputs"]["pred"]["num_channels"] == 512
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
