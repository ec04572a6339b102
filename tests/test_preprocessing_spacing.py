"""VolumePreprocessing resamples in RAS order whatever the stored axis order (issue #13, task 1)."""

from __future__ import annotations

import numpy as np
import pytest

from custom.transforms.preprocessing import PREPROCESSING_VERSION, VolumePreprocessing

SHAPE = (10, 20, 20)  # stored axes: (superior-inferior, anterior-posterior, right-left)


def _stored_sar_affine(sign_s: float, sign_a: float, sign_r: float) -> np.ndarray:
    """Axis 0 -> world S (5 mm), axis 1 -> A (0.7 mm), axis 2 -> R (0.7 mm); a negative sign flips that axis."""
    affine = np.zeros((4, 4))
    affine[2, 0] = 5.0 * sign_s
    affine[1, 1] = 0.7 * sign_a
    affine[0, 2] = 0.7 * sign_r
    affine[:3, 3] = (-7.0, 3.0, 12.0)
    affine[3, 3] = 1.0
    return affine


def _world_centre(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre of ``array`` in world (mm) coordinates."""
    weights = np.clip(array, 0.0, None)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in array.shape], indexing="ij"), -1).reshape(-1, 3)
    centre = (index * weights.reshape(-1, 1)).sum(0) / weights.sum()
    return affine[:3, :3] @ centre + affine[:3, 3]


@pytest.mark.parametrize("signs", [(1.0, 1.0, 1.0), (-1.0, 1.0, -1.0)], ids=["stored_S_A_R", "stored_I_A_L_flipped"])
def test_target_spacing_applies_in_ras_order_for_a_permuted_volume(signs):
    array = np.full(SHAPE, -1000.0, dtype=np.float32)
    array[3:6, 4:9, 12:17] = 1000.0  # an off-centre block, to check the content stays where it was in the world
    affine = _stored_sar_affine(*signs)

    out, out_affine = VolumePreprocessing(target_spacing=(1.0, 1.0, 1.5))(array, affine)

    # RAS: axis i runs along world axis i, increasing
    assert np.allclose(out_affine[:3, :3], np.diag(np.diag(out_affine[:3, :3])), atol=1e-5)
    spacing = np.diag(out_affine[:3, :3])
    # R and A were already finer than the target (0.7 < 1.0): kept; S at 5 mm is resampled to the finer 1.5 mm
    np.testing.assert_allclose(spacing, (0.7, 0.7, 1.5), rtol=1e-5)
    # shape: R and A untouched (20 voxels each), S covers the source extent (9 intervals x 5 mm) at 1.5 mm
    assert out.shape[:2] == (20, 20), out.shape
    assert abs((out.shape[2] - 1) * 1.5 - (SHAPE[0] - 1) * 5.0) <= 1.5, out.shape
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    # same place in the world before and after (within one output voxel along S)
    np.testing.assert_allclose(
        _world_centre(out, out_affine), _world_centre((array + 1000.0) / 2000.0, affine), atol=1.5
    )


def test_allow_coarser_reads_the_target_in_ras_order_too():
    out, out_affine = VolumePreprocessing(target_spacing=(1.4, 1.4, 2.5), allow_coarser=True)(
        np.zeros(SHAPE, dtype=np.float32), _stored_sar_affine(1.0, -1.0, 1.0)
    )
    np.testing.assert_allclose(np.abs(np.diag(out_affine[:3, :3])), (1.4, 1.4, 2.5), rtol=1e-5)
    assert out.shape[0] in (10, 11) and out.shape[1] in (10, 11) and out.shape[2] in (19, 20, 21), out.shape


def test_version_in_the_cache_key_is_past_the_stored_order_bug():
    assert PREPROCESSING_VERSION != "t3d-preprocessing-1"
    assert VolumePreprocessing().fingerprint().startswith(PREPROCESSING_VERSION + "|")
