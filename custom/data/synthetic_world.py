"""The second synthetic world on disk: CT-like NIfTI volumes, free-text reports and datalists for pre-training,
zero-shot evaluation and label probes. The generative model is documented in ``docs/synthetic_world.md``.

    python -m custom.data.synthetic_world --out_dir data/world_v2 --num_train 600 --num_val 64 --num_test 256

Layout::

    out_dir/images/W2P0001_S01.nii.gz    int16 HU, affine diag(spacing) (RAS+), air around an elliptical body
    out_dir/pairs_datalist.json          pre-training pairs (below)
    out_dir/classification_datalist.json labels for every split (custom.data.classification_datalist reads it)
    out_dir/world_truth.json             per study: findings with attributes and the nuisances (for analysis)

``pairs_datalist.json``: ``{"world", "generator", "finding_names", "subtle_findings", "training", "validation"
[, "test"]}``. Training rows are ``{"image", "report", "patient_id", "study_id"}`` with **no** label vector, as in a
report-only corpus (so a ``report_affinity: auto`` run resolves to text affinity); validation and test rows add
``"labels"`` (finding names) and ``"label_vector"`` (multi-hot over ``finding_names``). The classification datalist
has ``"class_names"`` (= finding_names), ``"subtle_findings"`` and every split with ``"label"`` / ``"label_vector"``.

Splits are patient-disjoint (patients are assigned in order: training, validation, test) and have exactly the
requested numbers of studies; about one patient in five has two studies (same body habitus, findings and other
nuisances drawn anew). Everything is a deterministic function of the arguments.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from custom.data.world_findings import SUBTLE_FINDINGS, WORLD_FINDINGS, Study, sample_habitus, sample_study
from custom.data.world_render import render_study
from custom.data.world_reports import write_world_report
from custom.distributed import main_process_first
from custom.errors import DataError

__all__ = [
    "WORLD_NAME",
    "PAIRS_DATALIST",
    "CLASSIFICATION_DATALIST",
    "make_world",
    "ensure_world",
    "world_report_corpus",
]

WORLD_NAME = "t3d-synthetic-world-v2"
PAIRS_DATALIST = "pairs_datalist.json"
CLASSIFICATION_DATALIST = "classification_datalist.json"
TRUTH_FILE = "world_truth.json"
SECOND_STUDY_RATE = 0.2


def _draw_patients(total: int, quotas: Sequence[int], rng: np.random.Generator) -> list[list[tuple[str, Study]]]:
    """Per split, its ``(study_id, study)`` list; a patient never crosses a split and quotas are met exactly."""
    splits: list[list[tuple[str, Study]]] = [[] for _ in quotas]
    patient = 0
    for split, quota in enumerate(quotas):
        while len(splits[split]) < quota:
            patient += 1
            habitus = sample_habitus(rng)
            studies = 2 if rng.random() < SECOND_STUDY_RATE else 1
            for session in range(1, min(studies, quota - len(splits[split])) + 1):
                splits[split].append((f"W2P{patient:05d}_S{session:02d}", sample_study(rng, habitus)))
    return splits


def _truth(study: Study) -> dict:
    nuisance = study.nuisance
    return {
        "findings": [vars(f) for f in study.findings],
        "nuisance": {**{k: v for k, v in vars(nuisance).items() if k != "habitus"}, **vars(nuisance.habitus)},
    }


def _generator_args(num_train, num_val, num_test, shape, spacing, seed) -> dict:
    """The arguments that define a world, in the JSON form its datalists record."""
    return {
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "shape": [int(s) for s in shape],
        "spacing": [float(s) for s in spacing],
        "seed": int(seed),
    }


def make_world(
    out_dir: str,
    num_train: int = 600,
    num_val: int = 64,
    num_test: int = 256,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (7.0, 7.0, 7.0),
    seed: int = 0,
    progress: bool = True,
) -> str:
    """Generate the world into ``out_dir`` (see the module doc); returns the pairs datalist path.

    ``shape`` / ``spacing``: voxels and mm per voxel of every volume (field of view = shape x spacing; the body is
    55-78 % of it left-right). ``num_test=0`` writes no test split."""
    if min(num_train, num_val) < 1 or num_test < 0:
        raise DataError(
            "make_world: expected num_train >= 1, num_val >= 1, num_test >= 0, "
            f"found {num_train}, {num_val}, {num_test}"
        )
    generator = _generator_args(num_train, num_val, num_test, shape, spacing, seed)
    rng = np.random.default_rng(seed)
    names = ("training", "validation", "test")[: 3 if num_test else 2]
    splits = _draw_patients(num_train + num_val + num_test, (num_train, num_val, num_test)[: len(names)], rng)
    render_seeds = rng.integers(2**31, size=sum(len(s) for s in splits))
    jobs = [(name, study_id, study) for name, rows in zip(names, splits) for study_id, study in rows]
    iterator = jobs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(jobs, desc=f"{WORLD_NAME} ({generator['shape']})", unit="study")
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    pairs: dict[str, list[dict]] = {name: [] for name in names}
    classification: dict[str, list[dict]] = {name: [] for name in names}
    truth = {}
    affine = np.diag([*generator["spacing"], 1.0])
    for index, (split, study_id, study) in enumerate(iterator):
        image, _ = render_study(study, generator["shape"], generator["spacing"], seed=int(render_seeds[index]))
        image_rel = f"images/{study_id}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), os.path.join(out_dir, image_rel))
        report = write_world_report(study, np.random.default_rng([seed, 2, index]))
        row = {"image": image_rel, "patient_id": study_id.split("_")[0], "study_id": study_id}
        labels = {"labels": sorted(study.names(), key=WORLD_FINDINGS.index), "label_vector": study.label_vector()}
        pairs[split].append({**row, "report": report, **({} if split == "training" else labels)})
        classification[split].append({**row, "label": labels["label_vector"], **labels})
        truth[study_id] = _truth(study)
    header = {"world": WORLD_NAME, "generator": generator, "subtle_findings": list(SUBTLE_FINDINGS)}
    _write_json(os.path.join(out_dir, TRUTH_FILE), {**header, "studies": truth})
    _write_json(
        os.path.join(out_dir, CLASSIFICATION_DATALIST),
        {**header, "class_names": list(WORLD_FINDINGS), **classification},
    )
    path = os.path.join(out_dir, PAIRS_DATALIST)
    _write_json(path, {**header, "finding_names": list(WORLD_FINDINGS), **pairs})  # last: its presence means done
    return path


def _write_json(path: str, content: dict) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1)
    os.replace(temporary, path)


@main_process_first
def ensure_world(out_dir: str, **kwargs) -> str:
    """The pairs datalist of the world in ``out_dir``, generated unless already there (bundles call this in
    ``initialize``); a world made with other arguments stops with a one-line error rather than being reused."""
    path = os.path.join(out_dir, PAIRS_DATALIST)
    if not os.path.isfile(path):
        return make_world(out_dir, **kwargs)
    bound = inspect.signature(make_world).bind(out_dir, **kwargs)
    bound.apply_defaults()
    wanted = _generator_args(**{k: v for k, v in bound.arguments.items() if k not in ("out_dir", "progress")})
    with open(path, encoding="utf-8") as f:
        found = json.load(f).get("generator")
    if found != wanted:
        raise DataError(
            f"{path}: expected a world made with {wanted}, found one made with {found} "
            f"(remove {out_dir} or pick another out_dir)"
        )
    return path


def world_report_corpus(count: int = 2000, seed: int = 0) -> list[str]:
    """``count`` reports of independently drawn studies: text for building a tokenizer / masked-LM text encoder
    (e.g. ``custom.weights.offline_text_encoder.build_offline_text_encoder(corpus=...)``)."""
    rng = np.random.default_rng([seed, 3])
    return [write_world_report(sample_study(rng), rng) for _ in range(int(count))]


if __name__ == "__main__":
    import fire

    fire.Fire(make_world)
