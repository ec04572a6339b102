"""Curate CT-RATE as downloaded into this project's pairs and classification datalists.

    python -m t3d_tools.curation.ct_rate curate --root /data/CT-RATE/dataset --out /data/ct_rate_vlp --workers 8

Outputs in ``out``::

    pairs_datalist.json            {"training": [row], "validation": [row], "finding_names": [18 labels], "source"}
                                   row: image (relative to out), report (Findings_EN + Impressions_EN), patient_id
                                   (train_<pid> / valid_<pid>), study_id (train_<pid>_<scan>), volume_name,
                                   reconstruction, labels, label_vector (multi-hot over finding_names), header, shape,
                                   spacing
    classification_datalist.json   the same splits: image, label (= label_vector), labels, patient_id, study_id;
                                   class_names = finding_names
    label_set.json                 {"class_names": the 18 labels, "source": the labels CSVs}
    exclusions.tsv                 study_id, patient_id, level, path, reason, detail
    stats.json                     counts per split, exclusions by reason, header repairs, label prevalence
    volumes/                       repaired copies of volumes whose header lacked spacing / rescale
    cache/volumes.jsonl            the per-volume log that makes re-runs and interrupted runs resume

Splits are the official ones (``train`` -> ``training``, ``valid`` -> ``validation``), so no patient is split.
One reconstruction per study by default (the lowest-numbered usable one); ``reconstructions="all"`` keeps each
usable reconstruction as its own row (same patient, same study id, so patient-level bootstraps stay honest).

Input contract (checked before anything is written; each a one-line :class:`~custom.errors.DataError`): every
CSV has its columns and names each volume once; every volume on disk has a report, labels and metadata row; every
labels and metadata row names a volume of the reports CSV; every volume the reports CSV lists is on disk (unless
``subset=True``: a partial download, where the missing ones are recorded as "not downloaded"); every metadata row
of a volume has positive spacings; no file name is on disk twice.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence

from custom.errors import DataError
from t3d_tools.curation.bimcv.outputs import exclusions_tsv
from t3d_tools.curation.bimcv.records import (
    CLASSIFICATION_NAME,
    EXCLUSIONS_NAME,
    PAIRS_NAME,
    STATS_NAME,
    Exclusion,
    write_if_changed,
)
from t3d_tools.curation.ct_rate.layout import SPLITS, CtRateColumns, CtRateFiles, VolumeName, parse_volume_name
from t3d_tools.curation.ct_rate.tables import geometry_of, read_label_table, read_table
from t3d_tools.curation.ct_rate.volumes import HEADER_FIXES, VolumeLog, VolumeTask, run_tasks

__all__ = ["LABEL_SET_NAME", "curate", "report_text"]

LABEL_SET_NAME = "label_set.json"
#: what CT-RATE writes in an empty report section (CT-CLIP's ``data.py`` drops it too)
EMPTY_SECTION = "Not given."


def report_text(row: dict[str, str], columns: Sequence[str]) -> str:
    """The report of one row: its non-empty ``columns`` joined with a space, "Not given." sections dropped."""
    parts = [" ".join(row.get(c, "").split()) for c in columns]
    return " ".join(p for p in parts if p and p != EMPTY_SECTION)


def _volumes_on_disk(root: str, folder: str) -> dict[str, str]:
    """``{file name: absolute path}`` of the ``.nii.gz`` files under ``root/folder``; a name twice stops the run."""
    found: dict[str, str] = {}
    base = os.path.join(root, folder)
    for directory, _, names in sorted(os.walk(base)):
        for name in sorted(names):
            if not name.endswith(".nii.gz") or ".tmp" in name:
                continue
            path = os.path.join(directory, name)
            parse_volume_name(name, path)
            if name in found:
                raise DataError(f"{path}: expected each volume file name once, found it also at {found[name]}")
            found[name] = path
    return found


class _Split:
    """One official split's tables and files, cross-checked."""

    def __init__(
        self, root: str, split: str, files: CtRateFiles, columns: CtRateColumns, volume_folder: str | None, subset: bool
    ) -> None:
        self.split = split
        self.reports = read_table(
            os.path.join(root, files.reports[split]),
            {"findings": columns.findings, "impressions": columns.impressions},
            columns.volume,
        )
        self.labels, self.label_names = read_label_table(os.path.join(root, files.labels[split]), columns.volume, None)
        self.metadata = read_table(
            os.path.join(root, files.metadata[split]),
            {
                "xy_spacing": columns.xy_spacing,
                "z_spacing": columns.z_spacing,
                "slope": columns.slope,
                "intercept": columns.intercept,
            },
            columns.volume,
        )
        self.folder = files.volume_folder(root, split, volume_folder)
        self.on_disk = _volumes_on_disk(root, self.folder)
        self.not_downloaded: list[str] = []
        self._cross_check(root, subset)
        self.geometry = {name: geometry_of(self.metadata, name, columns) for name in sorted(self.on_disk)}

    def _cross_check(self, root: str, subset: bool) -> None:
        listed = self.reports.rows
        for table, what in ((self.labels, "labels"), (self.metadata, "metadata")):
            for name in table.rows:
                if name not in listed:
                    raise DataError(
                        f"{table.where(name)}: expected {what} for a volume of {self.reports.path}, found "
                        f"'{name}', which it does not list"
                    )
        for name, path in sorted(self.on_disk.items()):
            if parse_volume_name(name, path).split != self.split:
                raise DataError(f"{path}: expected a '{self.split}_*' volume in folder {self.folder}, found '{name}'")
            for table, what in ((self.reports, "report"), (self.labels, "labels"), (self.metadata, "metadata")):
                if name not in table.rows:
                    raise DataError(
                        f"{table.path}: expected a {what} row for volume '{name}' (on disk at {path}), found none"
                    )
        absent = sorted(set(listed) - set(self.on_disk))
        if absent and not subset:
            raise DataError(
                f"{self.reports.where(absent[0])}: expected volume '{absent[0]}' under "
                f"{os.path.join(root, self.folder)}, found no such file ({len(absent)} listed volume(s) absent; "
                f"pass --subset for a partial download)"
            )
        self.not_downloaded = absent


def _check_label_names(splits: list[_Split]) -> list[str]:
    names = splits[0].label_names
    for other in splits[1:]:
        if other.label_names != names:
            raise DataError(
                f"{other.labels.path}: expected the label columns of {splits[0].labels.path} ({names}), "
                f"found {other.label_names}"
            )
    return names


def _tasks(split: _Split, names: list[str], out: str, header_fix: str, min_slices: int) -> list[VolumeTask]:
    return [
        VolumeTask(
            name=name,
            source=split.on_disk[name],
            repaired=os.path.join(out, "volumes", split.folder, name),
            geometry=split.geometry[name],
            header_fix=header_fix,
            min_slices=min_slices,
        )
        for name in names
    ]


def _select(
    split: _Split, out: str, options: dict, log: VolumeLog, exclusions: list[Exclusion]
) -> list[tuple[VolumeName, dict]]:
    """Process the volumes of each study, reconstruction by reconstruction: with ``"first"`` a study's next
    reconstruction is only read when the previous one was unusable."""
    studies: dict[str, list[VolumeName]] = defaultdict(list)
    for name, path in split.on_disk.items():
        parsed = parse_volume_name(name, path)
        studies[parsed.study_id].append(parsed)
    for candidates in studies.values():
        candidates.sort(key=lambda v: (v.reconstruction, v.name))
    kept: list[tuple[VolumeName, dict]] = []
    pending = {study: 0 for study in studies}  # study -> index of its next candidate
    first_only = options["reconstructions"] == "first"
    while pending:
        batch = {study: studies[study][i] for study, i in pending.items() if i < len(studies[study])}
        if not batch:
            break
        wanted = [v.name for v in batch.values()] if first_only else [v.name for s in batch for v in studies[s]]
        by_name = {v.name: v for s in batch for v in studies[s]}
        usable: set[str] = set()
        tasks = _tasks(split, sorted(wanted), out, options["header_fix"], options["min_slices"])
        desc = f"{split.split} volumes" + (f" (reconstruction round {max(pending.values()) + 1})" if first_only else "")
        for record in run_tasks(tasks, log, options["workers"], options["progress"], desc):
            volume = by_name[record["name"]]
            if "image" in record:
                kept.append((volume, record))
                usable.add(volume.study_id)
            else:
                exclusions.append(
                    Exclusion(
                        volume.study_id, volume.patient_id, "volume", record["name"], record["reason"], record["detail"]
                    )
                )
        if not first_only:
            break
        pending = {s: i + 1 for s, i in pending.items() if s in batch and s not in usable}
    if first_only:  # keep the lowest-numbered usable reconstruction; note the ones not read
        kept.sort(key=lambda item: (item[0].study_id, item[0].reconstruction))
        chosen = {}
        for volume, record in kept:
            chosen.setdefault(volume.study_id, (volume, record))
        read = {v.name for v, _ in kept} | {e.path for e in exclusions}
        for study, candidates in studies.items():
            if study not in chosen:
                continue
            for volume in candidates:
                if volume.name != chosen[study][0].name and volume.name not in read:
                    exclusions.append(
                        Exclusion(
                            study,
                            volume.patient_id,
                            "volume",
                            volume.name,
                            "not selected",
                            f"one reconstruction per study: {chosen[study][0].name} kept",
                        )
                    )
        kept = list(chosen.values())
    return kept


def _rows(
    split: _Split,
    kept: list[tuple[VolumeName, dict]],
    label_names: list[str],
    report_columns: Sequence[str],
    out: str,
    exclusions: list[Exclusion],
) -> tuple[list[dict], list[dict]]:
    pairs, classification = [], []
    for volume, record in sorted(kept, key=lambda item: item[0].name):
        report = report_text(split.reports.rows[volume.name][1], report_columns)
        if not any(ch.isalnum() for ch in report):
            exclusions.append(
                Exclusion(
                    volume.study_id,
                    volume.patient_id,
                    "study",
                    split.reports.where(volume.name),
                    "empty report",
                    f"{split.reports.where(volume.name)}: expected text in {list(report_columns)}, found none",
                )
            )
            continue
        cells = split.labels.rows[volume.name][1]
        vector = [int(float(cells[n])) for n in label_names]
        labels = [n for n, v in zip(label_names, vector) if v]
        image = os.path.relpath(record["image"], out)
        common = {"patient_id": volume.patient_id, "study_id": volume.study_id}
        pairs.append(
            {
                "image": image,
                "report": report,
                **common,
                "volume_name": volume.name,
                "reconstruction": volume.reconstruction,
                "labels": labels,
                "label_vector": vector,
                "header": record["header"],
                "shape": record["shape"],
                "spacing": record["spacing"],
            }
        )
        classification.append({"image": image, "label": vector, "label_vector": vector, "labels": labels, **common})
    return pairs, classification


def _stats(splits, pairs, exclusions, label_names) -> dict:
    stats: dict = {"splits": {}, "exclusions": dict(sorted(Counter(e.reason for e in exclusions).items()))}
    for split in splits:
        rows = pairs[SPLITS[split.split]]
        stats["splits"][SPLITS[split.split]] = {
            "listed_volumes": len(split.reports.rows),
            "volumes_on_disk": len(split.on_disk),
            "not_downloaded": len(split.not_downloaded),
            "rows": len(rows),
            "studies": len({r["study_id"] for r in rows}),
            "patients": len({r["patient_id"] for r in rows}),
            "header": dict(sorted(Counter(r["header"] for r in rows).items())),
            "label_prevalence": {
                name: round(sum(r["label_vector"][i] for r in rows) / len(rows), 4) if rows else None
                for i, name in enumerate(label_names)
            },
        }
    return stats


def curate(
    root: str,
    out: str,
    reconstructions: str = "first",
    header_fix: str = "auto",
    subset: bool = False,
    workers: int = 1,
    min_slices: int = 20,
    report_columns: Sequence[str] = ("Findings_EN", "Impressions_EN"),
    columns: dict | None = None,
    splits: Sequence[str] = ("train", "valid"),
    volume_folders: dict | None = None,
    progress: bool = True,
) -> dict:
    """Curate the CT-RATE dataset folder ``root`` into ``out`` (see the module docstring).

    Args:
        root: the hub's ``dataset`` folder (holding ``train/``, ``valid/``, ``radiology_text_reports/``, ...).
        out: output folder (created once the inputs passed every check).
        reconstructions: ``"first"`` (one per study, the lowest-numbered usable one) or ``"all"``.
        header_fix: ``"auto"``, ``"metadata"`` or ``"header"`` (:mod:`t3d_tools.curation.ct_rate.volumes`).
        subset: accept a partial download (listed volumes absent from disk are recorded, not an error).
        workers: processes reading volumes in parallel.
        min_slices: volumes with fewer slices are excluded (CT-CLIP's data loader uses 20).
        report_columns: the report CSV columns joined into the report (CT-CLIP: findings then impressions).
        columns: CSV column-name overrides (:class:`~t3d_tools.curation.ct_rate.layout.CtRateColumns`).
        splits: which official splits to curate (``train``, ``valid``); a split whose reports CSV is absent is
            skipped when the other is present.
        volume_folders: ``{"train": "train_fixed", ...}`` to choose the volume folder of a split.
        progress: progress bars.
    """
    if reconstructions not in ("first", "all"):
        raise DataError(f"reconstructions: expected 'first' or 'all', found {reconstructions!r}")
    if header_fix not in HEADER_FIXES:
        raise DataError(f"header_fix: expected one of {list(HEADER_FIXES)}, found {header_fix!r}")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise DataError(f"splits: expected names from {list(SPLITS)}, found {unknown}")
    columns_config, files = CtRateColumns.from_overrides(columns), CtRateFiles()
    root, out = os.path.abspath(root), os.path.abspath(out)
    present = [s for s in splits if os.path.isfile(os.path.join(root, files.reports[s]))]
    if not present:
        expected = [os.path.join(root, files.reports[s]) for s in splits]
        raise DataError(f"{root}: expected a CT-RATE dataset folder with {expected}, found none of them")
    folders = volume_folders or {}
    loaded = [_Split(root, s, files, columns_config, folders.get(s), subset) for s in present]
    label_names = _check_label_names(loaded)
    # every input checked: from here on the run writes
    options = {"reconstructions": reconstructions, "header_fix": header_fix, "min_slices": int(min_slices)}
    options.update({"workers": int(workers), "progress": progress})
    log = VolumeLog(os.path.join(out, "cache", "volumes.jsonl"))
    exclusions: list[Exclusion] = []
    pairs: dict[str, list[dict]] = {}
    classification: dict[str, list[dict]] = {}
    try:
        for split in loaded:
            for name in split.not_downloaded:
                volume = parse_volume_name(name, split.reports.where(name))
                where = split.reports.where(name)
                exclusions.append(
                    Exclusion(volume.study_id, volume.patient_id, "volume", name, "not downloaded", where)
                )
            kept = _select(split, out, options, log, exclusions)
            target = SPLITS[split.split]
            pairs[target], classification[target] = _rows(split, kept, label_names, report_columns, out, exclusions)
    finally:
        log.close()
    if not any(pairs.values()):
        raise DataError(f"{root}: expected at least one usable volume, found none ({len(exclusions)} excluded)")
    source = {
        "kind": "ct-rate",
        "root": root,
        "reconstructions": reconstructions,
        "header_fix": header_fix,
        "subset": subset,
        "min_slices": int(min_slices),
        "report_columns": list(report_columns),
    }
    label_files = [s.labels.path for s in loaded]
    outputs = {
        PAIRS_NAME: {**pairs, "finding_names": label_names, "source": source},
        CLASSIFICATION_NAME: {**classification, "class_names": label_names, "finding_names": label_names},
        LABEL_SET_NAME: {"class_names": label_names, "source": label_files},
        STATS_NAME: _stats(loaded, pairs, exclusions, label_names),
    }
    written = [
        name
        for name, content in outputs.items()
        if write_if_changed(os.path.join(out, name), json.dumps(content, indent=1, ensure_ascii=False))
    ]
    if write_if_changed(os.path.join(out, EXCLUSIONS_NAME), exclusions_tsv(exclusions)):
        written.append(EXCLUSIONS_NAME)
    return {
        "out": out,
        "rows": {k: len(v) for k, v in pairs.items()},
        "exclusions": len(exclusions),
        "written": written,
    }
