"""One CT-RATE volume at a time: read it fully, decide whether its NIfTI header can be trusted, write a repaired copy
when it cannot, and record what came out (shape, spacing, where the usable file is) in a resumable log.

Header rule (``header_fix``; the caveat and its sources are in ``docs/ct_rate_curation.md``):

- ``"auto"`` (default): a header whose voxel size is 1 x 1 x 1 mm while the metadata CSV says otherwise is the
  first release's blank header (no spacing, origin, direction or rescale): the volume is rewritten from the metadata
  (HU = stored value x ``RescaleSlope`` + ``RescaleIntercept``, int16, affine from ``XYSpacing`` / ``ZSpacing`` and,
  when the CSV has them, ``ImagePositionPatient`` / ``ImageOrientationPatient``). A header whose voxel size agrees
  with the metadata (the re-uploaded ``*_fixed`` volumes) is used as it is, voxel values included. Any other
  disagreement excludes the volume ("spacing conflict"), since neither side can be trusted.
- ``"metadata"``: always rewrite from the metadata (stored values, unscaled, through the CSV's rescale).
- ``"header"``: never rewrite; the header is taken as it is.

Repaired copies go to ``<out>/volumes/<split folder>/<VolumeName>`` (written to a temporary name, then renamed).
The log ``<out>/cache/volumes.jsonl`` gets one line per finished volume, keyed by the source's size and modification
time and the rule's inputs; a re-run (or a run after an interruption) skips every volume whose line still matches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import nibabel as nib
import numpy as np

from custom.errors import DataError
from custom.transforms.volume_checks import check_volume_array
from t3d_tools.curation.ct_rate.tables import Geometry

__all__ = ["HEADER_FIXES", "VolumeTask", "process_volume", "metadata_affine", "VolumeLog", "run_tasks"]

HEADER_FIXES = ("auto", "metadata", "header")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class VolumeTask:
    """What a worker needs for one volume (picklable)."""

    name: str
    source: str  # absolute path of the downloaded file
    repaired: str  # absolute path a repaired copy would get
    geometry: Geometry
    header_fix: str
    min_slices: int

    def stamp(self) -> list:
        stat = os.stat(self.source)
        return [stat.st_size, stat.st_mtime_ns, self.header_fix, self.min_slices, list(asdict(self.geometry).values())]


def metadata_affine(geometry: Geometry) -> np.ndarray:
    """RAS voxel-to-world ``(4, 4)`` from the metadata: DICOM direction cosines (row, column, their cross product)
    and origin when known, else axis-aligned in DICOM's LPS frame with the origin at 0."""
    spacing = np.asarray(geometry.spacing, dtype=np.float64)
    if geometry.orientation is not None and geometry.position is not None:
        row, column = np.asarray(geometry.orientation[:3]), np.asarray(geometry.orientation[3:])
        directions = np.stack([row, column, np.cross(row, column)], axis=1)
        origin = np.asarray(geometry.position, dtype=np.float64)
    else:
        directions, origin = np.eye(3), np.zeros(3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ directions @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return affine


def _decision(header_spacing: np.ndarray, geometry: Geometry, header_fix: str) -> tuple[bool, str]:
    """``(rewrite, why)``; raises :class:`DataError` ("spacing conflict") when the two disagree otherwise."""
    metadata = np.asarray(geometry.spacing)
    if header_fix == "metadata":
        return True, "rebuilt from metadata (header_fix=metadata)"
    if header_fix == "header":
        return False, "header as downloaded (header_fix=header)"
    if np.allclose(header_spacing, metadata, rtol=1e-3, atol=1e-3):
        return False, "header as downloaded (spacing agrees with metadata)"
    if np.allclose(header_spacing, 1.0, atol=1e-6):
        return True, "rebuilt from metadata (header has no spacing)"
    raise DataError(
        f"spacing conflict: header says {np.round(header_spacing, 4).tolist()} mm, metadata says "
        f"{np.round(metadata, 4).tolist()} mm"
    )


def _write_atomic(path: str, image: nib.Nifti1Image) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path[: -len('.nii.gz')]}.tmp{os.getpid()}.nii.gz"
    nib.save(image, tmp)
    os.replace(tmp, path)


def process_volume(task: VolumeTask) -> dict:
    """``{"name", "stamp", "image", "header", "shape", "spacing"}`` or ``{"name", "stamp", "reason", "detail"}``."""
    record: dict = {"name": task.name, "stamp": task.stamp()}
    try:
        image = nib.load(task.source)
        header_spacing = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
        rewrite, why = _decision(header_spacing, task.geometry, task.header_fix)
        if rewrite:
            stored = np.asanyarray(image.dataobj.get_unscaled()).astype(np.float32)
            hu = stored * task.geometry.slope + task.geometry.intercept
            check_volume_array(hu, task.source, 3, min_voxels=1)
            info = np.iinfo(np.int16)
            array = np.clip(np.rint(hu), info.min, info.max).astype(np.int16)
            affine = metadata_affine(task.geometry)
            repaired = nib.Nifti1Image(array, affine)
            repaired.set_qform(affine, code=1)
            repaired.set_sform(affine, code=1)
            _write_atomic(task.repaired, repaired)
            path, shape = task.repaired, array.shape
        else:
            array = check_volume_array(np.asanyarray(image.dataobj), task.source, 3, min_voxels=1)
            affine, path, shape = image.affine, task.source, array.shape
    except DataError as err:
        text = str(err)
        reason = "spacing conflict" if text.startswith("spacing conflict") else "unreadable image"
        return {**record, "reason": reason, "detail": text}
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as err:
        return {**record, "reason": "unreadable image", "detail": f"{task.source}: {err}"}
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    if shape[2] < task.min_slices:
        return {**record, "reason": "too few slices", "detail": f"{shape[2]} < {task.min_slices}"}
    return {
        **record,
        "image": path,
        "header": why,
        "shape": [int(s) for s in shape],
        "spacing": [round(float(s), 4) for s in spacing],
    }


class VolumeLog:
    """The append-only log of finished volumes (``cache/volumes.jsonl``); the last line of a name wins, and a line
    cut short by an interruption is ignored."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.records: dict[str, dict] = {}
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    self.records[record["name"]] = record
        self._file = None

    def done(self, task: VolumeTask) -> dict | None:
        """The logged result of ``task`` if it still holds (same source file, same rule inputs, output present)."""
        record = self.records.get(task.name)
        if record is None or record["stamp"] != json.loads(json.dumps(task.stamp())):
            return None
        if "image" in record and not os.path.isfile(record["image"]):
            return None
        return record

    def add(self, record: dict) -> None:
        self.records[record["name"]] = record
        if self.path:
            if self._file is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                cut_short = False
                if os.path.isfile(self.path) and os.path.getsize(self.path):
                    with open(self.path, "rb") as f:
                        f.seek(-1, os.SEEK_END)
                        cut_short = f.read(1) != b"\n"
                self._file = open(self.path, "a", encoding="utf-8")
                if cut_short:  # an interrupted write: end its line so the next record starts on its own
                    self._file.write("\n")
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def run_tasks(tasks: Iterable[VolumeTask], log: VolumeLog, workers: int, progress: bool, desc: str) -> Iterator[dict]:
    """Results of ``tasks`` (logged ones reused, the rest computed by ``workers`` processes), each logged as soon as
    it is done, with a progress bar; order is completion order."""
    from tqdm import tqdm

    todo: list[VolumeTask] = []
    for task in tasks:
        record = log.done(task)
        if record is not None:
            yield record
        else:
            todo.append(task)
    bar = tqdm(total=len(todo), desc=desc, unit="volume", disable=not progress or not todo)
    if workers <= 1:
        results: Iterable[dict] = map(process_volume, todo)
        pool = None
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap_unordered(process_volume, todo, chunksize=4)
    try:
        for record in results:
            log.add(record)
            bar.update()
            yield record
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
