"""Synthetic CT-like phantoms with findings at known places: the ground truth behind the synthetic reports.

Geometry convention: the array is indexed ``[i, j, k]`` along RAS+ axes (the NIfTI affine written with it is
``diag(spacing)``), so a larger ``i`` is further to the patient's *right*, a larger ``j`` is anterior and a larger
``k`` is superior. Anatomy is placed in normalised coordinates ``u, v, w`` in ``[-1, 1]`` along those axes, which makes
the same phantom work at any shape and spacing (a 64^3 toy and a 512x512x300 benchmark volume alike).

Intensities are Hounsfield units: air -1000, lung -850, fat -100, soft tissue 30..60, bone 700, with Gaussian noise.
The organ label map uses the BTCV ids (1 spleen ... 13 left adrenal) so segmentation miniatures can reuse it; lungs,
heart and spine get ids above 13 that BTCV treats as background.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BTCV_ORGANS",
    "EXTRA_STRUCTURES",
    "FINDING_NAMES",
    "Finding",
    "Phantom",
    "sample_findings",
    "render_phantom",
]

BTCV_ORGANS: dict[int, str] = {
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "portal and splenic veins",
    11: "pancreas",
    12: "right adrenal gland",
    13: "left adrenal gland",
}
EXTRA_STRUCTURES: dict[int, str] = {20: "right lung", 21: "left lung", 22: "heart", 23: "spine"}

# The finding vocabulary, in label-vector order. Location words are carried by `Finding.side` / `Finding.zone`.
FINDING_NAMES: tuple[str, ...] = (
    "nodule",
    "mass",
    "pleural effusion",
    "consolidation",
    "emphysema",
    "cardiomegaly",
    "hepatic lesion",
    "renal cyst",
)

# (centre u, v, w), (radii u, v, w), HU, label id. Right-sided organs have u > 0 (RAS+).
_ORGANS: list[tuple[tuple[float, float, float], tuple[float, float, float], float, int]] = [
    ((0.42, -0.05, 0.45), (0.30, 0.45, 0.45), -850.0, 20),  # right lung
    ((-0.42, -0.05, 0.45), (0.28, 0.45, 0.45), -850.0, 21),  # left lung
    ((-0.08, 0.25, 0.25), (0.22, 0.22, 0.20), 40.0, 22),  # heart
    ((0.0, -0.55, 0.0), (0.10, 0.10, 1.10), 700.0, 23),  # spine
    ((0.40, 0.05, -0.20), (0.38, 0.40, 0.22), 60.0, 6),  # liver
    ((-0.50, -0.20, -0.22), (0.14, 0.18, 0.14), 50.0, 1),  # spleen
    ((-0.15, 0.25, -0.20), (0.20, 0.16, 0.12), 30.0, 7),  # stomach
    ((0.30, -0.35, -0.50), (0.10, 0.10, 0.16), 35.0, 2),  # right kidney
    ((-0.30, -0.35, -0.48), (0.10, 0.10, 0.16), 35.0, 3),  # left kidney
    ((0.30, 0.25, -0.38), (0.06, 0.06, 0.08), 10.0, 4),  # gallbladder
    ((0.0, 0.05, -0.45), (0.20, 0.05, 0.04), 40.0, 11),  # pancreas
    ((0.28, -0.30, -0.30), (0.04, 0.04, 0.04), 35.0, 12),  # right adrenal
    ((-0.28, -0.30, -0.30), (0.04, 0.04, 0.04), 35.0, 13),  # left adrenal
    ((-0.04, -0.38, 0.0), (0.05, 0.05, 0.95), 45.0, 8),  # aorta
    ((0.10, -0.32, -0.35), (0.05, 0.05, 0.50), 40.0, 9),  # inferior vena cava
    ((0.0, -0.25, 0.50), (0.03, 0.03, 0.45), 35.0, 5),  # esophagus
    ((0.05, -0.05, -0.35), (0.18, 0.03, 0.03), 45.0, 10),  # portal and splenic veins
]


@dataclass(frozen=True)
class Finding:
    """One finding: what it is, where it is (``side`` right/left/bilateral, ``zone`` upper/lower) and its size in mm."""

    name: str
    side: str = ""
    zone: str = ""
    size_mm: float = 0.0


@dataclass
class Phantom:
    """A rendered volume: ``image`` (HU, int16), ``organs`` (label ids), ``finding_mask`` (1 + index in
    FINDING_NAMES)."""

    image: np.ndarray
    organs: np.ndarray
    finding_mask: np.ndarray
    spacing: tuple[float, float, float]
    findings: list[Finding] = field(default_factory=list)

    @property
    def affine(self) -> np.ndarray:
        return np.diag([*self.spacing, 1.0])

    def label_vector(self) -> np.ndarray:
        """Multi-hot vector over FINDING_NAMES, shape ``(len(FINDING_NAMES),)``."""
        present = {f.name for f in self.findings}
        return np.array([name in present for name in FINDING_NAMES], dtype=np.float32)


def sample_findings(rng: np.random.Generator, abnormal_rate: float = 0.75, max_findings: int = 3) -> list[Finding]:
    """Draw a study's findings: ``1 - abnormal_rate`` of studies are normal; the rest get 1..max_findings findings."""
    if rng.random() >= abnormal_rate:
        return []
    count = int(rng.integers(1, max_findings + 1))
    names = rng.choice(len(FINDING_NAMES), size=count, replace=False)
    findings = []
    for index in sorted(int(i) for i in names):
        name = FINDING_NAMES[index]
        side = str(rng.choice(["right", "left"]))
        zone = str(rng.choice(["upper", "lower"]))
        if name == "nodule":
            findings.append(Finding(name, side, zone, float(rng.integers(6, 13))))
        elif name == "mass":
            findings.append(Finding(name, side, zone, float(rng.integers(25, 45))))
        elif name == "pleural effusion":
            findings.append(Finding(name, str(rng.choice(["right", "left", "bilateral"]))))
        elif name == "consolidation":
            findings.append(Finding(name, side, zone))
        elif name == "emphysema":
            findings.append(Finding(name, "bilateral", "upper"))
        elif name == "cardiomegaly":
            findings.append(Finding(name))
        elif name == "hepatic lesion":
            findings.append(Finding(name, "right", "", float(rng.integers(15, 30))))
        elif name == "renal cyst":
            findings.append(Finding(name, side, "", float(rng.integers(10, 20))))
    return findings


def _ellipsoid(
    shape: tuple[int, int, int], centre: tuple[float, float, float], radii: tuple[float, float, float]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Boolean mask of an ellipsoid in normalised coordinates, computed on its bounding box only (fast at 512^3)."""
    box, axes = [], []
    for n, c, r in zip(shape, centre, radii):
        lo = int(np.clip(np.floor((c - r + 1) / 2 * (n - 1)), 0, n - 1))
        hi = int(np.clip(np.ceil((c + r + 1) / 2 * (n - 1)) + 1, lo + 1, n))
        box.append(slice(lo, hi))
        coords = np.arange(lo, hi, dtype=np.float32) / max(n - 1, 1) * 2 - 1
        axes.append(((coords - c) / max(r, 1e-6)) ** 2)
    mask = axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :] <= 1.0
    return tuple(box), mask


def _paint(volume: np.ndarray, box: tuple[slice, ...], mask: np.ndarray, value: float | int) -> None:
    volume[box][mask] = value


def _lung_centre(side: str, zone: str) -> tuple[float, float, float]:
    u = 0.42 if side == "right" else -0.42
    w = 0.70 if zone == "upper" else 0.25
    return (u, -0.05, w)


def _radius(size_mm: float, shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[float, float, float]:
    """Normalised radii of a sphere of diameter ``size_mm``, never below 1.5 voxels so it stays visible."""
    return tuple(max(size_mm / 2, 1.5 * s) / (n * s / 2) for n, s in zip(shape, spacing))  # type: ignore[return-value]


def render_phantom(
    findings: list[Finding],
    shape: tuple[int, int, int] = (96, 96, 80),
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    seed: int = 0,
    noise_hu: float = 20.0,
) -> Phantom:
    """Render a thorax-abdomen phantom with ``findings`` painted in; deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    spacing = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    image = np.full(shape, -1000.0, dtype=np.float32)
    organs = np.zeros(shape, dtype=np.uint8)
    finding_mask = np.zeros(shape, dtype=np.uint8)
    jitter = rng.uniform(-0.03, 0.03, size=3)  # patient-to-patient variation of position

    # body: a fat rim around soft tissue, an elliptic cylinder along the whole superior-inferior axis
    box, mask = _ellipsoid(shape, (0.0, 0.0, 0.0), (0.95, 0.80, 5.0))
    _paint(image, box, mask, -100.0)
    box, mask = _ellipsoid(shape, (0.0, 0.0, 0.0), (0.88, 0.72, 5.0))
    _paint(image, box, mask, 30.0)
    heart_scale = 1.35 if any(f.name == "cardiomegaly" for f in findings) else 1.0
    for centre, radii, hu, label in _ORGANS:
        centre = tuple(np.add(centre, jitter))
        if label == 22:
            radii = tuple(r * heart_scale for r in radii)
        box, mask = _ellipsoid(shape, centre, radii)  # type: ignore[arg-type]
        _paint(image, box, mask, hu)
        _paint(organs, box, mask, label)
    if heart_scale > 1.0:
        finding_mask[organs == 22] = 1 + FINDING_NAMES.index("cardiomegaly")

    for finding in findings:
        code = 1 + FINDING_NAMES.index(finding.name)
        sides = ["right", "left"] if finding.side == "bilateral" else [finding.side]
        for side in sides:
            lung = 20 if side == "right" else 21
            if finding.name in ("nodule", "mass"):
                centre = tuple(np.add(_lung_centre(side, finding.zone), rng.uniform(-0.06, 0.06, 3)))
                box, mask = _ellipsoid(shape, centre, _radius(finding.size_mm, shape, spacing))  # type: ignore[arg-type]
                _paint(image, box, mask, 45.0 if finding.name == "nodule" else 35.0)
                _paint(finding_mask, box, mask, code)
            elif finding.name == "pleural effusion":
                u = 0.45 if side == "right" else -0.45
                box, mask = _ellipsoid(shape, (u, -0.35, 0.15), (0.25, 0.18, 0.22))
                mask &= organs[box] == lung
                _paint(image, box, mask, 10.0)
                _paint(finding_mask, box, mask, code)
            elif finding.name == "consolidation":
                centre = tuple(np.add(_lung_centre(side, finding.zone), (0.0, 0.1, 0.0)))
                box, mask = _ellipsoid(shape, centre, (0.16, 0.22, 0.14))  # type: ignore[arg-type]
                mask &= organs[box] == lung
                mask &= rng.random(mask.shape) < 0.85  # patchy, not a solid ball
                _paint(image, box, mask, -50.0)
                _paint(finding_mask, box, mask, code)
            elif finding.name == "emphysema":
                box, mask = _ellipsoid(shape, _lung_centre(side, "upper"), (0.26, 0.40, 0.22))
                mask &= organs[box] == lung
                _paint(image, box, mask, -960.0)
                _paint(finding_mask, box, mask, code)
            elif finding.name == "hepatic lesion":
                centre = tuple(np.add((0.40, 0.05, -0.20), rng.uniform(-0.12, 0.12, 3)))
                box, mask = _ellipsoid(shape, centre, _radius(finding.size_mm, shape, spacing))  # type: ignore[arg-type]
                mask &= organs[box] == 6
                _paint(image, box, mask, 0.0)
                _paint(finding_mask, box, mask, code)
            elif finding.name == "renal cyst":
                u = 0.30 if side == "right" else -0.30
                box, mask = _ellipsoid(shape, (u, -0.35, -0.45), _radius(finding.size_mm, shape, spacing))
                _paint(image, box, mask, 5.0)
                _paint(finding_mask, box, mask, code)

    image += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    return Phantom(
        image=np.clip(image, -1024, 3071).astype(np.int16),
        organs=organs,
        finding_mask=finding_mask,
        spacing=spacing,  # type: ignore[arg-type]
        findings=list(findings),
    )


@dataclass
class Scan:
    """A phantom placed in a scanner's field of view: ``image`` (HU, int16) with air and a table around the patient,
    ``body`` bool (the patient: tissue and the lungs), ``spacing`` mm."""

    image: np.ndarray
    body: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        return np.diag([*self.spacing, 1.0])


def render_scan(
    shape: tuple[int, int, int] = (512, 512, 300),
    spacing: tuple[float, float, float] = (0.78, 0.78, 1.25),
    body_fraction: tuple[float, float] = (0.66, 0.45),
    seed: int = 0,
) -> Scan:
    """CT-like geometry: a :func:`render_phantom` patient (``body_fraction`` of the field of view's width and depth)
    lying on a table (a thin +200 HU shell around -950 HU foam, wider than the patient, under a pad of air-like foam
    about 1 cm thick) in a field of view of ``shape`` full of air, as a chest-abdomen CT: the patient fills a
    fraction of each slice (``benchmarks/body_mask.py`` measures the body mask and evaluation crops on it)."""
    inner = (int(shape[0] * body_fraction[0] / 0.95), int(shape[1] * body_fraction[1] / 0.80), shape[2])
    phantom = render_phantom([], shape=inner, spacing=spacing, seed=seed)
    rng = np.random.default_rng(seed + 1)
    image = rng.normal(-1000.0, 20.0, size=shape).astype(np.float32)
    x0, y0 = (shape[0] - inner[0]) // 2, (shape[1] - inner[1]) // 2
    patient = (phantom.image > -500) | (phantom.organs > 0)
    body = np.zeros(shape, dtype=bool)
    body[x0 : x0 + inner[0], y0 : y0 + inner[1]] = patient
    image[body] = phantom.image[patient]
    back = int(np.flatnonzero(body.any(axis=(0, 2)))[0])  # lowest j of the patient (RAS: posterior)
    wall = max(1, round(shape[1] / 170))  # a few mm of carbon shell
    top = back - max(2, round(shape[1] / 40))  # the pad: ~1 cm at 0.78 mm
    bottom = max(top - 10 * wall, 0)
    left, right = shape[0] // 12, shape[0] - shape[0] // 12
    image[left:right, bottom : top + 1] = 200.0
    image[left + wall : right - wall, bottom + wall : top + 1 - wall] = -950.0
    return Scan(image=np.clip(image, -1024, 3071).astype(np.int16), body=body, spacing=spacing)
