"""Synthetic 4-channel brain MR (FLAIR, T1, T1ce, T2) with a nested glioma, labelled as BraTS (0 / 1 / 2 / 4).

The tumour is three nested ellipsoids around one centre in a hemisphere: necrotic core (label 1) inside an enhancing
rim (label 4) inside peritumoral edema (label 2), so the BraTS regions nest as in real data: ET = 4,
TC = 1 | 4, WT = 1 | 2 | 4. Each region has the contrast it has in clinical MR, which is what makes the task
learnable from the right channels only: edema is bright in FLAIR / T2, the rim enhances in T1ce, the core is dark in
T1 / T1ce and bright in T2.

Array convention as :mod:`custom.data.synthetic_ct`: ``[i, j, k]`` along RAS+ axes, affine ``diag(spacing)``.
Intensities are arbitrary MR units (non-negative; background 0) with a smooth per-case bias field and Rician-like
noise, so per-channel z-score normalisation on the foreground is needed, as for real MR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MR_MODALITIES", "BRATS_LABELS", "MRPhantom", "render_brain_phantom"]

#: channel order of every 4-channel MR volume in this project (the MSD Task01 order: FLAIR, T1w, t1gd, T2w)
MR_MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
BRATS_LABELS: dict[int, str] = {1: "necrotic tumour core", 2: "peritumoral edema", 4: "enhancing tumour"}

# tissue -> intensity per modality (flair, t1, t1ce, t2)
_TISSUE = {
    "csf": (0.15, 0.25, 0.25, 1.20),
    "grey": (0.65, 0.60, 0.60, 0.70),
    "white": (0.55, 0.90, 0.90, 0.45),
    "edema": (1.20, 0.55, 0.55, 1.05),
    "enhancing": (0.85, 0.60, 1.50, 0.75),
    "necrotic": (0.45, 0.25, 0.25, 1.25),
}


@dataclass
class MRPhantom:
    """``image`` ``(4, X, Y, Z)`` float32 in :data:`MR_MODALITIES` order; ``label`` ``(X, Y, Z)`` uint8, 0/1/2/4."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        return np.diag([*self.spacing, 1.0])


def _inside(grid: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def render_brain_phantom(
    shape: tuple[int, int, int] = (64, 64, 64), spacing: tuple[float, float, float] = (3.0, 3.0, 3.0), seed: int = 0
) -> MRPhantom:
    """Render one case; deterministic for ``seed``. Tumour size and position vary between seeds."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    tissue = np.zeros(shape, dtype=np.int8)  # index into _TISSUE order + 1; 0 is outside the head
    names = list(_TISSUE)

    brain = _inside(grid, np.zeros(3), np.array([0.80, 0.90, 0.78]))
    tissue[brain] = 1 + names.index("grey")
    tissue[_inside(grid, np.zeros(3), np.array([0.62, 0.72, 0.60]))] = 1 + names.index("white")
    for side in (-1, 1):  # lateral ventricles
        tissue[_inside(grid, np.array([0.12 * side, 0.05, 0.1]), np.array([0.07, 0.30, 0.12]))] = 1 + names.index("csf")

    side = rng.choice([-1.0, 1.0])
    centre = np.array([side * rng.uniform(0.25, 0.45), rng.uniform(-0.35, 0.35), rng.uniform(-0.25, 0.3)])
    whole = rng.uniform(0.22, 0.32) * rng.uniform(0.85, 1.15, size=3)  # edema extent
    core = whole * rng.uniform(0.45, 0.6)
    necrotic = core * rng.uniform(0.4, 0.6)
    label = np.zeros(shape, dtype=np.uint8)
    for radii, value, name in ((whole, 2, "edema"), (core, 4, "enhancing"), (necrotic, 1, "necrotic")):
        region = _inside(grid, centre, radii) & brain
        label[region] = value
        tissue[region] = 1 + names.index(name)

    intensities = np.zeros((4, len(names) + 1), dtype=np.float32)
    intensities[:, 1:] = np.array([_TISSUE[n] for n in names], dtype=np.float32).T
    image = intensities[:, tissue]  # (4, X, Y, Z)
    bias = 1.0 + 0.15 * sum(rng.uniform(-1, 1) * g for g in grid)  # smooth multiplicative field, one per case
    noise = rng.normal(0.0, 0.06, size=(2, *image.shape)).astype(np.float32)
    image = np.sqrt((image * bias + noise[0]) ** 2 + noise[1] ** 2)  # magnitude of complex noise: Rician-like
    image[:, ~brain] = 0.0  # skull-stripped, as BraTS and MSD Task01 distribute it
    return MRPhantom(image=image.astype(np.float32), label=label, spacing=tuple(float(s) for s in spacing))
