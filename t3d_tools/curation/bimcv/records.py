"""The records of a BIMCV curation: output file names, :class:`CuratedStudy` / :class:`Exclusion`, the volume-probe
cache and the patient-level splits."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from custom.errors import DataError
from t3d_tools.curation.bimcv.mids import probe_volume

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


def write_if_changed(path: str, text: str) -> bool:
    """Write ``text`` unless the file already holds exactly it (keeps modification times of unchanged outputs)."""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def probe_entry(image_path: str) -> dict:
    """``{"stamp": [size, mtime_ns], "result": probe}`` or ``{"stamp", "error"}`` of one volume (picklable, for
    worker processes)."""
    stat = os.stat(image_path)
    stamp = [stat.st_size, stat.st_mtime_ns]
    try:
        return {"stamp": stamp, "result": probe_volume(image_path)}
    except DataError as err:
        return {"stamp": stamp, "error": str(err)}


class ProbeCache:
    """``probe_volume`` results keyed by path, valid while the file's size and modification time are unchanged."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.loaded = 0
        self._entries: dict[str, dict] = {}
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self._entries = json.load(f)

    def _valid(self, image_path: str) -> bool:
        entry = self._entries.get(image_path)
        stat = os.stat(image_path)
        return entry is not None and entry["stamp"] == [stat.st_size, stat.st_mtime_ns]

    def probe(self, image_path: str) -> dict:
        """``{"shape", "spacing", "content_sha1"}`` of the volume; raises :class:`DataError` if it is unreadable."""
        if not self._valid(image_path):
            self.loaded += 1
            self._entries[image_path] = probe_entry(image_path)
        entry = self._entries[image_path]
        if "error" in entry:
            raise DataError(entry["error"])
        return entry["result"]

    def prefill(self, paths: Sequence[str], workers: int, progress: bool, save_every: int = 200) -> None:
        """Probe the ``paths`` not cached yet with ``workers`` processes, saving the cache every ``save_every``
        volumes so an interrupted run keeps what it probed."""
        from tqdm import tqdm

        missing = [p for p in dict.fromkeys(paths) if os.path.isfile(p) and not self._valid(p)]
        if not missing:
            return
        pool = None
        if workers > 1:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(workers)
        entries = pool.imap(probe_entry, missing, chunksize=4) if pool else map(probe_entry, missing)
        try:
            bar = tqdm(zip(missing, entries), total=len(missing), desc="probe images", disable=not progress)
            for done, (path, entry) in enumerate(bar, 1):
                self.loaded += 1
                self._entries[path] = entry
                if done % save_every == 0:
                    self.save()
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        self.save()

    def save(self) -> None:
        if self.path:
            write_if_changed(self.path, json.dumps(self._entries, indent=1, sort_keys=True))


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
