"""Pixels of the second synthetic world: a CT-like volume drawn from a :class:`~custom.data.world_findings.Study`.

The anatomy is the first world's phantom (:data:`custom.data.synthetic_ct._ORGANS`, same RAS+ ``[i, j, k]``
convention, HU intensities) placed in a *body frame*: the body ellipse (half-axes 0.95 x 0.80 in body units) is
scaled to the study's habitus and shifted by its offset inside a larger field of view, with air (-1000 HU) around it.
Everything is in normalised coordinates, so any shape and spacing work. Order of drawing:

1. body (fat rim, soft tissue), organs with contrast-phase enhancement (:data:`ENHANCEMENT`), lungs at
   ``-850 + lung_shift_hu``;
2. findings (see ``docs/synthetic_world.md`` for each one's HU, extent and attributes);
3. the reconstruction kernel: a Gaussian blur of ``KERNELS[kernel]`` voxels;
4. noise: white Gaussian noise blurred by the same kernel (the kernel's noise texture), rescaled to ``noise_hu`` SD.

Small lesions (nodules) are drawn with partial volume: a Gaussian of the lesion's size convolved with the voxel
(sigma^2 + spacing^2 / 12 per axis, peak scaled to keep the lesion's integral), so a 6 mm nodule is a faint blur
at 8 mm voxels and a sharp dot at 1 mm voxels.
"""

from __future__ import annotations

import numpy as np

from custom.data.synthetic_ct import _ORGANS, _ellipsoid
from custom.data.world_findings import KERNELS, Study

__all__ = ["ENHANCEMENT", "render_study", "gaussian_blur"]

#: HU added to an organ label (ids of :mod:`custom.data.synthetic_ct`) in the arterial / portal venous phase
ENHANCEMENT: dict[int, tuple[float, float]] = {
    22: (250.0, 120.0),  # heart blood pool
    8: (280.0, 130.0),  # aorta
    9: (20.0, 120.0),  # inferior vena cava
    10: (60.0, 140.0),  # portal and splenic veins
    6: (12.0, 50.0),  # liver
    1: (45.0, 60.0),  # spleen
    2: (120.0, 130.0),  # right kidney
    3: (120.0, 130.0),  # left kidney
    11: (50.0, 45.0),  # pancreas
    12: (20.0, 30.0),  # right adrenal
    13: (20.0, 30.0),  # left adrenal
    7: (10.0, 20.0),  # stomach wall
    5: (5.0, 15.0),  # esophagus
}
LIVER_HU = 58.0  # non-contrast liver, above spleen (50) as in healthy livers
STEATOSIS_DROP_HU = {"mild": 35.0, "moderate": 55.0}
GGO_RISE_HU = {"mild": 120.0, "moderate": 200.0}
EMPHYSEMA_HOLE_FRACTION = {"mild": 0.45, "moderate": 0.7}
EMPHYSEMA_DROP_HU = 130.0
NODULE_RISE_HU = 880.0  # solid nodule in aerated lung
CARDIOMEGALY_SCALE = {"mild": 1.3, "moderate": 1.45}
_BODY = (0.95, 0.80)  # body half-axes in body units (the first world's phantom)
_LUNG = {"right": 20, "left": 21}


def gaussian_blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``sigma`` voxels (edge-replicated borders); the input when ``sigma`` is 0."""
    if sigma <= 0:
        return volume
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = volume.astype(np.float32, copy=True)
    for axis in range(out.ndim):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(out.ndim)], mode="edge")
        out = np.zeros_like(out)
        for offset, weight in enumerate(taps):
            out += weight * padded[(slice(None),) * axis + (slice(offset, offset + volume.shape[axis]),)]
    return out


class _Frame:
    """Maps body-frame coordinates and radii to the normalised field-of-view coordinates of ``_ellipsoid``."""

    def __init__(self, study: Study, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        nuisance = study.nuisance
        self.scale = (nuisance.habitus.radius_lr / _BODY[0], nuisance.habitus.radius_ap / _BODY[1], 1.0)
        self.offset = nuisance.offset
        self.shape, self.spacing = shape, spacing

    def ellipsoid(self, centre, radii) -> tuple[tuple[slice, ...], np.ndarray]:
        fov_centre = tuple(o + s * c for o, s, c in zip(self.offset, self.scale, centre))
        fov_radii = tuple(s * r for s, r in zip(self.scale, radii))
        return _ellipsoid(self.shape, fov_centre, fov_radii)

    def sphere_mm(self, centre, diameter_mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
        fov_centre = tuple(o + s * c for o, s, c in zip(self.offset, self.scale, centre))
        radii = tuple(max(diameter_mm / 2, s) / (n * s / 2) for n, s in zip(self.shape, self.spacing))
        return _ellipsoid(self.shape, fov_centre, radii)

    def voxel(self, centre) -> np.ndarray:
        """Fractional voxel index of a body-frame point."""
        fov = np.array([o + s * c for o, s, c in zip(self.offset, self.scale, centre)])
        return (fov + 1) / 2 * (np.array(self.shape) - 1)


def _lung_point(side: str, zone: str) -> tuple[float, float, float]:
    return (0.42 if side == "right" else -0.42, -0.05, 0.70 if zone == "upper" else 0.25)


def _add_blob(image: np.ndarray, inside: np.ndarray, frame: _Frame, centre, diameter_mm: float, rise_hu: float) -> None:
    """A partial-volume Gaussian lesion (see the module doc) added to ``image`` where ``inside`` (a bool mask)."""
    sigma_mm = diameter_mm / 2.355
    index = frame.voxel(centre)
    peak, grids, box = rise_hu, [], []
    for axis, (n, s) in enumerate(zip(frame.shape, frame.spacing)):
        sigma_eff = np.sqrt(sigma_mm**2 + s**2 / 12.0)
        peak *= sigma_mm / sigma_eff
        sigma_vox = sigma_eff / s
        lo = int(np.clip(np.floor(index[axis] - 3 * sigma_vox), 0, n - 1))
        hi = int(np.clip(np.ceil(index[axis] + 3 * sigma_vox) + 1, lo + 1, n))
        box.append(slice(lo, hi))
        grids.append(np.exp(-0.5 * ((np.arange(lo, hi) - index[axis]) / sigma_vox) ** 2))
    blob = grids[0][:, None, None] * grids[1][None, :, None] * grids[2][None, None, :]
    image[tuple(box)] += (peak * blob * inside[tuple(box)]).astype(np.float32)


def render_study(
    study: Study, shape=(64, 64, 64), spacing=(6.0, 6.0, 6.0), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(image, organs)``: HU volume (int16, ``shape``) and organ label map (uint8) of ``study``; deterministic for
    ``seed``. The NIfTI affine is ``diag(spacing)`` (RAS+)."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    nuisance = study.nuisance
    frame = _Frame(study, shape, spacing)
    phase = {"non-contrast": None, "arterial": 0, "portal venous": 1}[nuisance.phase]
    findings = {f.name: f for f in study.findings}

    image = np.full(shape, -1000.0, dtype=np.float32)
    organs = np.zeros(shape, dtype=np.uint8)
    box, mask = frame.ellipsoid((0.0, 0.0, 0.0), (_BODY[0], _BODY[1], 5.0))
    image[box][mask] = -100.0
    inner = 1.0 - nuisance.habitus.fat
    box, mask = frame.ellipsoid((0.0, 0.0, 0.0), (_BODY[0] * inner, _BODY[1] * inner, 5.0))
    image[box][mask] = 30.0
    jitter = rng.uniform(-0.03, 0.03, size=3)
    heart = findings.get("cardiomegaly")
    for centre, radii, hu, label in _ORGANS:
        centre = tuple(np.add(centre, jitter))
        if label == 22 and heart is not None:
            radii = tuple(r * CARDIOMEGALY_SCALE[heart.severity] for r in radii)
        if label in (20, 21):
            hu = -850.0 + nuisance.lung_shift_hu
        elif label == 6:
            hu = LIVER_HU + nuisance.organ_jitter_hu
            if "hepatic steatosis" in findings:
                hu -= STEATOSIS_DROP_HU[findings["hepatic steatosis"].severity]
        if phase is not None and label in ENHANCEMENT:
            hu += ENHANCEMENT[label][phase]
        box, mask = frame.ellipsoid(centre, radii)
        image[box][mask] = hu
        organs[box][mask] = label

    lungs = (organs == _LUNG["right"]) | (organs == _LUNG["left"])
    for finding in study.findings:
        sides = ["right", "left"] if finding.side == "bilateral" else [finding.side]
        if finding.name == "ground-glass opacity":
            for side in sides:
                centre = np.add(_lung_point(side, finding.zone), rng.uniform(-0.05, 0.05, 3))
                box, mask = frame.ellipsoid(centre, (0.24, 0.34, 0.22))
                mask &= (organs[box] == _LUNG[side]) & (rng.random(mask.shape) < 0.9)
                image[box][mask] += GGO_RISE_HU[finding.severity]
        elif finding.name == "emphysema":
            for side in ("right", "left"):
                box, mask = frame.ellipsoid(_lung_point(side, "upper"), (0.26, 0.40, 0.22))
                mask &= (organs[box] == _LUNG[side]) & (
                    rng.random(mask.shape) < EMPHYSEMA_HOLE_FRACTION[finding.severity]
                )
                image[box][mask] -= EMPHYSEMA_DROP_HU
        elif finding.name == "pulmonary nodule":
            for number in range(finding.count):
                zone = finding.zone if number == 0 else str(rng.choice(["upper", "lower"]))
                size = finding.size_mm if number == 0 else float(rng.uniform(6.0, finding.size_mm))
                centre = np.add(_lung_point(finding.side, zone), rng.uniform(-0.12, 0.12, 3))
                _add_blob(image, lungs, frame, centre, size, NODULE_RISE_HU)
        elif finding.name == "lung mass":
            centre = np.add(_lung_point(finding.side, finding.zone), rng.uniform(-0.06, 0.06, 3))
            box, mask = frame.sphere_mm(centre, finding.size_mm)
            mask &= organs[box] == _LUNG[finding.side]
            image[box][mask] = 35.0 + (0.0 if phase is None else (15.0, 25.0)[phase])
        elif finding.name == "pleural effusion":
            scale = 0.75 if finding.severity == "small" else 1.0
            for side in sides:
                u = 0.45 if side == "right" else -0.45
                box, mask = frame.ellipsoid((u, -0.35, 0.15), (0.25 * scale, 0.18 * scale, 0.22 * scale))
                mask &= organs[box] == _LUNG[side]
                image[box][mask] = 10.0
        elif finding.name == "liver lesion":
            for _ in range(finding.count):
                centre = np.add((0.40, 0.05, -0.20), rng.uniform(-0.12, 0.12, 3))
                box, mask = frame.sphere_mm(centre, finding.size_mm)
                mask &= organs[box] == 6
                image[box][mask] = 15.0 + (0.0 if phase is None else 5.0)

    sigma = KERNELS[nuisance.kernel]
    image = gaussian_blur(image, sigma)
    noise_rng = np.random.default_rng([seed, 1])  # its own stream: a study with one finding more has the same noise
    noise = gaussian_blur(noise_rng.standard_normal(shape, dtype=np.float32), sigma)
    image += noise * np.float32(nuisance.noise_hu / max(float(noise.std()), 1e-6))
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), organs
