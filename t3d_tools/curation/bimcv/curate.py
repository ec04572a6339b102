"""Curate BIMCV-VLP from a BIMCV-COVID19 tree (or a BIMCV-R style CSV): pairs, classification set, exclusions, stats.

    python -m t3d_tools.curation.bimcv curate --root /data/BIMCV-COVID19/covid19_posi --out /data/bimcv_vlp
    python -m t3d_tools.curation.bimcv curate_csv --csv_path /data/BIMCV-R/reports.csv --out /data/bimcv_r_vlp

Outputs in ``out``::

    pairs_datalist.json            {"training", "validation", "test": [row], "finding_names": [class], "source": {...}}
                                   row: image (relative to out), report (English), patient_id, study_id, labels
                                   (class terms), label_vector (multi-hot over finding_names), all_labels, ...
    classification_datalist.json   {"training", "validation", "test", "class_names", "finding_names"}
                                   row: image, label (multi-hot), label_vector, labels, patient_id, study_id
    classification_datalist_frac{1,10,100}.json   nested patient-level label fractions of "training"
    exclusions.tsv                 study_id, patient_id, level (series/study/report), path, reason, detail
    stats.json, stats_volumes.png, stats_reports.png, stats_labels.png
    cache/probes.json, cache/translations.jsonl   what makes re-runs cheap

Image paths are relative to ``out`` and point into ``root`` (nothing is copied); DICOM series converted to NIfTI go
to ``out/images``. Splits are patient-level: the sorted patient ids are permuted with ``seed`` and the first
``test_fraction`` go to test, the next ``val_fraction`` to validation, the rest to training.

Re-runs: a volume is loaded again only when its file size or modification time changed (``cache/probes.json``), a
sentence is translated only once (``cache/translations.jsonl``), and an output file is rewritten only when its
content changed, so a second run over the same inputs changes no file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from custom.data.checks import DataError, check_report_text
from custom.data.label_fractions import label_fraction_subsets
from t3d_tools.curation.bimcv.labels import (
    build_class_list,
    canonical_terms,
    english_terms,
    multi_hot,
    parse_label_list,
)
from t3d_tools.curation.bimcv.mids import (
    Series,
    choose_study_volume,
    convert_dicom_series,
    probe_volume,
    static_rejection,
    walk_mids,
)
from t3d_tools.curation.bimcv.reports import CachedTranslator, Translator, clean_report, make_translator
from t3d_tools.curation.bimcv.tables import BimcvColumns, TsvRow, read_tsv

__all__ = ["CuratedStudy", "Exclusion", "ProbeCache", "patient_splits", "curate", "curate_csv"]

PAIRS_NAME = "pairs_datalist.json"
CLASSIFICATION_NAME = "classification_datalist.json"
EXCLUSIONS_NAME = "exclusions.tsv"
STATS_NAME = "stats.json"
SPLITS = ("training", "validation", "test")


@dataclass
class CuratedStudy:
    """A study kept for the datalists: ``image`` is an absolute NIfTI path, ``report`` English, ``terms`` canonical."""

    study_id: str
    patient_id: str
    image: str
    report: str
    terms: list[str]
    probe: dict
    extra: dict = field(default_factory=dict)


@dataclass
class Exclusion:
    """A series, study or report row left out, and why (``reason`` is a short fixed phrase, ``detail`` free text)."""

    study_id: str
    patient_id: str
    level: str
    path: str
    reason: str
    detail: str = ""


class ProbeCache:
    """``probe_volume`` results keyed by path, valid while the file's size and modification time are unchanged."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.loaded = 0
        self._entries: dict[str, dict] = {}
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self._entries = json.load(f)

    def probe(self, image_path: str) -> dict:
        """``{"shape", "spacing", "content_sha1"}`` of the volume; raises :class:`DataError` if it is unreadable."""
        stat = os.stat(image_path)
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = self._entries.get(image_path)
        if entry is None or entry["stamp"] != stamp:
            self.loaded += 1
            try:
                entry = {"stamp": stamp, "result": probe_volume(image_path)}
            except DataError as err:
                entry = {"stamp": stamp, "error": str(err)}
            self._entries[image_path] = entry
        if "error" in entry:
            raise DataError(entry["error"])
        return entry["result"]

    def save(self) -> None:
        if self.path:
            _write_if_changed(self.path, json.dumps(self._entries, indent=1, sort_keys=True))


def _write_if_changed(path: str, text: str) -> bool:
    """Write ``text`` unless the file already holds exactly it (keeps modification times of unchanged outputs)."""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def patient_splits(patients: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """``{patient: split}``: sorted ids permuted with ``seed``; test first, then validation, the rest training.

    A non-zero fraction gets at least one patient as long as one patient is left for training.
    """
    ordered = sorted(set(patients))
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    counts = []
    for fraction in (test_fraction, val_fraction):
        count = int(round(fraction * len(ordered)))
        if fraction > 0 and count == 0 and len(ordered) - sum(counts) > 1:
            count = 1
        counts.append(count)
    n_test, n_val = counts
    if n_test + n_val >= len(ordered) > 0:
        raise DataError(
            f"splits: expected patients left for training, found {len(ordered)} patients for "
            f"{n_test} test + {n_val} validation"
        )
    split_of = {}
    for i, patient in enumerate(shuffled):
        split_of[patient] = "test" if i < n_test else "validation" if i < n_test + n_val else "training"
    return split_of


def _prefixed(value: str, prefix: str) -> str:
    value = value.strip()
    return value if value.startswith(prefix) else prefix + value


def _read_reports(
    path: str, columns: BimcvColumns, extra_column: str | None
) -> tuple[dict[str, TsvRow], list[Exclusion]]:
    """Report rows keyed by study id (``sub-*_ses-*``); later rows with an already seen id become exclusions."""
    required = {
        "report_id": columns.report_id,
        "patient_id": columns.patient_id,
        "report": columns.report,
        "labels": columns.labels,
    }
    if extra_column:
        required["translation"] = extra_column
    _, rows = read_tsv(path, required)
    by_study: dict[str, TsvRow] = {}
    exclusions = []
    for row in rows:
        subject = _prefixed(row.values[columns.patient_id], "sub-")
        study_id = f"{subject}_{_prefixed(row.values[columns.report_id], 'ses-')}"
        if study_id in by_study:
            exclusions.append(
                Exclusion(
                    study_id,
                    subject,
                    "report",
                    f"{path}:{row.line}",
                    "duplicate report row",
                    f"same ReportID as line {by_study[study_id].line}",
                )
            )
        else:
            by_study[study_id] = row
    return by_study, exclusions


def _read_participants(root: str, columns: BimcvColumns) -> dict[str, dict]:
    path = os.path.join(root, "participants.tsv")
    if not os.path.isfile(path):
        return {}
    header, rows = read_tsv(path, {"participant": columns.participant})
    participants = {}
    for row in rows:
        age = re.findall(r"\d+", row.values.get(columns.age, ""))  # "[67]" in the real tables
        participants[_prefixed(row.values[columns.participant], "sub-")] = {
            "age": int(age[0]) if age else None,
            "gender": row.values.get(columns.gender, "").strip() or None,
        }
    return participants


def _read_partitions(root: str, columns: BimcvColumns) -> dict[str, list[str]]:
    """Files listed in ``derivatives/partitions.tsv`` by study id (empty when the table is absent)."""
    path = os.path.join(root, "derivatives", "partitions.tsv")
    if not os.path.isfile(path):
        return {}
    _, rows = read_tsv(
        path,
        {
            "partition_subject": columns.partition_subject,
            "partition_session": columns.partition_session,
            "partition_filepath": columns.partition_filepath,
        },
    )
    listed: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        subject = _prefixed(row.values[columns.partition_subject], "sub-")
        listed[f"{subject}_{_prefixed(row.values[columns.partition_session], 'ses-')}"].append(
            row.values[columns.partition_filepath].strip()
        )
    return listed


def _missing_listed_files(root: str, listed: dict[str, list[str]]) -> list[Exclusion]:
    """Listed files that are on disk neither relative to ``root`` nor to its parent (releases use both forms)."""
    exclusions = []
    for study_id, paths in sorted(listed.items()):
        for rel in paths:
            if not any(os.path.exists(os.path.join(base, rel)) for base in (root, os.path.dirname(root))):
                exclusions.append(
                    Exclusion(
                        study_id,
                        study_id.split("_")[0],
                        "series",
                        rel,
                        "missing file",
                        "listed in derivatives/partitions.tsv, not on disk",
                    )
                )
    return exclusions


def _read_ehr_results(root: str, columns: BimcvColumns) -> dict[str, list[str]]:
    """Test results (POSITIVO / NEGATIVO) per participant from ``derivatives/EHR/*.tsv``."""
    folder = os.path.join(root, "derivatives", "EHR")
    results: dict[str, list[str]] = defaultdict(list)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".tsv"):
            _, rows = read_tsv(
                os.path.join(folder, name),
                {"ehr_participant": columns.ehr_participant, "ehr_result": columns.ehr_result},
            )
            for row in rows:
                participant = _prefixed(row.values[columns.ehr_participant], "sub-")
                results[participant].append(row.values[columns.ehr_result].strip())
    return results


def _read_sessions(root: str, subjects: Sequence[str], columns: BimcvColumns) -> tuple[dict[str, str], dict[str, str]]:
    """``({study_id: study_date}, {study_id: "<sessions.tsv>:<line>"})`` from every ``sub-*/sub-*_sessions.tsv``."""
    dates, where = {}, {}
    for subject in subjects:
        path = os.path.join(root, subject, f"{subject}_sessions.tsv")
        if os.path.isfile(path):
            _, rows = read_tsv(path, {"session_id": columns.session_id})
            for row in rows:
                study_id = f"{subject}_{_prefixed(row.values[columns.session_id], 'ses-')}"
                dates[study_id] = row.values.get(columns.study_date, "").strip()
                where.setdefault(study_id, f"{path}:{row.line}")
    return dates, where


def _subject_folders(root: str) -> list[str]:
    """``sub-*`` folders of the tree (a subject whose sessions all lack images has no series but a sessions table)."""
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if n.startswith("sub-") and os.path.isdir(os.path.join(root, n)))


def _select_volumes(
    root: str, series: list[Series], probes: ProbeCache, min_slices: int, dicom_dir: str, progress: bool
) -> tuple[dict[str, tuple[Series, str, dict]], list[Exclusion]]:
    """Apply the series rules of :mod:`t3d_tools.curation.bimcv.mids`; ``{study_id: (series, nifti path, probe)}``."""
    exclusions: list[Exclusion] = []
    candidates: dict[str, list[tuple[Series, str, dict]]] = defaultdict(list)
    for item in tqdm(series, desc="probe series", unit="series", disable=not progress):
        source = os.path.join(root, item.rel_path)
        reason, detail = static_rejection(item) or (None, "")
        if reason is None:
            try:
                image = source
                if item.image_format == "dicom":
                    image = os.path.join(dicom_dir, f"{item.study_id}_{os.path.basename(item.rel_path)}.nii.gz")
                    if not os.path.isfile(image):
                        convert_dicom_series(source, image)
                probe = probes.probe(image)
                if probe["shape"][2] < min_slices:
                    reason, detail = "too few slices", f"{probe['shape'][2]} < {min_slices}"
                else:
                    candidates[item.study_id].append((item, image, probe))
            except DataError as err:
                reason, detail = "unreadable image", str(err)
        if reason is not None:
            exclusions.append(Exclusion(item.study_id, item.subject, "series", item.rel_path, reason, detail))
    chosen = {}
    for study_id, options in sorted(candidates.items()):
        index = choose_study_volume([(s, p) for s, _, p in options])
        chosen[study_id] = options[index]
        for i, (item, _, _) in enumerate(options):
            if i != index:
                exclusions.append(
                    Exclusion(
                        study_id,
                        item.subject,
                        "series",
                        item.rel_path,
                        "not selected",
                        f"one volume per study: {options[index][0].rel_path} preferred",
                    )
                )
    return chosen, exclusions


def _summary(values: Sequence[float]) -> dict:
    if not values:
        return {}
    array = np.asarray(values, dtype=float)
    return {
        "min": float(array.min()),
        "median": float(np.median(array)),
        "mean": round(float(array.mean()), 3),
        "max": float(array.max()),
    }


def _counts(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _stats(
    studies: list[CuratedStudy],
    exclusions: list[Exclusion],
    split_of: dict[str, str],
    classes: list[str],
    min_positive: int,
    participants: dict[str, dict],
    ehr_results: dict[str, list[str]],
) -> dict:
    shapes = np.array([s.probe["shape"] for s in studies]).reshape(-1, 3)
    spacings = np.array([s.probe["spacing"] for s in studies]).reshape(-1, 3)
    frequencies = Counter(term for s in studies for term in s.terms)
    per_split = {
        name: {
            "patients": len({s.patient_id for s in studies if split_of[s.patient_id] == name}),
            "studies": sum(split_of[s.patient_id] == name for s in studies),
        }
        for name in SPLITS
    }
    ages = [p["age"] for pid, p in participants.items() if p["age"] is not None and pid in split_of]
    return {
        "patients": len({s.patient_id for s in studies}),
        "studies": len(studies),
        "volumes": len(studies),
        "splits": per_split,
        "exclusions": len(exclusions),
        "exclusions_by_reason": dict(sorted(Counter(e.reason for e in exclusions).items())),
        "shape": {axis: _summary(shapes[:, i].tolist()) for i, axis in enumerate("ijk")},
        "spacing_mm": {axis: _summary(spacings[:, i].tolist()) for i, axis in enumerate("ijk")},
        "report_chars_raw": _summary([s.extra.get("report_chars_raw", len(s.report)) for s in studies]),
        "report_chars_clean": _summary([s.extra.get("report_chars_clean", len(s.report)) for s in studies]),
        "report_words_english": _summary([len(s.report.split()) for s in studies]),
        "label_frequencies": dict(sorted(frequencies.items(), key=lambda kv: (-kv[1], kv[0]))),
        "min_positive": min_positive,
        "classes": len(classes),
        "age": _summary(ages),
        "gender": _counts(p["gender"] for pid, p in participants.items() if pid in split_of and p["gender"]),
        "ehr_test_results": _counts(r for pid, found in ehr_results.items() if pid in split_of for r in found),
    }


def _plot_stats(stats: dict, studies: list[CuratedStudy], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].hist([s.probe["shape"][2] for s in studies], bins=20)
    axes[0].set(title="slices per volume", xlabel="slices", ylabel="volumes")
    axes[1].hist([s.probe["spacing"][2] for s in studies], bins=20)
    axes[1].set(title="slice spacing", xlabel="mm", ylabel="volumes")
    figure.tight_layout()
    figure.savefig(os.path.join(out, "stats_volumes.png"), dpi=80)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    raw = [s.extra.get("report_chars_raw", len(s.report)) for s in studies]
    clean = [s.extra.get("report_chars_clean", len(s.report)) for s in studies]
    axis.hist([raw, clean], bins=20, label=["before cleaning", "after cleaning"])
    axis.set(title="report length", xlabel="characters", ylabel="reports")
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out, "stats_reports.png"), dpi=80)
    plt.close(figure)

    frequencies = stats["label_frequencies"]
    figure, axis = plt.subplots(figsize=(max(6, 0.25 * len(frequencies)), 4))
    axis.bar(range(len(frequencies)), list(frequencies.values()))
    axis.axhline(stats["min_positive"], color="red", linestyle="--", label=f"min_positive={stats['min_positive']}")
    axis.set_xticks(range(len(frequencies)), list(frequencies), rotation=90, fontsize=7)
    axis.set(title="label frequency (studies)", ylabel="studies")
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out, "stats_labels.png"), dpi=80)
    plt.close(figure)


def _write_outputs(
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
    written = []
    pairs_json = json.dumps({**pairs, "finding_names": classes, "source": source}, indent=1, ensure_ascii=False)
    classification_doc = {**classification, "class_names": classes, "finding_names": classes, "source": source}
    outputs = {PAIRS_NAME: pairs_json, CLASSIFICATION_NAME: json.dumps(classification_doc, indent=1)}
    subsets = label_fraction_subsets(classification["training"], fractions, seed, stratify_key="label_vector")
    stem = os.path.splitext(CLASSIFICATION_NAME)[0]
    for fraction, subset in subsets.items():  # same file form as label_fractions.write_label_fraction_datalists
        document = {**classification_doc, "training": subset, "label_fraction": fraction, "seed": seed}
        outputs[f"{stem}_frac{fraction * 100:g}.json"] = json.dumps(document, indent=1)
    lines = ["\t".join(("study_id", "patient_id", "level", "path", "reason", "detail"))]
    for e in sorted(exclusions, key=lambda e: (e.study_id, e.level, e.path)):
        fields = (e.study_id, e.patient_id, e.level, e.path, e.reason, e.detail)
        lines.append("\t".join(re.sub(r"\s+", " ", str(v)) for v in fields))  # one line per exclusion
    outputs[EXCLUSIONS_NAME] = "\n".join(lines) + "\n"
    stats = _stats(studies, exclusions, split_of, classes, min_positive, participants, ehr_results)
    outputs[STATS_NAME] = json.dumps(stats, indent=1)
    for name, text in outputs.items():
        if _write_if_changed(os.path.join(out, name), text):
            written.append(name)
    plots = ("stats_volumes.png", "stats_reports.png", "stats_labels.png")
    if STATS_NAME in written or not all(os.path.isfile(os.path.join(out, p)) for p in plots):
        _plot_stats(stats, studies, out)
        written.extend(plots)
    return {
        "out": out,
        "studies": len(studies),
        "patients": stats["patients"],
        "classes": len(classes),
        "exclusions": len(exclusions),
        "written": written,
    }


def _print_dry_run(studies: list[CuratedStudy], exclusions: list[Exclusion]) -> None:
    for study in sorted(studies, key=lambda s: s.study_id):
        print(f"include\t{study.study_id}\t{study.image}")
    for e in sorted(exclusions, key=lambda e: (e.study_id, e.path)):
        print(f"exclude\t{e.study_id}\t{e.level}\t{e.path}\t{e.reason}\t{e.detail}")


def curate(
    root: str,
    out: str,
    translation: str | Translator = "Helsinki-NLP/opus-mt-es-en",
    labels_tsv: str = os.path.join("derivatives", "labels", "labels_covid_posi.tsv"),
    columns: dict | None = None,
    min_positive: int = 10,
    min_slices: int = 16,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    dry_run: bool = False,
    progress: bool = True,
    translation_batch_size: int = 16,
    translation_max_new_tokens: int = 256,
    device: str = "cpu",
) -> dict:
    """Curate a BIMCV-COVID19 MIDS tree at ``root`` into ``out`` (see the module docstring for the outputs).

    Args:
        root: the tree with ``participants.tsv`` and ``sub-*`` folders (e.g. ``.../covid19_posi``).
        out: output folder (created).
        translation: ``"identity"``, ``"column:<name>"`` (a translated column of the labels TSV) or a transformers
            seq2seq model id/path (default MarianMT Spanish -> English); from Python also a translator object
            (``name`` and ``translate(texts) -> texts``, see :mod:`t3d_tools.curation.bimcv.reports`). A report whose
            translation has no letter or digit is excluded as "empty translation".
        labels_tsv: the labels table, relative to ``root`` (BIMCV-COVID19-:
            ``derivatives/labels/Labels_covid_NEG_JAN21.tsv``).
        columns: column-name overrides, e.g. ``{"report": "Texto"}``
            (see :class:`~t3d_tools.curation.bimcv.tables.BimcvColumns`).
        min_positive: a term becomes a class with at least this many positive studies.
        min_slices: volumes with fewer slices along the third axis are excluded.
        val_fraction, test_fraction: patient fractions of the validation and test splits.
        fractions: label fractions of the classification training split.
        seed: seeds the patient splits and the label fractions.
        dry_run: print what would be included/excluded (nothing is written, nothing translated).
        progress: show progress bars.
        translation_batch_size, translation_max_new_tokens, device: for the translation model (per sentence).

    Returns:
        a summary: counts, and the output files written by this run (empty when nothing changed).
    """
    columns_config = BimcvColumns.from_overrides(columns)
    root, out = os.path.abspath(root), os.path.abspath(out)
    named = isinstance(translation, str)  # else a Translator object (``name`` and ``translate(texts)``)
    translated_column = translation[len("column:") :] if named and translation.startswith("column:") else None
    labels_path = os.path.join(root, labels_tsv)
    reports, exclusions = _read_reports(labels_path, columns_config, translated_column)
    participants = _read_participants(root, columns_config)
    series = walk_mids(root)
    subjects = sorted({s.subject for s in series} | set(_subject_folders(root)))
    study_dates, session_rows = _read_sessions(root, subjects, columns_config)
    probes = ProbeCache(None if dry_run else os.path.join(out, "cache", "probes.json"))
    with tempfile.TemporaryDirectory() as scratch:  # DICOM conversions of a dry run land here and vanish
        dicom_dir = scratch if dry_run else os.path.join(out, "images")
        chosen, series_exclusions = _select_volumes(root, series, probes, min_slices, dicom_dir, progress)
    listed = _read_partitions(root, columns_config)
    exclusions += series_exclusions + _missing_listed_files(root, listed)

    kept: list[tuple[str, Series, str, dict, str, str]] = []  # study_id, series, image, probe, raw report, cleaned
    seen_content: dict[str, str] = {}
    for study_id, (item, image, probe) in sorted(chosen.items()):
        row = reports.get(study_id)
        where = f"{labels_path}:{row.line}" if row else labels_path
        reason, detail = None, ""
        if row is None:
            reason, detail = "no report", f"no row with {columns_config.report_id} {item.session} in {labels_path}"
        elif not row.utf8:
            reason, detail = "report not UTF-8", f"{where}: expected UTF-8, found undecodable bytes"
        else:
            try:
                raw = check_report_text(row.values[columns_config.report], f"{where} column {columns_config.report}")
                cleaned = clean_report(raw)
                if not cleaned:
                    raise DataError(f"{where}: expected report text after cleaning, found nothing")
            except DataError as err:
                reason, detail = "empty report", str(err)
        if reason is None and probe["content_sha1"] in seen_content:
            reason, detail = "duplicate study", f"same voxels as {seen_content[probe['content_sha1']]}"
        if reason is not None:
            exclusions.append(Exclusion(study_id, item.subject, "study", item.rel_path, reason, detail))
            continue
        seen_content[probe["content_sha1"]] = study_id
        kept.append((study_id, item, image, probe, raw, cleaned))
    known_studies = {s.study_id for s in series} | set(listed)  # listed-but-missing ones are excluded already
    for study_id, row in sorted(reports.items()):
        if study_id not in known_studies:
            exclusions.append(
                Exclusion(
                    study_id,
                    study_id.split("_")[0],
                    "report",
                    f"{labels_path}:{row.line}",
                    "no image",
                    "no image series for this report",
                )
            )
    excluded_studies = {e.study_id for e in exclusions}
    for study_id, where in sorted(session_rows.items()):  # a session listed with no image and no report row
        if study_id not in known_studies and study_id not in excluded_studies:
            subject, _, session = study_id.partition("_")
            exclusions.append(
                Exclusion(
                    study_id,
                    subject,
                    "session",
                    where,
                    "no image",
                    f"{where}: expected image series under {subject}/{session}, found none",
                )
            )
    probes.save()

    studies = []
    for study_id, item, image, probe, raw, cleaned in kept:
        row = reports[study_id]
        cell = f"{labels_path}:{row.line} column {columns_config.labels}"
        try:
            terms = canonical_terms(parse_label_list(row.values[columns_config.labels], cell))
        except DataError as err:
            exclusions.append(Exclusion(study_id, item.subject, "study", item.rel_path, "unparsable labels", str(err)))
            continue
        extra = {
            "study_date": study_dates.get(study_id, ""),
            "series": item.rel_path,
            "report_es": cleaned,
            "report_chars_raw": len(raw),
            "report_chars_clean": len(cleaned),
        }
        studies.append(CuratedStudy(study_id, item.subject, image, "", terms, probe, extra))
    if dry_run:
        _print_dry_run(studies, exclusions)
        return {"dry_run": True, "studies": len(studies), "exclusions": len(exclusions)}

    if translated_column:
        english = [clean_report(reports[s.study_id].values[translated_column]) for s in studies]
    else:
        translator = (
            make_translator(
                translation, batch_size=translation_batch_size, max_new_tokens=translation_max_new_tokens, device=device
            )
            if named
            else translation
        )
        cached = CachedTranslator(translator, os.path.join(out, "cache", "translations.jsonl"), progress)
        english = cached.translate([s.extra["report_es"] for s in studies], batch_size=translation_batch_size)
    empty = set()
    for study, text in zip(studies, english):
        study.report = text.strip()
        if not _has_words(study.report):  # nothing, whitespace or punctuation only
            empty.add(study.study_id)
            where = f"{labels_path}:{reports[study.study_id].line}"
            found = f"{study.report!r}" if study.report else "nothing"
            exclusions.append(
                Exclusion(
                    study.study_id,
                    study.patient_id,
                    "study",
                    study.extra["series"],
                    "empty translation",
                    f"{where}: expected English text for a {len(study.extra['report_es'])}-character report, "
                    f"found {found}",
                )
            )
    studies = [study for study in studies if study.study_id not in empty]
    _refuse_nothing_left(root, studies, exclusions)
    source = {
        "kind": "bimcv-mids",
        "root": root,
        "labels_tsv": labels_tsv,
        "translation": translation if named else translation.name,
        "min_positive": min_positive,
        "min_slices": min_slices,
        "seed": seed,
    }
    return _write_outputs(
        out,
        studies,
        exclusions,
        min_positive,
        val_fraction,
        test_fraction,
        fractions,
        seed,
        source,
        participants,
        _read_ehr_results(root, columns_config),
    )


def _refuse_nothing_left(source: str, studies: Sequence[CuratedStudy], exclusions: Sequence[Exclusion]) -> None:
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


def _read_csv_text(path: str) -> str:
    """The CSV as text, strictly UTF-8 (a leading byte-order mark dropped). A file with bytes that are not UTF-8 is
    one error naming the file, the byte offset and the line: such a file is nearly always in another encoding as a
    whole (a Latin-1 / Windows-1252 export), so excluding just the rows with accents would silently lose data."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: CSV file not found") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: expected UTF-8 text, found byte 0x{raw[err.start]:02x} at offset {err.start} "
            f"(line {line}); re-encode the whole file as UTF-8"
        ) from None


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _entity(path: str, key: str) -> str | None:
    match = re.search(rf"(?:^|[/_\\]){key}-([A-Za-z0-9]+)", path)
    return f"{key}-{match.group(1)}" if match else None


def curate_csv(
    csv_path: str,
    out: str,
    image_column: str = "path",
    report_column: str = "Report_en",
    patient_column: str | None = None,
    min_positive: int = 10,
    min_slices: int = 16,
    uncertain_as: str = "positive",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    dry_run: bool = False,
    progress: bool = True,
) -> dict:
    """Curate an already-paired BIMCV-R style CSV (image path + English report) into the same outputs as :func:`curate`.

    Image paths are relative to the CSV's folder (or absolute). The patient is ``patient_column`` when given, else the
    ``sub-*`` entity of the path, else the file name; the study is the ``sub-*_ses-*`` entities, else the file name.
    Labels come from the English labeler (:func:`~t3d_tools.curation.bimcv.labels.english_terms`), same vocabulary as
    the ``Labels`` route; ``uncertain_as`` decides uncertain mentions.
    """
    out = os.path.abspath(out)
    base = os.path.dirname(os.path.abspath(csv_path))
    reader = csv.DictReader(io.StringIO(_read_csv_text(csv_path), newline=""))
    header = reader.fieldnames or []
    for option, column in (
        ("image_column", image_column),
        ("report_column", report_column),
        ("patient_column", patient_column),
    ):
        if column and column not in header:
            raise DataError(f"{csv_path}: expected column '{column}' (option '{option}'), found columns {header}")
    rows, line = [], reader.line_num + 1
    for row in reader:  # a quoted report may span lines: a row's line is where it starts
        rows.append((line, {k: v if v is not None else "" for k, v in row.items() if k is not None}))
        line = reader.line_num + 1
    probes = ProbeCache(None if dry_run else os.path.join(out, "cache", "probes.json"))
    studies, exclusions, seen_content = [], [], {}
    for line, row in tqdm(rows, desc="probe images", unit="image", disable=not progress):
        relative = row.get(image_column, "").strip()
        if not relative:
            exclusions.append(
                Exclusion(
                    f"{os.path.basename(csv_path)}:{line}",
                    "",
                    "study",
                    f"{csv_path}:{line}",
                    "no image",
                    f"{csv_path}:{line}: expected an image path in column '{image_column}', found nothing",
                )
            )
            continue
        image = relative if os.path.isabs(relative) else os.path.join(base, relative)
        stem = os.path.basename(relative).split(".")[0]
        patient = (row.get(patient_column, "").strip() if patient_column else None) or _entity(relative, "sub") or stem
        session = _entity(relative, "ses")
        study_id = f"{patient}_{session}" if session else stem
        try:
            report = clean_report(
                check_report_text(row.get(report_column, ""), f"{csv_path}:{line} column {report_column}")
            )
        except DataError as err:
            exclusions.append(Exclusion(study_id, patient, "study", relative, "empty report", str(err)))
            continue
        try:
            if not os.path.isfile(image):
                raise DataError(f"{image}: image file not found")
            probe = probes.probe(image)
        except DataError as err:
            exclusions.append(Exclusion(study_id, patient, "study", relative, "unreadable image", str(err)))
            continue
        if probe["shape"][2] < min_slices:
            exclusions.append(
                Exclusion(study_id, patient, "study", relative, "too few slices", f"{probe['shape'][2]} < {min_slices}")
            )
        elif probe["content_sha1"] in seen_content:
            exclusions.append(
                Exclusion(
                    study_id,
                    patient,
                    "study",
                    relative,
                    "duplicate study",
                    f"same voxels as {seen_content[probe['content_sha1']]}",
                )
            )
        else:
            seen_content[probe["content_sha1"]] = study_id
            terms = english_terms(report, uncertain_as)
            lengths = {"report_chars_raw": len(row[report_column]), "report_chars_clean": len(report)}
            studies.append(CuratedStudy(study_id, patient, os.path.abspath(image), report, terms, probe, lengths))
    probes.save()
    if dry_run:
        _print_dry_run(studies, exclusions)
        return {"dry_run": True, "studies": len(studies), "exclusions": len(exclusions)}
    _refuse_nothing_left(csv_path, studies, exclusions)
    source = {
        "kind": "bimcv-r-csv",
        "csv": os.path.abspath(csv_path),
        "uncertain_as": uncertain_as,
        "min_positive": min_positive,
        "min_slices": min_slices,
        "seed": seed,
    }
    return _write_outputs(
        out, studies, exclusions, min_positive, val_fraction, test_fraction, fractions, seed, source, {}, {}
    )
