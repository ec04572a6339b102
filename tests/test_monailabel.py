"""MONAI Label serving, end to end with a real server: ``monailabel start_server`` on 127.0.0.1 from MONAI Label's own
venv, ``GET /info/`` and ``POST /infer/<model>`` with a synthetic volume and the real CT.

- Segmentation: the three toy-trained, packed segmentation bundles (toy builds, so served as ``<bundle>_toy``)
  unpacked into MONAI Label's stock ``monaibundle`` app (``--conf models t3d_btcv_seg_toy,t3d_msd_lung_toy,t3d_brats_toy
  --conf zoo_source github --conf sam2 false``); the returned label map must have the input's shape and only the
  label-map values.
- The paper network: ``t3d_btcv_seg`` packed as a release (SwinUNETR feature size 48 of ``inference.json``, randomly
  initialised, seed 0) served on the real CT; its label map must match the input's shape and affine and agree with
  the same bundle run in this repository's venv (the two stacks differ: MONAI Label's venv runs monai 1.5.2,
  torch 2.14.1, numpy 1.26, the bundles declare monai 1.6.1, torch 2.13.0, numpy 2.x).
- Classification: ``t3d_bimcv_cls`` through this repository's app (``t3d_tools/serving/monailabel_app``); the returned
  per-class scores must be probabilities, one per class of its ``channel_def``.

Marked ``monailabel``: it runs only when ``T3D_MONAILABEL_VENV`` names a venv built by ``scripts/setup_monailabel.sh``
(about 8 GB, 7 min), which ``.ci/run_monailabel`` does; otherwise it is skipped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
from bundle_toys import toy_name, toy_pack, toy_validation_rows
from conftest import BUNDLES, REPO_ROOT

pytestmark = pytest.mark.monailabel
VENV = os.environ.get("T3D_MONAILABEL_VENV", "")
MONAILABEL = os.path.join(VENV, "bin", "monailabel")
if not os.path.isfile(MONAILABEL):
    pytest.skip(
        "MONAI Label venv not given: T3D_MONAILABEL_VENV=<venv of scripts/setup_monailabel.sh>", allow_module_level=True
    )

requests = pytest.importorskip("requests")
REAL_CT = os.path.join(REPO_ROOT, "tests", "data", "real_ct", "example_ct_sm.nii.gz")
SEG = {  # bundle -> (datalist of its miniature, values of its saved label map)
    "t3d_btcv_seg": ("dataset_0.json", set(range(14))),
    "t3d_msd_lung": ("datalist.json", {0, 1}),
    "t3d_brats": ("datalist.json", {0, 1, 2, 4}),
}
CLS = "t3d_bimcv_cls"
STARTUP_S = 300


def _env(threads: int = 1) -> dict:
    """MONAI Label's launcher runs the ``python`` on PATH: its venv first; nothing of this repository's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=str(threads), PATH=os.path.join(VENV, "bin") + os.pathsep + env.get("PATH", ""))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``monailabel start_server`` in its own process group; stopped by that group id."""

    def __init__(self, app_dir: str, studies: str, models: list[str], log_path: str, threads: int = 1):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [
            MONAILABEL,
            "start_server",
            "--app",
            app_dir,
            "--studies",
            studies,
            "--conf",
            "models",
            ",".join(models),
            "--conf",
            "zoo_source",
            "github",
            "--conf",
            "sam2",
            "false",
            "--conf",
            "skip_trainers",
            "true",
            "--conf",
            "preload",
            "false",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            command,
            cwd=os.path.dirname(app_dir),
            env=_env(threads),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"monailabel exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(2)
        self.stop()
        raise AssertionError(f"monailabel did not answer within {STARTUP_S} s:\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-4000:]

    def infer(self, model: str, image: str, output: str) -> requests.Response:
        with open(image, "rb") as f:
            response = requests.post(
                f"{self.url}/infer/{model}",
                params={"output": output},
                files={"file": (os.path.basename(image), f)},
                data={"params": "{}"},
                timeout=600,
            )
        assert response.status_code == 200, f"{response.status_code} {response.text[:500]}\n{self.tail()}"
        return response

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def _app(kind: str, tmp_path_factory, bundles: list[str]) -> str:
    from t3d_tools.serving.prepare import prepare_app

    apps = tmp_path_factory.mktemp(f"apps_{kind}")
    if kind == "stock":
        subprocess.run(
            [MONAILABEL, "apps", "--download", "--name", "monaibundle", "--output", str(apps)],
            check=True,
            capture_output=True,
            env=_env(),
        )
        app_dir = str(apps / "monaibundle")
    else:
        app_dir = str(apps / "t3d")
    prepare_app(app_dir, [toy_pack(b, tmp_path_factory) for b in bundles], stock=kind == "stock")
    return app_dir


@pytest.fixture(scope="module")
def seg_server(tmp_path_factory):
    app_dir = _app("stock", tmp_path_factory, list(SEG))
    studies = tmp_path_factory.mktemp("studies_seg")
    models = [toy_name(b) for b in SEG]
    server = Server(app_dir, str(studies), models, str(tmp_path_factory.mktemp("logs") / "seg_server.log"))
    yield server
    server.stop()


def _synthetic_image(bundle: str, tmp_path_factory) -> str:
    """One validation image of the bundle's synthetic miniature, as one file (BraTS: 4 modalities stacked in 4D)."""
    row = toy_validation_rows(bundle, SEG[bundle][0], tmp_path_factory)[0]
    if isinstance(row["image"], str):
        return row["image"]
    volumes = [nib.load(path) for path in row["image"]]
    stacked = np.stack([np.asarray(v.dataobj, dtype=np.float32) for v in volumes], axis=-1)
    path = str(tmp_path_factory.mktemp("stacked") / f"{bundle}_4ch.nii.gz")
    nib.save(nib.Nifti1Image(stacked, volumes[0].affine), path)
    return path


def test_info_lists_the_segmentation_models(seg_server):
    info = requests.get(f"{seg_server.url}/info/", timeout=30).json()
    for bundle in SEG:
        model = info["models"][toy_name(bundle)]
        assert model["type"] == "segmentation"
        with open(os.path.join(BUNDLES, bundle, "configs", "metadata.json")) as f:
            metadata = json.load(f)
        # MONAI Label names labels after outputs.pred's channel_def, background excluded: the label values for BTCV and
        # lung; for BraTS the three sigmoid channels TC / WT / ET (0 / 1 / 2), not the label map's 1 / 2 / 4
        channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
        assert model["labels"] == {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}
        assert model["version"] == metadata["version"] + "-toy"  # a toy build


@pytest.mark.parametrize(
    "bundle, source",
    [
        ("t3d_btcv_seg", "synthetic"),
        ("t3d_btcv_seg", "real_ct"),
        ("t3d_msd_lung", "synthetic"),
        ("t3d_msd_lung", "real_ct"),
        ("t3d_brats", "synthetic"),
    ],
)
def test_infer_returns_a_label_map_in_the_input_shape(seg_server, bundle, source, tmp_path, tmp_path_factory):
    image = REAL_CT if source == "real_ct" else _synthetic_image(bundle, tmp_path_factory)
    response = seg_server.infer(toy_name(bundle), image, output="image")
    label_path = tmp_path / "label.nii.gz"
    label_path.write_bytes(response.content)
    label = np.asarray(nib.load(str(label_path)).dataobj)
    source_image = nib.load(image)
    assert label.shape == source_image.shape[:3]  # one label map in the input grid (BraTS: 4 channels -> 1 map)
    np.testing.assert_allclose(nib.load(str(label_path)).affine, source_image.affine, atol=1e-4)
    values = set(np.unique(label).astype(int).tolist())
    assert values <= SEG[bundle][1], values
    print(f"\n[{bundle} on {source}] label map {label.shape}, values {sorted(values)}")


def _stand_in_classifier(root) -> str:
    """A minimal classification bundle zip (3-class DenseNet, sigmoid scores, output type ``probabilities``) named
    without "classification", so MONAI Label's stock typing would take it for a segmentation model."""
    import zipfile

    import torch
    from monai.networks.nets import DenseNet

    network_def = {
        "_target_": "DenseNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 3,
        "init_features": 4,
        "growth_rate": 4,
        "block_config": [2, 2],
    }
    inference = {
        "imports": ["$import glob"],
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Resized", "keys": "image", "spatial_size": [32, 32, 32]},
                {"_target_": "ScaleIntensityd", "keys": "image"},
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True}],
        },
    }
    channel_def = {"0": "finding a", "1": "finding b", "2": "finding c"}
    metadata = {
        "version": "0.1.0",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [32, 32, 32]}},
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "classes",
                    "num_channels": 3,
                    "spatial_shape": [1, 3],
                    "channel_def": channel_def,
                }
            },
        },
    }
    torch.manual_seed(0)
    kwargs = {k: v for k, v in network_def.items() if k != "_target_"}
    weights = root / "model.pt"
    torch.save(DenseNet(**kwargs).state_dict(), weights)
    zip_path = root / "toy_scores_v0.1.0.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("toy_scores/configs/inference.json", json.dumps(inference))
        archive.writestr("toy_scores/configs/metadata.json", json.dumps(metadata))
        archive.write(weights, "toy_scores/models/model.pt")
    return str(zip_path)


@pytest.fixture(scope="module")
def cls_server(tmp_path_factory):
    """This repository's app with the stand-in classifier, plus t3d_bimcv_cls when the tree has it."""
    from t3d_tools.serving.prepare import prepare_app

    zips = [_stand_in_classifier(tmp_path_factory.mktemp("stand_in"))]
    real = os.path.isfile(os.path.join(BUNDLES, CLS, "configs", "inference.json"))
    if real:
        zips.append(toy_pack(CLS, tmp_path_factory))
    app_dir = str(tmp_path_factory.mktemp("apps_ours") / "t3d")
    models = prepare_app(app_dir, zips)
    studies = tmp_path_factory.mktemp("studies_cls")
    server = Server(app_dir, str(studies), models, str(tmp_path_factory.mktemp("logs") / "cls_server.log"))
    yield server
    server.stop()


def _check_scores(server, model: str, channel_def: dict, image: str) -> None:
    prediction = server.infer(model, image, output="json").json()["prediction"]
    expected = [v.lower() for _, v in sorted(channel_def.items(), key=lambda kv: int(kv[0]))]
    assert [p["label"].lower() for p in prediction] == expected
    scores = np.array([p["score"] for p in prediction])
    assert np.all((scores >= 0) & (scores <= 1)), scores
    scored = ", ".join(f"{p['label']} {p['score']:.3f}" for p in prediction)
    print(f"\n[{model} on {os.path.basename(image)}] {scored}")


def test_our_app_serves_a_probabilities_bundle_as_classification(cls_server, tmp_path_factory):
    info = requests.get(f"{cls_server.url}/info/", timeout=30).json()
    assert info["models"]["toy_scores"]["type"] == "classification"
    channel_def = {"0": "finding a", "1": "finding b", "2": "finding c"}
    for image in (REAL_CT, _synthetic_ct(tmp_path_factory)):
        _check_scores(cls_server, "toy_scores", channel_def, image)


def test_classification_bundle_returns_per_class_probabilities(cls_server, tmp_path_factory):
    if not os.path.isfile(os.path.join(BUNDLES, CLS, "configs", "inference.json")):
        pytest.skip(f"bundles/{CLS} is absent (no configs/inference.json in this tree)")
    with open(os.path.join(BUNDLES, CLS, "configs", "metadata.json")) as f:
        channel_def = next(iter(json.load(f)["network_data_format"]["outputs"].values()))["channel_def"]
    info = requests.get(f"{cls_server.url}/info/", timeout=30).json()
    assert info["models"][toy_name(CLS)]["type"] == "classification"
    for image in (REAL_CT, _synthetic_ct(tmp_path_factory)):
        _check_scores(cls_server, toy_name(CLS), channel_def, image)


def _synthetic_ct(tmp_path_factory) -> str:
    return _synthetic_image("t3d_btcv_seg", tmp_path_factory)


# ---- the paper network (SwinUNETR fs48) on the real CT, against this repository's stack ---------------------------


def _peak_rss_mb(pid_group: int) -> float:
    """Largest VmHWM (peak resident memory) among the processes of a process group, MB."""
    peak = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != pid_group:
                continue
            with open(f"/proc/{pid}/status") as f:
                hwm = next(line for line in f if line.startswith("VmHWM:"))
            peak = max(peak, int(hwm.split()[1]) / 1024)
        except (OSError, StopIteration):
            continue
    return peak


def _stack(python: str) -> str:
    code = "import monai, torch, numpy; print(monai.__version__, torch.__version__, numpy.__version__)"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, env=_env(), check=True).stdout.strip()


@pytest.fixture(scope="module")
def paper_release(tmp_path_factory):
    """``t3d_btcv_seg_v<version>.zip`` packed as a release: the paper-size network of ``inference.json`` with random
    weights (seed 0) inline (``max_inline_mb`` above their size)."""
    import torch
    from monai.bundle import ConfigParser

    from t3d_tools.packaging.pack import pack

    config_dir = os.path.join(BUNDLES, "t3d_btcv_seg", "configs")
    parser = ConfigParser()
    parser.read_config(os.path.join(config_dir, "inference.json"))
    parser.read_meta(os.path.join(config_dir, "metadata.json"))
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    assert type(network).__name__ == "SwinUNETR" and parser["network_def"]["feature_size"] == 48
    weights = tmp_path_factory.mktemp("paper_weights") / "model.pt"
    torch.save(network.state_dict(), weights)
    return pack("t3d_btcv_seg", str(tmp_path_factory.mktemp("paper_dist")), weights=str(weights), max_inline_mb=1000)


def test_paper_network_is_served_on_the_real_ct_as_this_stack_runs_it(paper_release, tmp_path_factory, tmp_path):
    import torch
    from monai.bundle import ConfigWorkflow

    app_dir = str(tmp_path_factory.mktemp("apps_paper") / "monaibundle")
    subprocess.run(
        [MONAILABEL, "apps", "--download", "--name", "monaibundle", "--output", os.path.dirname(app_dir)],
        check=True,
        capture_output=True,
        env=_env(),
    )
    from t3d_tools.serving.prepare import prepare_app

    assert prepare_app(app_dir, [paper_release], stock=True) == ["t3d_btcv_seg"]
    studies = tmp_path_factory.mktemp("studies_paper")
    # the paper network alone on the machine: all its cores, for the server and then for this venv's run
    threads = os.cpu_count() or 1
    server = Server(app_dir, str(studies), ["t3d_btcv_seg"], str(tmp_path / "paper_server.log"), threads=threads)
    try:
        info = requests.get(f"{server.url}/info/", timeout=30).json()["models"]["t3d_btcv_seg"]
        started = time.monotonic()
        response = server.infer("t3d_btcv_seg", REAL_CT, output="image")
        served_s = time.monotonic() - started
        peak_mb = _peak_rss_mb(server.process.pid)
    finally:
        server.stop()
    assert "-toy" not in info["version"]  # a release build, served under the real name
    served_path = tmp_path / "served.nii.gz"
    served_path.write_bytes(response.content)
    served, source = nib.load(str(served_path)), nib.load(REAL_CT)
    assert served.shape == source.shape
    np.testing.assert_allclose(served.affine, source.affine, atol=1e-4)
    served_labels = np.asarray(served.dataobj).astype(int)
    assert set(np.unique(served_labels).tolist()) <= set(range(14))

    # the same bundle, weights and image through this repository's stack (inference.json in this venv)
    bundle_root = os.path.join(app_dir, "model", "t3d_btcv_seg")
    started = time.monotonic()
    workflow = ConfigWorkflow(
        config_file=os.path.join(bundle_root, "configs", "inference.json"),
        meta_file=os.path.join(bundle_root, "configs", "metadata.json"),
        workflow_type=None,
        bundle_root=bundle_root,
        images=[REAL_CT],
        output_dir=str(tmp_path / "here"),
        num_workers=0,
    )
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    finally:
        torch.set_num_threads(torch_threads)
    here_s = time.monotonic() - started
    here = nib.load(str(tmp_path / "here" / "example_ct_sm_seg.nii.gz"))
    np.testing.assert_allclose(here.affine, served.affine, atol=1e-4)
    agreement = float(np.mean(np.asarray(here.dataobj).astype(int) == served_labels))
    theirs, ours = _stack(os.path.join(VENV, "bin", "python")), _stack(sys.executable)
    stacks = f"monai, torch, numpy: MONAI Label venv {theirs}, this venv {ours}"
    print(
        f"\n[t3d_btcv_seg fs48 release on the real CT {source.shape}] served in {served_s:.0f} s, server peak RSS "
        f"{peak_mb:.0f} MB ({threads} threads); this venv {here_s:.0f} s; labels served "
        f"{np.unique(served_labels).tolist()}; voxel agreement {agreement:.5f}; {stacks}"
    )
    # random weights put many voxels near an argmax tie: agreement is over voxels, and stack differences are ~1e-6
    assert agreement > 0.99
