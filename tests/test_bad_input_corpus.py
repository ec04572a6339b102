"""The bad-input corpus (issue #15): every bad-input KIND crossed with every ENTRY POINT where it applies.

Each case runs the entry point the way a user does (``python -m monai.bundle run ...`` in the bundle folder, the
``t3d-*`` console scripts, ``python -m t3d_tools.curation.bimcv curate_csv``) on toy-sized inputs with one defect, and
asserts the input contract:

- a non-zero exit status, and no native abort (SIGABRT / exit 134);
- the last non-empty line printed (stdout and stderr together) is one line, ``error: ...`` (the integrity checker:
  its own summary line ``<datalist>: N problem(s)``), naming the bad file or config key;
- no model file (``*.pt``, ``*.pth``, ``*.ts``, ``*.zip``) written under the run's output folder;
- archive cases: nothing outside the target folder touched (the whole case folder is byte-for-byte unchanged);
- a pickled checkpoint's payload never runs (it would create a marker file).

Speed: importing torch/monai/transformers costs ~8 s a process, so the cases run in children forked from one
*fork server*: a separate interpreter (never the pytest process, whose torch thread pools other tests have started)
that pre-imports everything without running a torch op, then forks one child per case. The child points fds 1/2 at a
log file, sets ``sys.argv``, and runs the entry point as the interpreter would (``runpy`` for ``-m`` modules, the
console-script function otherwise): ``SystemExit`` becomes the exit status, any other exception goes through
``sys.excepthook`` (the bundles' one-line hook, once ``start_run`` installed it) and exits 1, through the normal
interpreter teardown (where a thread left in native code would abort the process). A few cases
(:data:`SUBPROCESS_CASES`) also run as true subprocesses to prove the end-to-end form.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLES, REPO_ROOT, folder_tree

from custom.networks.unet_backbone import CPU_TOY_NORM

pytestmark = pytest.mark.slow

# ---------------------------------------------------------------------------------------------- the fork server
_SERVER = r"""
import importlib, json, os, runpy, sys, time, signal
import numpy, nibabel, torch, monai, monai.bundle, monai.bundle.scripts, ignite, fire, transformers, tokenizers
import monai.networks.nets, monai.transforms, monai.handlers, monai.engines, monai.data
import custom, custom.runtime, custom.data.pairs, custom.data.integrity, t3d_tools.curation.bimcv.curate
import custom.data.seg_datasets.btcv, custom.data.classification_datalist, custom.transforms.seg_checks
import custom.networks.t3d, custom.networks.volume_classifier, custom.engines.t3d_trainer, custom.weights.transfer
import t3d_tools.packaging.pack, t3d_tools.packaging.download, t3d_tools.serving.prepare

import gc
gc.freeze()  # the imported modules stay out of every child's collections (and its teardown): copy-on-write stays cheap
channel = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # stray prints of the server itself never reach the protocol channel


def child(case):
    os.chdir(case["cwd"])
    os.environ.update(case.get("env", {}))
    log = os.open(case["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.stdout.reconfigure(line_buffering=True)  # the order a terminal shows
    sys.stderr.reconfigure(line_buffering=True)
    torch.set_num_threads(1)
    sys.argv = list(case["argv"])
    code = 0
    try:
        if case["how"] == "module":
            runpy.run_module(case["target"], run_name="__main__", alter_sys=True)
        else:
            module, function = case["target"].split(":")
            code = getattr(importlib.import_module(module), function)()
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


for line in sys.stdin:
    case = json.loads(line)
    channel.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            code = child(case)
        except BaseException:
            os._exit(70)
        sys.exit(code)  # out of this loop: the interpreter's own teardown, where a native abort would show
    deadline = start + case["timeout"]
    status = None
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw)
        elif time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = "timeout"
        else:
            time.sleep(0.02)
    channel.write(json.dumps({"status": status, "seconds": time.monotonic() - start}) + "\n")
    channel.flush()
"""

CASE_TIMEOUT_S = 120
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONHASHSEED": "0",
}


class ForkServer:
    """One pre-imported interpreter; :meth:`run` forks a child per case and returns (status, output)."""

    def __init__(self, log_dir: str) -> None:
        self.stderr = open(os.path.join(log_dir, "fork_server.log"), "w")
        env = {
            **os.environ,
            **CHILD_ENV,
            "PYTHONPATH": os.pathsep.join(p for p in [REPO_ROOT, os.environ.get("PYTHONPATH", "")] if p),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )

    def run(self, how: str, target: str, argv: list[str], cwd: str, log: str) -> tuple[int | str, str]:
        request = {"how": how, "target": target, "argv": argv, "cwd": cwd, "log": log, "timeout": CASE_TIMEOUT_S}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        assert reply, f"the fork server died; see {self.stderr.name}"
        with open(log, encoding="utf-8", errors="replace") as f:
            return json.loads(reply)["status"], f.read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fork_server = ForkServer(str(tmp_path_factory.mktemp("fork_server")))
    yield fork_server
    fork_server.close()


# ---------------------------------------------------------------------------------------------- shared toy inputs
@dataclass
class Toys:
    """Good inputs every case starts from (built once per module)."""

    root: str
    pairs: dict  # pairs datalist (finding_names, label_vector, reports), image paths absolute
    btcv: dict  # BTCV datalist (image, label, patient_id), paths absolute
    text_encoder: str  # offline text encoder folder (pre-training builds its network before reading volumes)
    seg_weights: str  # state dict of the CPU-toy BTCV network (inference's models/model.pt; pack's --weights)
    pairs_image: tuple  # (array, affine) of a good pairs volume
    btcv_image: tuple  # (array, affine) of a good BTCV volume


def _absolute_rows(datalist_path: str) -> dict:
    with open(datalist_path, encoding="utf-8") as f:
        content = json.load(f)
    base = os.path.dirname(os.path.abspath(datalist_path))
    for value in content.values():
        if isinstance(value, list):
            for row in value:
                if isinstance(row, dict):
                    for key in ("image", "label"):
                        if isinstance(row.get(key), str) and not os.path.isabs(row[key]):
                            row[key] = os.path.join(base, row[key])
    return content


@pytest.fixture(scope="module")
def toys(tmp_path_factory, synthetic_pairs, offline_text_encoder) -> Toys:
    import torch
    from monai.networks.nets import BasicUNet

    from custom.data.seg_datasets import btcv

    root = tmp_path_factory.mktemp("corpus_toys")
    pairs = _absolute_rows(os.path.join(synthetic_pairs, "pairs_datalist.json"))
    btcv_rows = _absolute_rows(btcv.write_miniature(str(root / "btcv"), num_cases=3, shape=(16, 16, 16), seed=0))
    torch.manual_seed(0)
    network = BasicUNet(
        spatial_dims=3, in_channels=1, out_channels=14, features=(8, 16, 32, 64, 64, 8), norm=CPU_TOY_NORM
    )
    weights = str(root / "seg_models" / "model.pt")
    os.makedirs(os.path.dirname(weights))
    torch.save(network.state_dict(), weights)

    def volume(path: str) -> tuple:
        image = nib.load(path)
        return np.asarray(image.dataobj), image.affine

    return Toys(
        str(root),
        pairs,
        btcv_rows,
        offline_text_encoder,
        weights,
        volume(pairs["training"][0]["image"]),
        volume(btcv_rows["training"][0]["image"]),
    )


# ---------------------------------------------------------------------------------------------- entry points
PRETRAIN, SEG_TRAIN, SEG_INFER, CLS_TRAIN = "pretrain", "seg_train", "seg_infer", "cls_train"
INTEGRITY, CURATION, PACK, DOWNLOAD, SERVING = "integrity", "curation", "pack", "download", "serving"
ENTRIES = (PRETRAIN, SEG_TRAIN, SEG_INFER, CLS_TRAIN, INTEGRITY, CURATION, PACK, DOWNLOAD, SERVING)
BUNDLE_ENTRIES = (PRETRAIN, SEG_TRAIN, SEG_INFER, CLS_TRAIN)
DATALIST_ENTRIES = (PRETRAIN, SEG_TRAIN, CLS_TRAIN, INTEGRITY)
MODEL_SUFFIXES = (".pt", ".pth", ".ts", ".zip")


@dataclass
class Case:
    """The inputs of one run of one entry point; a kind function puts one defect into them."""

    entry: str
    dir: str
    toys: Toys
    datalist: dict | None = None  # datalist entries: written to <dir>/data/datalist.json
    datalist_bytes: bytes | None = None  # written instead of ``datalist`` (malformed files)
    datalist_name: str = "datalist.json"
    overrides: dict = field(default_factory=dict)  # bundle ``--id value`` overrides
    args: list = field(default_factory=list)  # extra command-line arguments of console scripts
    images: list = field(default_factory=list)  # seg_infer: files put in imagesTs/
    csv_text: bytes | None = None  # curation
    weights: str | None = None  # pack's --weights, seg_infer's models/model.pt
    archive: str | None = None  # download / serving
    integrity_base: str = "pairs"  # integrity: which good datalist a case starts from ("pairs" or "seg")
    expect: tuple = ()  # substrings the error line must hold (the file or key)
    guard: bool = False  # archive cases: the whole case folder must stay unchanged

    @property
    def data_dir(self) -> str:
        return os.path.join(self.dir, "data")

    @property
    def out(self) -> str:
        return os.path.join(self.dir, "out")

    @property
    def datalist_path(self) -> str:
        return os.path.join(self.data_dir, self.datalist_name)

    @property
    def base(self) -> str:
        if self.entry in (SEG_TRAIN, SEG_INFER) or (self.entry == INTEGRITY and self.integrity_base == "seg"):
            return "seg"
        return "pairs"

    def file(self, name: str) -> str:
        return os.path.join(self.data_dir, name)

    def good_image(self) -> tuple:
        return self.toys.btcv_image if self.base == "seg" else self.toys.pairs_image

    def put_image(self, path: str) -> str:
        """Make ``path`` the first training image (datalist entries), the inference image, or the CSV's only row."""
        if self.entry == SEG_INFER:  # the bundle globs <dataset_dir>/imagesTs: the file is named as it lies there
            path = os.path.join(self.data_dir, "imagesTs", os.path.basename(path))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.images = [path]
        elif self.entry == CURATION:
            self.csv_text = f"path,Report_en\n{path},Right pleural effusion. No nodule.\n".encode()
        else:
            self.datalist["training"][0]["image"] = path
        return path


def _start(entry: str, directory: str, toys: Toys, integrity_base: str = "pairs") -> Case:
    case = Case(entry, directory, toys, integrity_base=integrity_base)
    os.makedirs(case.data_dir)
    os.makedirs(case.out)
    if entry in (PRETRAIN, CLS_TRAIN, INTEGRITY) and case.base == "pairs":
        case.datalist = json.loads(json.dumps(toys.pairs))
    if case.base == "seg" and entry != SEG_INFER:
        case.datalist = json.loads(json.dumps(toys.btcv))
    if entry == SEG_INFER:
        case.images = [toys.btcv["validation"][0]["image"]]
        case.weights = toys.seg_weights
    if entry == CURATION:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(
            [("path", "Report_en")] + [(r["image"], r["report"]) for r in toys.pairs["training"][:4]]
        )
        case.csv_text = text.getvalue().encode()
    if entry == PACK:
        case.weights = toys.seg_weights
    if entry in (DOWNLOAD, SERVING):
        case.archive = _zip(os.path.join(case.data_dir, "good.zip"), _GOOD_MEMBERS)
        case.guard = True
    return case


def _command(case: Case) -> tuple[str, str, list[str], str]:
    """(how, target, argv, cwd) of the case's run; writes the inputs it reads."""
    toys = case.toys
    if case.datalist is not None or case.datalist_bytes is not None:
        with open(case.datalist_path, "wb") as f:
            f.write(case.datalist_bytes if case.datalist_bytes is not None else json.dumps(case.datalist).encode())

    def bundle(name: str, configs: list[str], overrides: dict) -> tuple[str, str, list[str], str]:
        argv = ["monai.bundle", "run", "--config_file", "[" + ",".join(f"'configs/{c}'" for c in configs) + "]"]
        for key, value in {**overrides, **case.overrides}.items():
            argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
        return "module", "monai.bundle", argv, os.path.join(BUNDLES, name)

    common = {"bundle_root": case.out, "dataset_dir": case.data_dir, "datalist": case.datalist_path}
    if case.entry == PRETRAIN:
        return bundle(
            "t3d_pretrain",
            ["train.json", "cpu_toy.json"],
            {
                **common,
                "text_encoder_name": toys.text_encoder,
                "prepare_data": "{}",
                "batch_size": "2",
                "max_epochs": "1",
                "epoch_length": "1",
                "val_interval": "1",
            },
        )
    if case.entry == SEG_TRAIN:
        return bundle(
            "t3d_btcv_seg", ["train.json", "cpu_toy.json"], {**common, "max_epochs": "1", "val_interval": "1"}
        )
    if case.entry == CLS_TRAIN:
        return bundle(
            "t3d_bimcv_cls",
            ["train.json", "cpu_toy.json"],
            {**common, "prepare_data": "{}", "max_epochs": "1", "val_interval": "1", "batch_size": "4"},
        )
    if case.entry == SEG_INFER:
        images = os.path.join(case.data_dir, "imagesTs")
        os.makedirs(images, exist_ok=True)
        for index, path in enumerate(case.images):
            if os.path.dirname(path) != images:
                shutil.copyfile(path, os.path.join(images, f"img{index:04d}" + _suffix(path)))
        models = os.path.join(case.data_dir, "models")
        os.makedirs(models, exist_ok=True)
        if case.weights and os.path.exists(case.weights):
            shutil.copyfile(case.weights, os.path.join(models, "model.pt"))
        return bundle(
            "t3d_btcv_seg",
            ["inference.json", "cpu_toy.json"],
            {"bundle_root": case.out, "dataset_dir": case.data_dir, "ckpt_dir": models},
        )
    if case.entry == INTEGRITY:
        args = ["--num_classes", "14"] if case.base == "seg" else []
        return (
            "console",
            "custom.data.integrity:main",
            ["t3d-integrity", "--datalist", case.datalist_path, *args, *case.args],
            case.dir,
        )
    if case.entry == CURATION:
        csv_path = case.file("reports.csv")
        with open(csv_path, "wb") as f:
            f.write(case.csv_text)
        return (
            "module",
            "t3d_tools.curation.bimcv",
            [
                "t3d_tools.curation.bimcv",
                "curate_csv",
                "--csv_path",
                csv_path,
                "--out",
                case.out,
                "--min_positive",
                "1",
                "--progress",
                "False",
                *case.args,
            ],
            case.dir,
        )
    if case.entry == PACK:
        return (
            "console",
            "t3d_tools.packaging.pack:main",
            [
                "t3d-pack",
                "t3d_btcv_seg",
                "--weights",
                case.weights,
                "--dist",
                os.path.join(case.out, "dist"),
                "--overlay",
                "cpu_toy.json",
                *case.args,
            ],
            case.dir,
        )
    if case.entry == DOWNLOAD:
        os.makedirs(os.path.join(case.out, "bundles", "other_bundle", "models"))
        _write(os.path.join(case.out, "bundles", "other_bundle", "models", "model.pt"), b"other bundle's weights")
        return (
            "console",
            "t3d_tools.packaging.download:main",
            [
                "t3d-download",
                "--name",
                "good_bundle",
                "--bundle_dir",
                os.path.join(case.out, "bundles"),
                "--url",
                f"file://{case.archive}",
                "--no_progress",
                *case.args,
            ],
            case.dir,
        )
    if case.entry == SERVING:
        app = os.path.join(case.out, "apps", "t3d")
        _write(os.path.join(app, "main.py"), b"# the app")
        _write(os.path.join(app, "model", "other_bundle", "models", "model.pt"), b"other bundle's weights")
        _write(os.path.join(case.out, "apps", "notes.txt"), b"next to the app")
        return (
            "console",
            "t3d_tools.serving.prepare:main",
            ["t3d-serving-prepare", "--app_dir", app, "--stock", "--bundle", case.archive, *case.args],
            case.dir,
        )
    raise AssertionError(case.entry)


def _suffix(path: str) -> str:
    return ".nii.gz" if path.endswith(".nii.gz") else os.path.splitext(path)[1]


def _write(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------------------------------------- bad files
def _nifti(path: str, array: np.ndarray, affine: np.ndarray) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64)), path)
    return path


def _float_image(case: Case) -> tuple[np.ndarray, np.ndarray]:
    array, affine = case.good_image()
    return np.array(array, dtype=np.float32), affine


def _random_bytes(count: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(count)


_GOOD_MEMBERS = [("good_bundle/configs/metadata.json", "{}"), ("good_bundle/models/model.pt", "weights")]


def _zip(path: str, members: list, symlink: str | None = None) -> str:
    """A zip of ``(name, text)`` members; ``symlink`` adds a member with Unix symbolic-link mode."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members:
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text)
        if symlink:
            info = zipfile.ZipInfo(symlink, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system, info.external_attr = 3, (0o120777 << 16)
            archive.writestr(info, "/etc/passwd")
    return path


class _Payload:
    """Pickles as a call of ``os.system``: a checkpoint whose load would run a command (it touches a marker)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------------------------------------- the kinds
def _image_kind(write):
    """A kind that writes one bad volume (``write(case, path)``) and makes it the case's first image."""

    def kind(case: Case) -> None:
        path = case.put_image(case.file("bad_volume.nii.gz"))
        write(case, path)
        case.expect = (path,)

    return kind


def _truncated(case: Case, path: str) -> None:
    array, affine = _float_image(case)
    _nifti(path, array, affine)
    with open(path, "rb") as f:
        data = f.read()
    _write(path, data[: len(data) // 2])


def _with_values(value: float):
    def write(case: Case, path: str) -> None:
        array, affine = _float_image(case)
        array[2:4, 3:5, 4:6] = value
        _nifti(path, array, affine)

    return write


def _four_d(case: Case, path: str) -> None:
    array, affine = _float_image(case)
    _nifti(path, np.stack([array, array], axis=-1), affine)


def _singular_affine(case: Case, path: str) -> None:
    array, affine = _float_image(case)
    affine = np.array(affine, dtype=np.float64)
    affine[:3, 2] = 0.0  # the third axis has no direction: not invertible
    header = nib.Nifti1Header()  # written into the header directly: nibabel cannot decompose it into a qform
    header.set_data_shape(array.shape)
    header.set_data_dtype(np.float32)
    header["srow_x"], header["srow_y"], header["srow_z"] = affine[0], affine[1], affine[2]
    header["sform_code"], header["qform_code"] = 1, 0
    header["pixdim"][1:4] = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # consistent: no reader "rectifies" it
    nib.save(nib.Nifti1Image(array, None, header=header), path)


def _singular_sform_valid_qform(case: Case, path: str) -> None:
    """The sform (which nibabel and the pre-training loader use) is singular, the qform is fine: MONAI's reader alone
    would fall back to the qform without a word."""
    array, affine = _float_image(case)
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    singular = np.array(affine, dtype=np.float64)
    singular[:3, 2] = 0.0
    image.set_sform(singular, code=1)
    nib.save(image, path)


def _too_small(case: Case, path: str) -> None:
    array, affine = _float_image(case)
    _nifti(path, np.ascontiguousarray(array[:10, :10, :3]), affine)


def _wrong_channel_count(case: Case) -> None:
    first = case.datalist["training"][0]["image"]
    second = case.datalist["training"][1]["image"]
    case.datalist["training"][0]["image"] = [first, second]  # two channels for a 1-channel network
    case.expect = (first,)


def _label_kind(change):
    def kind(case: Case) -> None:
        row = case.datalist["training"][0]
        label = nib.load(row["label"])
        array, affine = change(np.asarray(label.dataobj), np.array(label.affine))
        row["label"] = _nifti(case.file("bad_label.nii.gz"), array, affine)
        case.expect = (row["label"],)

    return kind


def _shifted(affine: np.ndarray) -> np.ndarray:
    affine = affine.copy()
    affine[0, 3] += 25.0
    return affine


def _missing_image(case: Case) -> None:
    path = case.put_image(case.file("no_such_volume.nii.gz"))
    case.expect = (path,)


def _datalist_bytes(data: bytes):
    def kind(case: Case) -> None:
        case.datalist_bytes = data
        case.expect = (case.datalist_path,)

    return kind


def _missing_split(case: Case) -> None:
    del case.datalist["validation"]
    case.expect = (case.datalist_path, "validation")


def _row_without_image(case: Case) -> None:
    del case.datalist["training"][0]["image"]
    case.expect = (case.datalist_path, "image")


def _empty_report(case: Case) -> None:
    if case.entry == CURATION:
        case.csv_text = (
            b"path,Report_en\n" + "".join(f"{r['image']},  \n" for r in case.toys.pairs["training"][:4]).encode()
        )
        case.expect = (case.file("reports.csv"),)
        return
    case.datalist["training"][0]["report"] = "   "
    case.expect = (case.datalist_path,)


def _report_file(data: bytes | None):
    def kind(case: Case) -> None:
        path = case.file("report_0.txt")
        if data is not None:
            _write(path, data)
        case.datalist["training"][0]["report"] = path
        case.expect = (path,)

    return kind


def _label_vector_length(case: Case) -> None:
    case.datalist["training"][0]["label_vector"] = case.datalist["training"][0]["label_vector"][:-1]
    case.expect = (case.datalist_path, "label_vector")


def _leakage(case: Case) -> None:
    leaked = case.datalist["validation"][0].get("patient_id") or "leaked"
    case.datalist["validation"][0]["patient_id"] = leaked
    case.datalist["training"][0]["patient_id"] = leaked
    case.expect = (case.datalist_path, str(leaked))


def _unknown_override(case: Case) -> None:
    if case.entry == PACK:  # the pack's own overrides: overlay files of the bundle
        case.args += ["--overlay", "cpu_toi.json"]
        case.expect = ("--overlay cpu_toi.json",)
        return
    case.overrides["max_epoch"] = "1"  # a typo of max_epochs
    case.expect = ("--max_epoch", "max_epochs")


def _checkpoint_kind(write):
    """A bad checkpoint (``write(case, path)``) as inference's model, pack's --weights or pretrained_weights."""

    def kind(case: Case) -> None:
        path = case.file("model.pt") if case.entry != SEG_INFER else case.file("bad_checkpoint.pt")
        write(case, path)
        if case.entry in (SEG_TRAIN, CLS_TRAIN):
            case.overrides["pretrained_weights"] = path
        else:
            case.weights = path
        # inference copies the file to models/model.pt, which is what it names
        case.expect = (os.path.join(case.data_dir, "models", "model.pt") if case.entry == SEG_INFER else path,)

    return kind


def _pickled_global(case: Case, path: str) -> None:
    import torch

    torch.save({"model": _Payload(os.path.join(case.dir, "PAYLOAD_RAN"))}, path)


def _truncated_checkpoint(case: Case, path: str) -> None:
    with open(case.toys.seg_weights, "rb") as f:
        data = f.read()
    _write(path, data[: len(data) // 2])


def _other_network(case: Case, path: str) -> None:
    import torch

    torch.manual_seed(0)
    torch.save(torch.nn.Linear(3, 1).state_dict(), path)


def _archive_kind(
    members: list | None = None, symlink: str | None = None, data: bytes | None = None, missing: bool = False
):
    """A bad zip; a member name may hold ``{case}``: the case folder (an absolute path the guard covers)."""

    def kind(case: Case) -> None:
        path = case.file("bad.zip")
        if data is not None:
            _write(path, data)
        elif not missing:
            _zip(path, [(name.format(case=case.dir), text) for name, text in members or []], symlink)
        case.archive = path
        case.expect = (path,)

    return kind


def _archive_truncated(case: Case) -> None:
    with open(case.archive, "rb") as f:
        data = f.read()
    case.archive = _write(case.file("bad.zip"), data[: len(data) // 2])
    case.expect = (case.archive,)


def _csv_kind(text: bytes):
    def kind(case: Case) -> None:
        path = case.file("reports.csv")
        if case.entry == CURATION:
            case.csv_text = text
        else:
            case.datalist, case.datalist_bytes, case.datalist_name = None, text, "reports.csv"
        case.expect = (path,)

    return kind


def _latin1_csv() -> bytes:
    return "path,Report_en,split\nsub-S1_ses-E1_ct.nii.gz,Nódulo pulmonar.,training\n".encode("latin-1")


def _empty_inference_folder(case: Case) -> None:
    case.images = []
    case.expect = (os.path.join(case.data_dir, "imagesTs"),)


@dataclass(frozen=True)
class Kind:
    make: object
    entries: tuple
    what: str
    integrity_base: str = "pairs"  # the good datalist the integrity case starts from: "pairs" or "seg"


_VOLUME_ENTRIES = (PRETRAIN, SEG_TRAIN, SEG_INFER, CLS_TRAIN, INTEGRITY)
_WEIGHT_ENTRIES = (SEG_TRAIN, SEG_INFER, CLS_TRAIN, PACK)
_ARCHIVE_ENTRIES = (DOWNLOAD, SERVING)
_BAD_TOP = [("good_bundle/configs/metadata.json", "{}")]

KINDS: dict[str, Kind] = {
    "truncated_nifti": Kind(_image_kind(_truncated), _VOLUME_ENTRIES + (CURATION,), "a .nii.gz cut in half"),
    "zero_byte_nifti": Kind(
        _image_kind(lambda c, p: _write(p, b"")), _VOLUME_ENTRIES + (CURATION,), "an empty image file"
    ),
    "not_nifti": Kind(
        _image_kind(lambda c, p: _write(p, _random_bytes(4096))),
        _VOLUME_ENTRIES + (CURATION,),
        "random bytes named .nii.gz",
    ),
    "nan_voxels": Kind(_image_kind(_with_values(np.nan)), _VOLUME_ENTRIES + (CURATION,), "NaN voxels"),
    "inf_voxels": Kind(_image_kind(_with_values(np.inf)), _VOLUME_ENTRIES + (CURATION,), "+inf voxels"),
    "image_4d": Kind(_image_kind(_four_d), _VOLUME_ENTRIES, "a 4D (2-channel) file in a 1-channel datalist"),
    "singular_affine": Kind(_image_kind(_singular_affine), _VOLUME_ENTRIES + (CURATION,), "a non-invertible affine"),
    "singular_sform_valid_qform": Kind(
        _image_kind(_singular_sform_valid_qform),
        _VOLUME_ENTRIES + (CURATION,),
        "a singular sform next to a valid qform",
    ),
    "too_small_volume": Kind(
        _image_kind(_too_small), _VOLUME_ENTRIES + (CURATION,), "10x10x3 voxels, below the network minimum"
    ),
    "wrong_channel_count": Kind(
        _wrong_channel_count,
        (PRETRAIN, SEG_TRAIN, CLS_TRAIN, INTEGRITY),
        "two image files in a row of a 1-channel datalist",
    ),
    "label_shape_mismatch": Kind(
        _label_kind(lambda a, f: (np.ascontiguousarray(a[:-2]), f)),
        (SEG_TRAIN, INTEGRITY),
        "label grid smaller than the image's",
        "seg",
    ),
    "label_affine_mismatch": Kind(
        _label_kind(lambda a, f: (a, _shifted(f))), (SEG_TRAIN, INTEGRITY), "label shifted 25 mm from the image", "seg"
    ),
    "label_values_outside": Kind(
        _label_kind(lambda a, f: (np.where(a > 0, 20, 0).astype(np.uint8), f)),
        (SEG_TRAIN, INTEGRITY),
        "label value 20 with 14 classes",
        "seg",
    ),
    "missing_image_file": Kind(_missing_image, DATALIST_ENTRIES + (CURATION,), "a datalist row naming no file"),
    "malformed_json": Kind(
        _datalist_bytes(b'{"training": [\n  {"image": "a.nii.gz",,}\n'),
        DATALIST_ENTRIES,
        "a datalist with a JSON syntax error",
    ),
    "non_utf8_json": Kind(
        _datalist_bytes('{"training": [], "note": "Nódulo"}'.encode("latin-1")), DATALIST_ENTRIES, "a Latin-1 datalist"
    ),
    "datalist_not_object": Kind(
        _datalist_bytes(b'["a.nii.gz", "b.nii.gz"]'), DATALIST_ENTRIES, "a JSON list instead of an object of splits"
    ),
    "missing_split": Kind(_missing_split, (PRETRAIN, SEG_TRAIN, CLS_TRAIN), "no 'validation' split"),
    "row_without_image": Kind(_row_without_image, DATALIST_ENTRIES, "a row without its 'image' key"),
    "empty_report": Kind(_empty_report, (PRETRAIN, INTEGRITY, CURATION), "a whitespace-only report"),
    "non_utf8_report_txt": Kind(
        _report_file("Derrame pleural. Nódulo.".encode("latin-1")), (PRETRAIN, INTEGRITY), "a .txt report in Latin-1"
    ),
    "missing_report_txt": Kind(_report_file(None), (PRETRAIN, INTEGRITY), "a .txt report path naming no file"),
    "label_vector_length": Kind(
        _label_vector_length, (PRETRAIN, CLS_TRAIN, INTEGRITY), "a label_vector one entry short"
    ),
    "patient_leakage": Kind(_leakage, DATALIST_ENTRIES, "one patient in training and validation"),
    "unknown_override": Kind(
        _unknown_override,
        BUNDLE_ENTRIES + (PACK,),
        "--max_epoch 1 (a typo of max_epochs); pack: --overlay cpu_toi.json",
    ),
    "checkpoint_pickled_global": Kind(
        _checkpoint_kind(_pickled_global), _WEIGHT_ENTRIES, "a checkpoint whose pickle calls os.system"
    ),
    "checkpoint_random_bytes": Kind(
        _checkpoint_kind(lambda c, p: _write(p, _random_bytes(4096))), _WEIGHT_ENTRIES, "random bytes named model.pt"
    ),
    "checkpoint_truncated": Kind(_checkpoint_kind(_truncated_checkpoint), _WEIGHT_ENTRIES, "a checkpoint cut in half"),
    "checkpoint_zero_byte": Kind(_checkpoint_kind(lambda c, p: _write(p, b"")), _WEIGHT_ENTRIES, "an empty checkpoint"),
    "checkpoint_missing": Kind(_checkpoint_kind(lambda c, p: None), _WEIGHT_ENTRIES, "a weights path naming no file"),
    "checkpoint_other_network": Kind(_checkpoint_kind(_other_network), (SEG_INFER, PACK), "weights of another network"),
    "archive_dotdot_top": Kind(
        _archive_kind([("../models/model.pt", "x")] + _BAD_TOP), _ARCHIVE_ENTRIES, "a zip whose top folder is '..'"
    ),
    "archive_absolute": Kind(
        _archive_kind([("{case}/escaped/models/model.pt", "x")]), _ARCHIVE_ENTRIES, "a zip member with an absolute path"
    ),
    "archive_dot_top": Kind(
        _archive_kind([("./configs/metadata.json", "{}")]), _ARCHIVE_ENTRIES, "a zip whose top folder is '.'"
    ),
    "archive_symlink": Kind(
        _archive_kind(_BAD_TOP, symlink="good_bundle/models/model.pt"),
        _ARCHIVE_ENTRIES,
        "a zip holding a symbolic link",
    ),
    "archive_two_tops": Kind(
        _archive_kind(_BAD_TOP + [("other_bundle/configs/metadata.json", "{}")]),
        _ARCHIVE_ENTRIES,
        "a zip with two top-level folders",
    ),
    "archive_not_zip": Kind(_archive_kind(data=_random_bytes(2048)), _ARCHIVE_ENTRIES, "random bytes named .zip"),
    "archive_truncated": Kind(_archive_truncated, _ARCHIVE_ENTRIES, "a zip cut in half"),
    "archive_missing": Kind(_archive_kind(missing=True), _ARCHIVE_ENTRIES, "a zip path naming no file"),
    "non_utf8_csv": Kind(_csv_kind(_latin1_csv()), (PRETRAIN, INTEGRITY, CURATION), "a Latin-1 CSV datalist"),
    "csv_missing_column": Kind(
        _csv_kind(b"image,report\na.nii.gz,Nodule.\n"),
        (PRETRAIN, INTEGRITY, CURATION),
        "a CSV without the path / Report_en columns",
    ),
    "empty_inference_folder": Kind(_empty_inference_folder, (SEG_INFER,), "no image to run on"),
}


# ---------------------------------------------------------------------------------------------- issue #31 kinds
def _existing_bundle_folder(case: Case) -> None:
    """The user's own file where the bundle would be unpacked: refused (no --overwrite), nothing touched."""
    parent = (
        os.path.join(case.out, "bundles") if case.entry == DOWNLOAD else os.path.join(case.out, "apps", "t3d", "model")
    )
    target = os.path.join(parent, "good_bundle")
    _write(os.path.join(target, "models", "model_finetuned_on_my_data.pt"), b"weeks of fine-tuning")
    case.expect = (target, "--overwrite")


def _zip_bomb(case: Case) -> None:
    path = case.file("bomb.zip")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good_bundle/configs/metadata.json", "{}")
        archive.writestr("good_bundle/models/model.pt", bytes(64 * 2**20))  # 64 MiB of zeros: ~64 KiB packed
    case.archive, case.expect = path, (path, "compression ratio")


def _many_members(case: Case) -> None:
    path = case.file("many.zip")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(10_001):
            archive.writestr(zipfile.ZipInfo(f"good_bundle/f{index}.txt", date_time=(1980, 1, 1, 0, 0, 0)), "")
    case.archive, case.expect = path, (path, "members")


def _header_claims_huge(case: Case, path: str) -> None:
    """A ~1 KB .nii.gz whose header claims 2000^3 float32 voxels (32 GB)."""
    import gzip

    _, affine = _float_image(case)
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.float32)
    header.set_sform(np.asarray(affine, dtype=np.float64), code=1)
    with gzip.open(path, "wb") as f:
        f.write(header.binaryblock + b"\x00" * 4 + b"\x01" * 100)


def _complex_voxels(case: Case, path: str) -> None:
    array, affine = _float_image(case)
    _nifti(path, array.astype(np.complex64), affine)


def _nan_weights(case: Case, path: str) -> None:
    import torch

    state = torch.load(case.toys.seg_weights, weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].fill_(float("nan"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)


def _alias_case_whitespace_leak(case: Case) -> None:
    """One patient under ``PatientID`` in validation and ``patient_id`` in training, differing in case and spaces."""
    case.datalist["validation"][0].pop("patient_id", None)
    case.datalist["validation"][0]["PatientID"] = " SHARED-PATIENT "
    case.datalist["training"][0]["patient_id"] = "shared-patient"
    case.expect = (case.datalist_path, "shared-patient")


def _malformed_row(case: Case) -> None:
    case.datalist["validation"].append(42)
    case.expect = (case.datalist_path, "42")


def _repeated_study(case: Case) -> None:
    case.datalist["training"] = case.datalist["training"][:1] * 8 + case.datalist["training"][1:]
    case.expect = (case.datalist_path, "expected once in 'training'")


def _zero_width_report(case: Case) -> None:
    if case.entry == CURATION:
        case.csv_text = (
            b"path,Report_en\n"
            + "".join(f"{r['image']},\u200b\u200d\ufeff\n" for r in case.toys.pairs["training"][:4]).encode()
        )
        case.expect = (case.file("reports.csv"),)
        return
    case.datalist["training"][0]["report"] = "\x00\u200b\u200c\x00"
    case.expect = (case.datalist_path, "zero-width")


def _same_name_inputs(case: Case) -> None:
    """``patA/ct.nii.gz`` and ``patB/ct.nii.gz``: both would write ``ct_seg.nii.gz``."""
    paths = []
    for patient in ("patA", "patB"):
        path = case.file(os.path.join(patient, "ct.nii.gz"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(case.toys.btcv["validation"][0]["image"], path)
        paths.append(path)
    case.images = []
    case.overrides["images"] = json.dumps(paths)
    case.expect = tuple(paths)


def _seg_channel_count(case: Case) -> None:
    """A 2-channel 4D image checked for a 1-channel segmentation bundle (``--in_channels 1``)."""
    array, affine = _float_image(case)
    path = _nifti(case.file("two_channels.nii.gz"), np.stack([array, array], axis=-1), affine)
    case.datalist["training"][0]["image"] = path
    case.args += ["--in_channels", "1"]
    case.expect = (path, "--in_channels")


def _bad_override_value(case: Case) -> None:
    key = "overlap" if case.entry == SEG_INFER else "max_epochs"
    case.overrides[key] = "half" if case.entry == SEG_INFER else "one"
    case.expect = (f"--{key}",)


def _wrong_length_override(case: Case) -> None:
    case.overrides["roi_size"] = "[32,32]"
    case.expect = ("--roi_size",)


def _nested_override_typo(case: Case) -> None:
    case.overrides["train#trainer#epoch_lenght"] = "2"
    case.expect = ("--train#trainer#epoch_lenght", "epoch_length")


KINDS.update(
    {
        "existing_bundle_folder": Kind(
            _existing_bundle_folder, _ARCHIVE_ENTRIES, "the user's file in the folder the bundle would replace"
        ),
        "archive_zip_bomb": Kind(_zip_bomb, _ARCHIVE_ENTRIES, "a 64 KiB member unpacking to 64 MiB"),
        "archive_many_members": Kind(_many_members, _ARCHIVE_ENTRIES, "a zip of 10,001 members"),
        "nifti_header_claims_huge": Kind(
            _image_kind(_header_claims_huge), _VOLUME_ENTRIES + (CURATION,), "a 1 KB file whose header claims 2000^3"
        ),
        "complex_voxels": Kind(_image_kind(_complex_voxels), _VOLUME_ENTRIES + (CURATION,), "complex64 voxels"),
        "checkpoint_nan_weights": Kind(_checkpoint_kind(_nan_weights), _WEIGHT_ENTRIES, "weights holding NaN"),
        "patient_alias_leak": Kind(
            _alias_case_whitespace_leak,
            DATALIST_ENTRIES,
            "one patient as PatientID ' SHARED-PATIENT ' and 'shared-patient'",
        ),
        "malformed_row": Kind(_malformed_row, DATALIST_ENTRIES, "a row that is the number 42"),
        "repeated_study": Kind(_repeated_study, DATALIST_ENTRIES, "one study repeated 8x in training"),
        "zero_width_report": Kind(
            _zero_width_report, (PRETRAIN, INTEGRITY, CURATION), "a report of NUL and zero-width characters"
        ),
        "same_name_inference_inputs": Kind(_same_name_inputs, (SEG_INFER,), "patA/ct.nii.gz and patB/ct.nii.gz"),
        "integrity_channel_count": Kind(
            _seg_channel_count, (INTEGRITY,), "a 2-channel image with --in_channels 1", "seg"
        ),
        "override_bad_value": Kind(_bad_override_value, BUNDLE_ENTRIES, "--max_epochs one (inference: --overlap half)"),
        "override_wrong_length": Kind(_wrong_length_override, (SEG_TRAIN, SEG_INFER), "--roi_size [32,32] for 3D"),
        "nested_override_typo": Kind(
            _nested_override_typo, (PRETRAIN, SEG_TRAIN, CLS_TRAIN), "--train#trainer#epoch_lenght 2"
        ),
    }
)

CASES = [(kind, entry) for kind, spec in KINDS.items() for entry in spec.entries]

#: a few cases also run as true subprocesses (the interpreter's own exit path, the installed console scripts)
SUBPROCESS_CASES = [("nan_voxels", SEG_TRAIN), ("truncated_nifti", INTEGRITY), ("archive_dotdot_top", SERVING)]


# ---------------------------------------------------------------------------------------------- the tests
def _model_files(folder: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(base, name), folder)
        for base, _, files in os.walk(folder)
        for name in files
        if name.endswith(MODEL_SUFFIXES)
    )


def _run(server: ForkServer, case: Case, log: str) -> tuple[int | str, list[str]]:
    how, target, argv, cwd = _command(case)
    status, output = server.run(how, target, argv, cwd, log)
    return status, [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("kind, entry", [pytest.param(kind, entry, id=f"{kind}-{entry}") for kind, entry in CASES])
def test_bad_input_stops_with_one_line_and_no_model(kind, entry, server, toys, tmp_path):
    case = _start(entry, str(tmp_path / "case"), toys, KINDS[kind].integrity_base)
    KINDS[kind].make(case)
    how, target, argv, cwd = _command(case)
    before = folder_tree(case.dir) if case.guard else None
    status, output = server.run(how, target, argv, cwd, str(tmp_path / "output.log"))
    _assert_contract(case, kind, status, output, before)


@pytest.mark.parametrize(
    "kind, entry", [pytest.param(kind, entry, id=f"{kind}-{entry}") for kind, entry in SUBPROCESS_CASES]
)
def test_bad_input_end_to_end_in_a_subprocess(kind, entry, toys, tmp_path):
    """The same contract through the real interpreter: ``python -m ...`` / the installed ``t3d-*`` script."""
    case = _start(entry, str(tmp_path / "case"), toys, KINDS[kind].integrity_base)
    KINDS[kind].make(case)
    how, target, argv, cwd = _command(case)
    before = folder_tree(case.dir) if case.guard else None
    command = (
        [sys.executable, "-m", target, *argv[1:]]
        if how == "module"
        else [os.path.join(os.path.dirname(sys.executable), argv[0]), *argv[1:]]
    )
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **CHILD_ENV}
    )
    # stdout then stderr: the error line is written last, to stderr (a negative status: killed by a signal)
    _assert_contract(case, kind, result.returncode, result.stdout + result.stderr, before)
    # stderr alone ends with the error line too (what a terminal shows last when stdout is redirected)
    if entry != INTEGRITY:
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def _assert_contract(case: Case, kind: str, status: int | str, output: str, before: dict | None) -> None:
    entry = case.entry
    lines = [line for line in output.splitlines() if line.strip()]
    shown = "\n".join(lines[-15:])
    assert status != "timeout", f"no answer within {CASE_TIMEOUT_S} s:\n{shown}"
    assert status != 0, f"silent: exit 0 on {KINDS[kind].what}:\n{shown}"
    assert status not in (134, -6) and status > 0, f"native abort or signal ({status}):\n{shown}"
    assert lines, "nothing printed"
    last = lines[-1]
    if entry == INTEGRITY:  # the checker's own form: one line per problem, then '<datalist>: N problem(s)'
        assert last.startswith(f"{case.datalist_path}: ") and last.endswith("problem(s)"), shown
        named = [e for e in case.expect if e != case.datalist_path]  # the datalist itself: named by the last line
        assert any(all(e in line for e in named) for line in lines[:-1]), f"no problem line names {named}:\n{shown}"
    else:
        assert last.startswith("error: "), f"the last line is not a one-line error:\n{shown}"
        assert all(e in last for e in case.expect), f"the error names none of {case.expect}:\n{last}"
    assert "Traceback" not in last and not last.startswith("error: [Errno"), last
    if case.guard:
        assert folder_tree(case.dir) == before, "an archive case changed files"
    else:
        assert _model_files(case.out) == [], "a model file was written"
    assert not os.path.exists(os.path.join(case.dir, "PAYLOAD_RAN")), "a checkpoint's pickled call ran"


def _produced(case: Case) -> list[str]:
    """What a good run of the entry point leaves behind (relative to the case's output folder)."""
    if case.entry in (PRETRAIN, SEG_TRAIN, CLS_TRAIN):
        return ["models/model.pt"]
    if case.entry == SEG_INFER:
        return ["eval/img0000_seg.nii.gz"]
    if case.entry == CURATION:
        return ["pairs_datalist.json"]
    if case.entry == PACK:
        return [
            "dist/t3d_btcv_seg_toy_v"
            + json.load(open(os.path.join(BUNDLES, "t3d_btcv_seg", "configs", "metadata.json")))["version"]
            + "-toy.zip"
        ]
    if case.entry == DOWNLOAD:
        return ["bundles/good_bundle/models/model.pt"]
    if case.entry == SERVING:
        return ["apps/t3d/model/good_bundle/models/model.pt"]
    return []


@pytest.mark.parametrize("entry", ENTRIES)
def test_good_inputs_run_and_write_their_outputs(entry, server, toys, tmp_path):
    """The control of the corpus: the same harness and inputs without the defect exit 0 and write what the entry
    point writes (a model for training), so every failure above is the defect's."""
    case = _start(entry, str(tmp_path / "case"), toys)
    status, lines = _run(server, case, str(tmp_path / "output.log"))
    assert status == 0, "\n".join(lines[-20:])
    for path in _produced(case):
        assert os.path.isfile(os.path.join(case.out, path)), (path, sorted(folder_tree(case.out)))
    if entry == INTEGRITY:
        assert lines[-1] == f"{case.datalist_path}: OK"
