"""The second synthetic world's latent variables: which findings a study has (with attributes) and its nuisances.

This module is the "what is true" half of the generative model documented in ``docs/synthetic_world.md``; the
pixels are drawn from it by :mod:`custom.data.world_render` and the report by :mod:`custom.data.world_reports`.

- Findings are independent Bernoulli draws with the prevalence in :data:`PREVALENCE`; each present finding gets its
  attributes (side, zone, size, count, severity) uniformly from the ranges below.
- Nuisances (body size and position in the field of view, fat thickness, lung inflation, noise level,
  reconstruction kernel, contrast phase) are drawn independently of the findings, so no finding can be read off
  them. A patient's second study keeps the body habitus (size, shape, fat) and redraws everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "WORLD_FINDINGS",
    "SUBTLE_FINDINGS",
    "PREVALENCE",
    "PHASES",
    "KERNELS",
    "Habitus",
    "Nuisance",
    "Finding",
    "Study",
    "sample_finding",
    "sample_habitus",
    "sample_study",
]

#: label-vector order: the four subtle findings first, then four obvious ones
WORLD_FINDINGS: tuple[str, ...] = (
    "ground-glass opacity",
    "pulmonary nodule",
    "emphysema",
    "hepatic steatosis",
    "lung mass",
    "pleural effusion",
    "cardiomegaly",
    "liver lesion",
)
#: findings whose pixel signal is near the noise level, small, textural or relative (see docs/synthetic_world.md)
SUBTLE_FINDINGS: tuple[str, ...] = WORLD_FINDINGS[:4]
#: probability that a study has each finding (independent draws; a study is normal with probability ~0.10)
PREVALENCE: dict[str, float] = {name: (0.3 if name in SUBTLE_FINDINGS else 0.2) for name in WORLD_FINDINGS}

PHASES: tuple[str, ...] = ("non-contrast", "arterial", "portal venous")
PHASE_PROBABILITY: tuple[float, ...] = (0.3, 0.2, 0.5)
#: reconstruction kernel -> Gaussian smoothing sigma in voxels (of the image and of the noise texture)
KERNELS: dict[str, float] = {"sharp": 0.0, "standard": 0.4, "soft": 0.7}


@dataclass(frozen=True)
class Habitus:
    """A patient's body: half-axes of the body ellipse as fractions of the field of view (``radius_lr``,
    ``radius_ap``) and the fraction of the radius that is subcutaneous fat (``fat``)."""

    radius_lr: float
    radius_ap: float
    fat: float


@dataclass(frozen=True)
class Nuisance:
    """What changes the image but is no finding: body position (fractions of the field of view), anatomy jitter,
    lung inflation (HU shift of aerated lung), noise SD in HU, kernel, contrast phase and organ HU jitter."""

    habitus: Habitus
    offset: tuple[float, float, float]
    lung_shift_hu: float
    noise_hu: float
    kernel: str
    phase: str
    organ_jitter_hu: float


@dataclass(frozen=True)
class Finding:
    """One present finding with its attributes; unused attributes stay empty/zero.

    ``side``: right/left/bilateral; ``zone``: upper/lower; ``size_mm``: diameter of the (largest) lesion;
    ``count``: number of lesions; ``severity``: mild/moderate (small/moderate for effusions)."""

    name: str
    side: str = ""
    zone: str = ""
    size_mm: float = 0.0
    count: int = 1
    severity: str = ""


@dataclass
class Study:
    """A study's truth: its findings and its nuisances."""

    findings: list[Finding] = field(default_factory=list)
    nuisance: Nuisance | None = None

    def names(self) -> set[str]:
        return {f.name for f in self.findings}

    def label_vector(self) -> list[int]:
        """Multi-hot over :data:`WORLD_FINDINGS`."""
        present = self.names()
        return [int(name in present) for name in WORLD_FINDINGS]


def sample_habitus(rng: np.random.Generator) -> Habitus:
    radius_lr = float(rng.uniform(0.55, 0.78))
    return Habitus(radius_lr, radius_lr * float(rng.uniform(0.68, 0.85)), float(rng.uniform(0.05, 0.12)))


def _sample_nuisance(rng: np.random.Generator, habitus: Habitus) -> Nuisance:
    room_lr, room_ap = 0.94 - habitus.radius_lr, 0.94 - habitus.radius_ap  # the body always stays inside the FOV
    offset = (
        float(rng.uniform(-room_lr, room_lr) * 0.8),
        float(rng.uniform(-room_ap, room_ap) * 0.8),
        float(rng.uniform(-0.06, 0.06)),
    )
    return Nuisance(
        habitus=habitus,
        offset=offset,
        lung_shift_hu=float(rng.normal(0.0, 15.0)),
        noise_hu=float(rng.uniform(12.0, 35.0)),
        kernel=str(rng.choice(list(KERNELS))),
        phase=str(rng.choice(PHASES, p=PHASE_PROBABILITY)),
        organ_jitter_hu=float(rng.normal(0.0, 4.0)),
    )


def _side(rng: np.random.Generator, bilateral: float = 0.0) -> str:
    if rng.random() < bilateral:
        return "bilateral"
    return str(rng.choice(["right", "left"]))


def sample_finding(name: str, rng: np.random.Generator) -> Finding:
    severity = str(rng.choice(["mild", "moderate"]))
    zone = str(rng.choice(["upper", "lower"]))
    if name == "ground-glass opacity":
        return Finding(name, side=_side(rng, 0.25), zone=zone, severity=severity)
    if name == "pulmonary nodule":
        return Finding(
            name, side=_side(rng), zone=zone, size_mm=float(rng.integers(6, 13)), count=int(rng.integers(1, 4))
        )
    if name == "emphysema":
        return Finding(name, side="bilateral", zone="upper", severity=severity)
    if name == "hepatic steatosis":
        return Finding(name, severity=severity)
    if name == "lung mass":
        return Finding(name, side=_side(rng), zone=zone, size_mm=float(rng.integers(30, 51)))
    if name == "pleural effusion":
        return Finding(name, side=_side(rng, 0.3), severity=str(rng.choice(["small", "moderate"])))
    if name == "cardiomegaly":
        return Finding(name, severity=severity)
    if name == "liver lesion":
        return Finding(name, size_mm=float(rng.integers(15, 36)), count=int(rng.integers(1, 3)))
    raise ValueError(f"finding: expected one of {WORLD_FINDINGS}, found {name!r}")


def sample_study(rng: np.random.Generator, habitus: Habitus | None = None) -> Study:
    """Draw a study's findings (independently, :data:`PREVALENCE`) and nuisances; ``habitus`` keeps a patient's
    body across studies (drawn when not given)."""
    findings = [sample_finding(name, rng) for name in WORLD_FINDINGS if rng.random() < PREVALENCE[name]]
    return Study(findings=findings, nuisance=_sample_nuisance(rng, habitus or sample_habitus(rng)))
