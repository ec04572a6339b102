"""Synthetic engine, datalists, the volume cache and crop sampling, and one-line errors on bad inputs."""

from __future__ import annotations

import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from custom.data.pairs import PairsDataset, load_pairs
from custom.data.synthetic_ct import FINDING_NAMES, Finding, render_phantom
from custom.data.volume_cache import VolumeCache
from custom.errors import DataError
from custom.transforms.preprocessing import VolumePreprocessing
from custom.transforms.subvolume import read_crops, sample_crop_origins, strata_grid, stratified_crop_origins


def _write(path, array, affine=None) -> str:
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 2.0, 1.0]) if affine is None else affine), str(path))
    return str(path)


def _datalist(tmp_path, rows, split="training") -> str:
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({split: rows}), encoding="utf-8")
    return str(path)


def test_synthetic_engine_is_deterministic_and_images_agree_with_findings():
    findings = [Finding("mass", "left", "upper", 40.0), Finding("pleural effusion", "right")]
    a = render_phantom(findings, shape=(64, 64, 64), spacing=(4.0, 4.0, 4.0), seed=5)
    b = render_phantom(findings, shape=(64, 64, 64), spacing=(4.0, 4.0, 4.0), seed=5)
    assert np.array_equal(a.image, b.image)
    mass = a.finding_mask == 1 + FINDING_NAMES.index("mass")
    assert mass.sum() > 0
    centre = np.argwhere(mass).mean(0)
    assert centre[0] < 32 and centre[2] > 32  # left (low i in RAS+) and upper (high k)
    assert a.image[mass].mean() > -200 > a.image[a.organs == 21].mean()  # a soft-tissue mass inside aerated lung
    effusion = a.finding_mask == 1 + FINDING_NAMES.index("pleural effusion")
    assert np.argwhere(effusion).mean(0)[0] > 32  # right
    assert a.label_vector().tolist() == [float(n in ("mass", "pleural effusion")) for n in FINDING_NAMES]


def test_crops_are_native_resolution_inside_the_volume_and_body_biased(tmp_path):
    phantom = render_phantom([], shape=(80, 72, 60), spacing=(0.8, 0.8, 1.25), seed=1)
    path = _write(tmp_path / "ct.nii.gz", phantom.image, phantom.affine)
    cache = VolumeCache(str(tmp_path / "cache"), VolumePreprocessing(target_spacing=(1.5, 1.5, 1.5)))
    dataset = PairsDataset(
        [{"image": path, "report": "No acute findings."}], cache, crop_size=(32, 32, 32), crops_per_volume=4
    )
    volume = cache.load(path)
    # target spacing coarser than the source is not applied: the cached grid is the source grid
    assert volume.array.shape == phantom.image.shape
    assert np.allclose(np.sqrt((volume.affine[:3, :3] ** 2).sum(0)), (0.8, 0.8, 1.25))
    expected = np.clip((phantom.image.astype(np.float32) + 1000) / 2000, 0, 1)
    torch.manual_seed(0)
    item = dataset[0]
    assert item["image"].shape == (4, 1, 32, 32, 32)
    origins = sample_crop_origins(
        volume.array.shape, (32, 32, 32), volume.foreground, 500, 1.0, np.random.default_rng(0)
    )
    assert (origins >= 0).all() and (origins + 32 <= np.array(volume.array.shape)).all()
    o = origins[0]
    assert np.allclose(
        read_crops(volume.array, [o], (32, 32, 32))[0],
        expected[o[0] : o[0] + 32, o[1] : o[1] + 32, o[2] : o[2] + 32],
        atol=1e-3,
    )
    body = (phantom.image > -500) | (phantom.organs > 0)  # the patient: tissue, and the lungs it encloses

    def body_fraction(prob):
        origins = sample_crop_origins(
            volume.array.shape, (8, 8, 8), volume.foreground, 2000, prob, np.random.default_rng(1)
        )
        centres = origins + 4
        return body[tuple(centres.T)].mean()

    assert body_fraction(1.0) > 0.95
    assert body_fraction(1.0) > body_fraction(0.0) + 0.1


def test_stratified_crops_fall_in_different_cells_of_the_body():
    assert strata_grid((32, 32, 32), 2) == (2, 1, 1)
    assert strata_grid((512, 512, 300), 4) == (2, 2, 1)
    assert strata_grid((32, 32, 32), 8) == (2, 2, 2)
    shape = (48, 40, 64)
    body = np.zeros(shape, bool)
    body[8:40, 4:36, 10:60] = True  # a box of body inside air
    foreground = np.argwhere(body)
    low, high = foreground.min(0), foreground.max(0) + 1
    cells = np.asarray(strata_grid(high - low, 8))
    for seed in range(20):
        origins = stratified_crop_origins(shape, (16, 16, 16), foreground, 8, np.random.default_rng(seed))
        assert origins.shape == (8, 3)
        assert (origins >= 0).all() and (origins + 16 <= np.array(shape)).all()
        centres = np.clip(origins + 8, low, high - 1)
        cell_ids = {tuple(c) for c in np.minimum((centres - low) * cells // (high - low), cells - 1)}
        assert len(cell_ids) == 8, (seed, origins)  # one crop per cell: the crops cover the body
    # independent draws put two of four crops in one quadrant far more often
    same_quadrant = 0
    for seed in range(50):
        origins = sample_crop_origins(shape, (16, 16, 16), foreground, 4, 1.0, np.random.default_rng(seed))
        quadrants = {
            tuple(q) for q in np.minimum((np.clip(origins + 8, low, high - 1) - low) * 2 // (high - low), 1)[:, [0, 2]]
        }
        same_quadrant += len(quadrants) < 4
    assert same_quadrant > 25


def test_cache_is_built_once_and_reused(tmp_path):
    path = _write(tmp_path / "ct.nii.gz", render_phantom([], shape=(40, 40, 40), seed=2).image)
    cache = VolumeCache(str(tmp_path / "cache"), VolumePreprocessing())
    cache.prepare([path], progress=False)
    files = sorted(os.listdir(tmp_path / "cache"))
    stamps = [os.path.getmtime(tmp_path / "cache" / f) for f in files]
    cache.prepare([path], progress=False)
    assert [os.path.getmtime(tmp_path / "cache" / f) for f in files] == stamps
    assert VolumeCache(str(tmp_path / "cache"), VolumePreprocessing(hu_window=(-500, 500))).key(path) != cache.key(path)


def test_csv_datalist_as_bimcv_r_ships_it(tmp_path):
    path = _write(tmp_path / "a.nii.gz", np.zeros((8, 8, 8), np.int16))
    (tmp_path / "pairs.csv").write_text(
        f"path,Report_en\n{path},FINDINGS: No acute findings.  No acute findings.\n", encoding="utf-8"
    )
    rows = load_pairs(str(tmp_path / "pairs.csv"))
    assert rows[0]["report"] == "No acute findings."
    (tmp_path / "bad.csv").write_text("image,text\nx,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv: expected a 'path' column"):
        load_pairs(str(tmp_path / "bad.csv"))


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_image", r"\[training #0\]: image file not found"),
        ("empty_report", r"\[training #0\]: expected a non-empty report, found whitespace only"),
        ("non_utf8", r"datalist.json: expected UTF-8 text, found an invalid byte at offset"),
        ("missing_key", r"\[training #0\]: expected key 'report'"),
    ],
)
def test_bad_datalist_rows_stop_with_one_line(tmp_path, case, message):
    image = _write(tmp_path / "ok.nii.gz", np.zeros((8, 8, 8), np.int16))
    rows = [{"image": image, "report": "No acute findings."}]
    if case == "missing_image":
        rows[0]["image"] = str(tmp_path / "absent.nii.gz")
    elif case == "empty_report":
        rows[0]["report"] = "   \n "
    elif case == "missing_key":
        del rows[0]["report"]
    path = _datalist(tmp_path, rows)
    if case == "non_utf8":
        with open(path, "wb") as f:
            f.write(b'{"training": [{"image": "x", "report": "caf\xe9"}]}')
    with pytest.raises(DataError, match=message) as err:
        load_pairs(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "case, message",
    [
        ("truncated", r"expected a readable NIfTI, found a corrupt or truncated file"),
        ("not_nifti", r"expected a readable NIfTI, found a corrupt or truncated file"),
        ("two_d", r"expected a 3D volume, found shape \(16, 16\)"),
        ("four_d", r"expected a 3D volume, found shape \(8, 8, 8, 2\)"),
        ("nan", r"expected finite intensities, found 3 NaN/inf voxels"),
        ("two_slices", r"expected at least 8 voxels along every axis of a 3D volume, found shape \(32, 32, 2\)"),
    ],
)
def test_bad_volumes_stop_with_one_line_naming_the_file(tmp_path, case, message):
    path = tmp_path / f"{case}.nii.gz"
    if case == "truncated":
        _write(path, np.random.rand(16, 16, 16).astype(np.float32))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "not_nifti":
        path.write_bytes(gzip.compress(b"this is not an image"))
    elif case == "two_d":
        _write(path, np.zeros((16, 16), np.float32))
    elif case == "four_d":
        _write(path, np.zeros((8, 8, 8, 2), np.float32))
    elif case == "two_slices":  # 32x32x2 at 45 mm: passes every spacing check, but is not a volume
        _write(path, np.zeros((32, 32, 2), np.float32), np.diag([45.0, 45.0, 45.0, 1.0]))
    else:
        array = np.zeros((8, 8, 8), np.float32)
        array[0, 0, :3] = np.nan
        _write(path, array)
    cache = VolumeCache(str(tmp_path / "cache"), VolumePreprocessing())
    with pytest.raises(DataError, match=message) as err:
        cache.prepare([str(path)], progress=False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_txt_report_paths_are_read_as_utf8_everywhere(tmp_path):
    from custom.data.integrity import verify_datalist

    phantom = render_phantom([], shape=(16, 16, 16), spacing=(4.0, 4.0, 4.0), seed=0)
    _write(tmp_path / "ct.nii.gz", phantom.image, phantom.affine)
    (tmp_path / "good.txt").write_text("No acute findings. Lungs are clear.", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("Pequeño nódulo.".encode("latin-1"))
    datalist = tmp_path / "pairs.json"

    def rows(report):
        datalist.write_text(json.dumps({"training": [{"image": "ct.nii.gz", "report": report, "patient_id": "p"}]}))
        return str(datalist)

    assert load_pairs(rows("good.txt"))[0]["report"] == "No acute findings. Lungs are clear."
    assert verify_datalist(rows("good.txt")) == []
    for report, expected in (
        ("latin1.txt", "expected UTF-8 text, found an invalid byte at offset 5"),
        ("gone.txt", "found no file"),
    ):
        with pytest.raises(DataError) as excinfo:
            load_pairs(rows(report))
        assert expected in str(excinfo.value) and "\n" not in str(excinfo.value)
        assert any(expected in problem for problem in verify_datalist(rows(report)))
