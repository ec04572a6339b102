"""The body the crops are placed over: the patient outline with the lungs it encloses, and evaluation crops over it.

CT-like geometry at a quarter of 512x512x300 (128x128x75, crops of 24^3 for 96^3): the patient fills about a fifth
of the field of view, with air and a table around it (:func:`custom.data.synthetic_ct.render_scan`);
``benchmarks/body_mask.py`` prints the same numbers at full size.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from custom.data.pairs import PairsDataset
from custom.data.synthetic_ct import render_scan
from custom.data.volume_cache import VolumeCache
from custom.transforms.body_mask import body_mask
from custom.transforms.preprocessing import VolumePreprocessing
from custom.transforms.subvolume import BodyGrid, evaluation_crop_origins

SHAPE, SPACING, CROP = (128, 128, 75), (3.12, 3.12, 5.0), (24, 24, 24)


@pytest.fixture(scope="module")
def scan_and_cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scan")
    scan = render_scan(SHAPE, SPACING, seed=3)
    path = str(tmp / "ct.nii.gz")
    nib.save(nib.Nifti1Image(scan.image, scan.affine), path)
    return scan, path, VolumeCache(str(tmp / "cache"), VolumePreprocessing())


def test_cached_body_is_the_patient_with_its_lungs_not_air_or_table(scan_and_cache):
    scan, path, cache = scan_and_cache
    volume = cache.load(path)
    points = tuple(np.asarray(volume.foreground).T)
    count = len(points[0])
    lungs = scan.body & (scan.image < -500)  # aerated lung, about -850 HU: under the tissue threshold
    table = ~scan.body & (scan.image > -500)
    assert lungs.any() and table.any()
    assert count == 50000 and scan.body[points].all() and not table[points].any()
    # uniform over the patient: the lungs get their share of crop centres (binomial, 4 sigma); 0 by the old threshold
    share = lungs.sum() / scan.body.sum()
    in_lungs = lungs[points].mean()
    print(f"\nlung share of the patient {share:.4f}, of the cached body points {in_lungs:.4f}")
    assert abs(in_lungs - share) < 4 * np.sqrt(share * (1 - share) / count)
    # the body's box is the patient's: the table under it is not part of it
    patient = np.argwhere(scan.body)
    assert np.array_equal(volume.body_grid.low, patient.min(0))
    assert np.array_equal(volume.body_grid.high, patient.max(0) + 1)


def test_evaluation_crops_are_over_the_body_on_ct_like_geometry(scan_and_cache):
    """Retrieval, zero-shot and inference embed a volume from ``PairsDataset(eval_grid=3)`` items: all 27 crops must
    be mostly patient. The whole-volume grid of 06931fc had 24 of 27 under 5 % body here (15 of 27 in #26's
    measurement at 512x512x300), so a volume's embedding was mostly that of air."""
    scan, path, cache = scan_and_cache
    dataset = PairsDataset([{"image": path}], cache, crop_size=CROP, eval_grid=3)
    volume = cache.load(path)
    origins = dataset.crop_origins(volume)
    assert origins.shape == (27, 3) and np.array_equal(origins, dataset.crop_origins(volume))  # deterministic
    assert len({tuple(o) for o in origins}) == 27
    assert (origins >= 0).all() and (origins + CROP <= np.asarray(SHAPE)).all()
    fractions = [scan.body[tuple(slice(o, o + c) for o, c in zip(origin, CROP))].mean() for origin in origins]
    print(f"\nbody fraction of the 27 evaluation crops: min {min(fractions):.3f}, mean {np.mean(fractions):.3f}")
    assert min(fractions) >= 0.25
    assert dataset[0]["image"].shape == (27, 1, *CROP)


def test_evaluation_crops_when_the_body_is_near_the_crop_size():
    """The CPU learning check's regime: 64^3 volumes, a body of about 40^3 inside air, 32^3 crops, eval_grid 3."""
    shape, crop = (64, 64, 64), (32, 32, 32)
    body = np.zeros(shape, bool)
    body[12:52, 14:50, 10:54] = True
    grid = BodyGrid.build(shape, np.argwhere(body))
    origins = evaluation_crop_origins(shape, crop, 3, grid)
    assert origins.shape == (27, 3)
    assert (origins >= 0).all() and (origins + 32 <= 64).all()
    centres = origins + 16
    assert ((centres >= grid.low) & (centres < grid.high)).all()  # every crop centred in the body's box
    assert min(body[tuple(slice(o, o + 32) for o in origin)].mean() for origin in origins) >= 0.25
    # a body smaller than the crop: the crops overlap, each holds most of the body
    small = np.zeros(shape, bool)
    small[20:40, 24:44, 22:42] = True
    origins = evaluation_crop_origins(shape, crop, 3, BodyGrid.build(shape, np.argwhere(small)))
    assert min(small[tuple(slice(o, o + 32) for o in origin)].sum() for origin in origins) >= 0.75 * small.sum()
    # a crop spanning an axis whole gets one position along it (the whole-volume toys: eval_grid 1 or 3, one crop)
    assert evaluation_crop_origins(shape, (64, 64, 64), 3, grid).tolist() == [[0, 0, 0]]
    assert evaluation_crop_origins(shape, (64, 64, 32), 3, grid).shape == (3, 3)
    # no body: the box is the volume
    empty = BodyGrid.build(shape, np.zeros((0, 3), np.int64))
    assert evaluation_crop_origins(shape, crop, 2, empty).tolist() == [
        [x, y, z] for x in (0, 32) for y in (0, 32) for z in (0, 32)
    ]


def test_body_mask_fills_enclosed_air_per_slice_and_samples_uniformly():
    volume = np.zeros((300, 260, 4), np.float32)  # 300 wide: 3x3 blocks
    volume[50:250, 40:220] = 1.0  # a patient ...
    volume[80:220, 70:190, :2] = 0.0  # ... with lungs enclosed in slices 0-1
    volume[80:220, 70:190, 2:] = 0.0
    volume[80:220, 0:190, 2:] = 0.0  # ... open to the outside in slices 2-3 (not enclosed: not body)
    volume[5:280, 10:14] = 1.0  # a 4-voxel (12 mm) thin sheet detached from the patient: a table
    mask = body_mask(volume, 0.5, spacing=(3.0, 3.0, 3.0), core_mm=10.0)
    assert mask.step == 3
    voxels = mask.voxels()
    assert voxels.shape == volume.shape and mask.voxel_count() == voxels.sum()
    assert voxels[150, 130, :2].all() and not voxels[150, 130, 2:].any()
    assert voxels[50:250, 40:220, :2].all() and not voxels[:, :20].any()
    assert not voxels[:48, :, :].any() and not voxels[252:].any()  # outside, to within a block
    points = mask.sample(20000, np.random.default_rng(0))
    assert points.dtype == np.int32 and len(np.unique(points, axis=0)) == 20000
    assert voxels[tuple(points.T)].all()
    lungs = np.zeros(volume.shape, bool)
    lungs[80:220, 70:190, :2] = True
    share = lungs.sum() / voxels.sum()
    assert abs(lungs[tuple(points.T)].mean() - share) < 4 * np.sqrt(share * (1 - share) / 20000)
    # fewer body voxels than asked: all of them
    assert len(mask.sample(10**7, np.random.default_rng(0))) == voxels.sum()
