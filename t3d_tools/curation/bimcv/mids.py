"""Walk a BIMCV-COVID19 MIDS tree and pick one CT volume per study.

Layout (see ``docs/bimcv_curation.md``)::

    root/sub-S00001/ses-E00001/mod-ct/sub-S00001_ses-E00001_run-1_bp-chest_ct.nii.gz   (+ .json sidecar)
    root/sub-S00001/ses-E00001/mod-rx/sub-S00001_ses-E00001_run-1_bp-chest_vp-ap_cr.png (+ .json sidecar)
    root/sub-S00001/ses-E00002/mod-ct/<series folder of .dcm files>                     (DICOM series)

A *study* is a session (``sub-*/ses-*``); a *series* is one image file or one folder of DICOM files in a ``mod-*``
folder. Series selection rules, in order (the first that fails is the exclusion reason):

0. the JSON sidecar, when present, parses ("unreadable sidecar");
1. modality: the sidecar's ``Modality`` tag, else the file-name suffix (``_ct``, ``_cr``, ``_dx``), else the
   ``mod-*`` folder; only ``CT`` is kept ("not CT");
2. body part: the ``bp-`` file-name entity, else the sidecar's ``BodyPartExamined``; kept when it names the chest or
   thorax (chest/thorax/torax/tórax, also within e.g. "chest-abdomen") or is absent ("not chest");
3. DICOM series need a reader: MONAI's ``LoadImage`` with ITK or pydicom; without either the series is excluded
   with reason "dicom reader not installed" (the tree is still curated from its NIfTI files);
4. the volume loads fully, is 3D and finite with an invertible affine ("unreadable image");
5. it has at least ``min_slices`` slices along its third axis ("too few slices").

One volume per study (:func:`choose_study_volume`): the most slices, then the thinnest slices (smallest third-axis
spacing), then the file name; the other usable series of the study are excluded as "not selected".
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from custom.errors import DataError
from custom.transforms.volume_checks import load_nifti_checked

__all__ = [
    "Series",
    "file_entities",
    "walk_mids",
    "static_rejection",
    "dicom_reader_available",
    "convert_dicom_series",
    "probe_volume",
    "choose_study_volume",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".mha", ".nrrd")
_CHEST_WORDS = ("chest", "thora", "torax", "tórax")


@dataclass
class Series:
    """One image series of a study. ``rel_path`` is relative to the tree root; ``sidecar`` is its JSON (or {})."""

    subject: str
    session: str
    rel_path: str
    image_format: str  # "nifti", "dicom" or "other"
    modality: str
    body_part: str
    sidecar: dict = field(default_factory=dict)
    sidecar_error: str = ""  # a sidecar that does not parse excludes only its series

    @property
    def study_id(self) -> str:
        return f"{self.subject}_{self.session}"


def _stem(name: str) -> str:
    """File name without its image/sidecar extension (``a_ct.nii.gz`` -> ``a_ct``)."""
    for ext in IMAGE_SUFFIXES + (".json",):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def file_entities(name: str) -> dict[str, str]:
    """BIDS-style ``key-value`` entities of a file name plus its ``suffix`` (``..._bp-chest_ct.nii.gz`` -> ct)."""
    parts = _stem(name).split("_")
    entities = dict(part.split("-", 1) for part in parts if "-" in part)
    if parts and "-" not in parts[-1]:
        entities["suffix"] = parts[-1]
    return entities


def _read_sidecar(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: expected a JSON sidecar, found unparsable content ({err})") from None
    return value if isinstance(value, dict) else {}


def _series(root: str, subject: str, session: str, mod_dir: str, name: str) -> Series | None:
    path = os.path.join(mod_dir, name)
    rel = os.path.relpath(path, root)
    mod_name = os.path.basename(mod_dir)[len("mod-") :]
    if os.path.isdir(path):
        # DICOM slices come as *.dcm or, from many PACS exports, as extension-less files
        if not any(f.lower().endswith(".dcm") or "." not in f for f in os.listdir(path)):
            return None
        sidecar_path, image_format = path.rstrip(os.sep) + ".json", "dicom"
    elif name.lower().endswith(IMAGE_SUFFIXES):
        sidecar_path = os.path.join(mod_dir, _stem(name) + ".json")
        image_format = "nifti" if name.endswith((".nii.gz", ".nii")) else "other"
    else:
        return None
    try:
        sidecar, sidecar_error = _read_sidecar(sidecar_path), ""
    except DataError as err:
        sidecar, sidecar_error = {}, str(err)
    entities = file_entities(name)
    suffix_modality = {"ct": "CT", "cr": "CR", "dx": "DX", "mr": "MR"}.get(entities.get("suffix", "").lower(), "")
    modality = str(sidecar.get("Modality") or suffix_modality or mod_name).upper()
    body_part = str(entities.get("bp") or sidecar.get("BodyPartExamined") or "").lower()
    return Series(subject, session, rel, image_format, modality, body_part, sidecar, sidecar_error)


def walk_mids(root: str) -> list[Series]:
    """Every image series under ``root/sub-*/ses-*/mod-*/``, sorted by path (sidecars read, images not opened)."""
    found = []
    for subject in sorted(d for d in os.listdir(root) if d.startswith("sub-") and os.path.isdir(os.path.join(root, d))):
        sub_dir = os.path.join(root, subject)
        for session in sorted(d for d in os.listdir(sub_dir) if d.startswith("ses-")):
            ses_dir = os.path.join(sub_dir, session)
            if not os.path.isdir(ses_dir):
                continue
            for mod in sorted(d for d in os.listdir(ses_dir) if d.startswith("mod-")):
                mod_dir = os.path.join(ses_dir, mod)
                for name in sorted(os.listdir(mod_dir)):
                    series = _series(root, subject, session, mod_dir, name)
                    if series is not None:
                        found.append(series)
    return found


def dicom_reader_available() -> bool:
    """Whether MONAI's ``LoadImage`` can read a DICOM series here (ITK or pydicom installed)."""
    return importlib.util.find_spec("itk") is not None or importlib.util.find_spec("pydicom") is not None


def static_rejection(series: Series) -> tuple[str, str] | None:
    """``(reason, detail)`` of an exclusion decidable without opening the image (rules 1-3), or ``None``."""
    if series.sidecar_error:
        return "unreadable sidecar", series.sidecar_error
    if series.modality != "CT":
        return "not CT", f"modality {series.modality}"
    if series.body_part and not any(word in series.body_part for word in _CHEST_WORDS):
        return "not chest", f"body part {series.body_part}"
    if series.image_format == "dicom" and not dicom_reader_available():
        return "dicom reader not installed", "install itk or pydicom to convert DICOM series"
    if series.image_format == "other":  # a CT stored as PNG/MHA/NRRD: not a format of BIMCV CT releases
        return "unreadable image", "expected NIfTI or a DICOM series"
    return None


def convert_dicom_series(folder: str, out_path: str) -> str:
    """Read a DICOM series folder with MONAI ``LoadImage`` (ITK or pydicom) and save it as NIfTI (RAS affine)."""
    from monai.transforms import LoadImage

    reader = "ITKReader" if importlib.util.find_spec("itk") is not None else "PydicomReader"
    try:
        image = LoadImage(reader=reader, image_only=True)(folder)
    except Exception as err:  # the readers raise many types for broken series; one line says which folder
        raise DataError(f"{folder}: expected a readable DICOM series, found {type(err).__name__}: {err}") from None
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(image), np.asarray(image.affine, dtype=np.float64)), out_path)
    return out_path


def probe_volume(path: str) -> dict:
    """Load and check a NIfTI; returns ``{"shape", "spacing", "content_sha1"}``.

    ``content_sha1`` hashes the voxel array and shape (not the file bytes), so a study copied under another session
    is recognised even when re-compressed. Raises :class:`DataError` for unreadable volumes.
    """
    array, affine = load_nifti_checked(path, min_voxels=1)  # curation's own rule excludes thin stacks with its reason
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    digest = hashlib.sha1(str(array.shape).encode() + str(array.dtype).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return {
        "shape": [int(s) for s in array.shape],
        "spacing": [round(float(s), 4) for s in spacing],
        "content_sha1": digest.hexdigest(),
    }


def choose_study_volume(candidates: list[tuple[Series, dict]]) -> int:
    """Index of the study's volume: most slices, then thinnest slices, then file name (documented policy)."""
    return min(
        range(len(candidates)),
        key=lambda i: (-candidates[i][1]["shape"][2], candidates[i][1]["spacing"][2], candidates[i][0].rel_path),
    )
