"""What a BIMCV curation writes or says: the pairs and classification datalists (with label fractions),
``exclusions.tsv``, ``stats.json`` and plots, the dry-run listing, and the refusal of a curation that keeps no study."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence

from custom.data.label_fractions import label_fraction_subsets
from custom.errors import DataError
from t3d_tools.curation.bimcv.labels import build_class_list, multi_hot
from t3d_tools.curation.bimcv.records import (
    CLASSIFICATION_NAME,
    EXCLUSIONS_NAME,
    PAIRS_NAME,
    SPLITS,
    STATS_NAME,
    CuratedStudy,
    Exclusion,
    patient_splits,
    write_if_changed,
)
from t3d_tools.curation.bimcv.stats import compute_stats, plot_stats


def _datalist_rows(
    studies: list[CuratedStudy], classes: list[str], split_of: dict[str, str], out: str
) -> tuple[dict, dict]:
    """``(pairs, classification)``: ``{split: [row]}`` of both datalists, studies in study-id order."""
    pairs: dict = {name: [] for name in SPLITS}
    classification: dict = {name: [] for name in SPLITS}
    for study in sorted(studies, key=lambda s: s.study_id):
        vector = multi_hot(study.terms, classes)
        labels = [term for term in classes if term in study.terms]
        image = os.path.relpath(study.image, out)
        split = split_of[study.patient_id]
        pairs[split].append(
            {
                "image": image,
                "report": study.report,
                "patient_id": study.patient_id,
                "study_id": study.study_id,
                "labels": labels,
                "label_vector": vector,
                "all_labels": study.terms,
                **study.extra,
            }
        )
        classification[split].append(
            {
                "image": image,
                "label": vector,
                "label_vector": vector,
                "labels": labels,
                "patient_id": study.patient_id,
                "study_id": study.study_id,
            }
        )
    return pairs, classification


def exclusions_tsv(exclusions: list[Exclusion]) -> str:
    """The text of ``exclusions.tsv``: a header, then one line per exclusion (whitespace runs become one space)."""
    lines = ["\t".join(("study_id", "patient_id", "level", "path", "reason", "detail"))]
    for e in sorted(exclusions, key=lambda e: (e.study_id, e.level, e.path)):
        fields = (e.study_id, e.patient_id, e.level, e.path, e.reason, e.detail)
        lines.append("\t".join(re.sub(r"\s+", " ", str(v)) for v in fields))  # one line per exclusion
    return "\n".join(lines) + "\n"


def write_outputs(
    out: str,
    studies: list[CuratedStudy],
    exclusions: list[Exclusion],
    min_positive: int,
    val_fraction: float,
    test_fraction: float,
    fractions: Sequence[float],
    seed: int,
    source: dict,
    participants: dict[str, dict],
    ehr_results: dict[str, list[str]],
) -> dict:
    """Splits, class list, datalists, exclusions, stats and plots; returns the summary."""
    split_of = patient_splits([s.patient_id for s in studies], val_fraction, test_fraction, seed)
    classes = build_class_list([s.terms for s in studies], min_positive)
    pairs, classification = _datalist_rows(studies, classes, split_of, out)
    written = []
    pairs_json = json.dumps({**pairs, "finding_names": classes, "source": source}, indent=1, ensure_ascii=False)
    classification_doc = {**classification, "class_names": classes, "finding_names": classes, "source": source}
    outputs = {PAIRS_NAME: pairs_json, CLASSIFICATION_NAME: json.dumps(classification_doc, indent=1)}
    subsets = label_fraction_subsets(classification["training"], fractions, seed, stratify_key="label_vector")
    stem = os.path.splitext(CLASSIFICATION_NAME)[0]
    for fraction, subset in subsets.items():  # same file form as label_fractions.write_label_fraction_datalists
        document = {**classification_doc, "training": subset, "label_fraction": fraction, "seed": seed}
        outputs[f"{stem}_frac{fraction * 100:g}.json"] = json.dumps(document, indent=1)
    outputs[EXCLUSIONS_NAME] = exclusions_tsv(exclusions)
    stats = compute_stats(studies, exclusions, split_of, classes, min_positive, participants, ehr_results)
    outputs[STATS_NAME] = json.dumps(stats, indent=1)
    for name, text in outputs.items():
        if write_if_changed(os.path.join(out, name), text):
            written.append(name)
    plots = ("stats_volumes.png", "stats_reports.png", "stats_labels.png")
    if STATS_NAME in written or not all(os.path.isfile(os.path.join(out, p)) for p in plots):
        plot_stats(stats, studies, out)
        written.extend(plots)
    return {
        "out": out,
        "studies": len(studies),
        "patients": stats["patients"],
        "classes": len(classes),
        "exclusions": len(exclusions),
        "written": written,
    }


def print_dry_run(studies: list[CuratedStudy], exclusions: list[Exclusion]) -> None:
    """One ``include`` line per study, then one ``exclude`` line per exclusion (tab-separated)."""
    for study in sorted(studies, key=lambda s: s.study_id):
        print(f"include\t{study.study_id}\t{study.image}")
    for e in sorted(exclusions, key=lambda e: (e.study_id, e.path)):
        print(f"exclude\t{e.study_id}\t{e.level}\t{e.path}\t{e.reason}\t{e.detail}")


def refuse_nothing_left(source: str, studies: Sequence[CuratedStudy], exclusions: Sequence[Exclusion]) -> None:
    """A curation that keeps no study is an error, not an empty data set written with exit status 0: one line naming
    the input, the exclusions by reason and the first one's detail."""
    if studies:
        return
    if not exclusions:
        raise DataError(f"{source}: expected at least one study to curate, found no rows")
    first = sorted(exclusions, key=lambda e: (e.study_id, e.level, e.path))[0]
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(Counter(e.reason for e in exclusions).items()))
    detail = " ".join(str(first.detail).split())
    detail = (
        detail
        if first.path and first.path in detail
        else f"{first.path}: {first.reason}" + (f" ({detail})" if detail else "")
    )
    raise DataError(
        f"{source}: expected at least one usable study, found none ({len(exclusions)} excluded: "
        f"{reasons}; first: {detail})"
    )
