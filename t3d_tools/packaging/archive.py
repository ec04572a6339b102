"""The one place bundle zips are checked and unpacked, for ``t3d_tools.serving.prepare`` and
``t3d_tools.packaging.download``.

:func:`validate_bundle_archive` reads the whole archive before anything is written: every member must be a
relative path (no leading ``/``, no drive such as ``C:``, no backslash, no ``.`` / ``..`` / empty component), a
regular file or a folder (no symbolic links or other special entries), and all members must sit inside exactly one
top-level folder whose name is plain (letters, digits, ``_``, ``-``, ``.``; not ``.`` or ``..``); every member's
data must pass its CRC check. Before any member is decompressed, the archive's declared sizes are held to caps
(:data:`MAX_ENTRIES` members, :data:`MAX_TOTAL_BYTES` unpacked, :data:`MAX_RATIO` unpacked per packed byte for any
member above :data:`RATIO_FLOOR_BYTES`), so a small zip cannot fill the disk or take minutes (a zip bomb).
:func:`unpack_bundle_archive` then extracts into a fresh temporary folder next to the target and renames it into
place, so a refused or failed unpack leaves nothing behind. It never deletes what was there: a non-empty target
folder is refused unless ``overwrite``, and then moved aside to ``<parent>/.previous/<name>-<UTC time>`` (named in
the output) instead of being removed.

MONAI's own ``extractall`` checks member by member while extracting: a bad member half-way leaves a partial folder,
which a re-run of ``python -m monai.bundle download`` then takes for a finished one ("Non-empty folder exists ...,
skipped extracting").
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import zipfile

from custom.errors import DataError

__all__ = [
    "ArchiveError",
    "MAX_ENTRIES",
    "MAX_TOTAL_BYTES",
    "MAX_RATIO",
    "PREVIOUS_DIR",
    "check_target_free",
    "validate_bundle_archive",
    "unpack_bundle_archive",
]

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: caps checked from the zip's directory before any member is decompressed (a bundle holds tens of files and its
#: weights: a paper-size SwinUNETR is ~250 MB, a vendored ``custom/`` a few hundred files)
MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 16 * 2**30
MAX_RATIO = 200.0  # deflate reaches ~1000:1 only on degenerate data; configs and weights pack 1.1-10:1
RATIO_FLOOR_BYTES = 2**20  # small members (a config of spaces, an all-zero bias) may compress far better: not checked
#: where a replaced bundle folder is moved (hidden, so MONAI Label and ``monai.bundle`` never take it for a bundle)
PREVIOUS_DIR = ".previous"


class ArchiveError(DataError):
    """A bundle archive refused before (or instead of) unpacking; the message is one line naming the archive and
    the offending member, what was expected and what was found."""


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why one zip member is unsafe, or None."""
    name = info.filename
    if "\x00" in name:
        return "a NUL character in the name"
    if name.startswith("/"):
        return "an absolute path"
    if "\\" in name:
        return "a backslash (a Windows path)"
    if re.match(r"[A-Za-z]:", name):
        return "a drive letter"
    parts = name.split("/")
    if name.endswith("/"):
        parts = parts[:-1]
    if any(part == ".." for part in parts):
        return "a '..' component"
    if any(part == "." for part in parts):
        return "a '.' component"
    if any(part == "" for part in parts):
        return "an empty path component"
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode):  # Unix attributes: only regular files and folders
        if stat.S_ISLNK(mode):
            return "a symbolic link"
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return f"a special file (mode {oct(stat.S_IFMT(mode))})"
    return None


def _check_sizes(members: list[zipfile.ZipInfo], label: str, max_entries: int, max_total_bytes: int, max_ratio: float):
    """The size caps of the module docstring, from the zip's directory alone (nothing decompressed yet)."""
    if len(members) > max_entries:
        raise ArchiveError(f"{label}: expected at most {max_entries} members in a bundle zip, found {len(members)}")
    total = sum(info.file_size for info in members)
    if total > max_total_bytes:
        raise ArchiveError(
            f"{label}: expected at most {max_total_bytes / 2**30:.3g} GiB unpacked, found members declaring "
            f"{total / 2**30:.3g} GiB"
        )
    for info in members:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR_BYTES and ratio > max_ratio:
            raise ArchiveError(
                f"{label}: expected a compression ratio of at most {max_ratio:g}:1, found member "
                f"{info.filename!r} unpacking {info.compress_size} bytes to {info.file_size} ({ratio:.0f}:1)"
            )


def validate_bundle_archive(
    zip_path: str,
    source: str | None = None,
    expected_name: str | None = None,
    max_entries: int = MAX_ENTRIES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
) -> str:
    """Check every member of the bundle zip ``zip_path`` (see the module docstring); returns its top folder name.

    ``source`` is what messages call the archive (default ``zip_path``; the URL for a download); with
    ``expected_name`` the top folder must be exactly that; the caps bound the unpacked work. Raises
    :class:`ArchiveError`; writes nothing.
    """
    label = source or zip_path
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise ArchiveError(f"{label}: bundle archive not found") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise ArchiveError(f"{label}: expected a zip archive, found an unreadable file ({err})") from None
    with archive:
        members = archive.infolist()
        if not members:
            raise ArchiveError(f"{label}: expected a bundle folder inside the archive, found no members")
        _check_sizes(members, label, max_entries, max_total_bytes, max_ratio)
        tops, seen, folders = set(), set(), set()
        for info in members:
            problem = _member_problem(info)
            if problem:
                raise ArchiveError(
                    f"{label}: expected relative paths of plain files and folders inside one bundle "
                    f"folder, found member {info.filename!r} with {problem}"
                )
            path = info.filename.rstrip("/")
            if path in seen:
                raise ArchiveError(f"{label}: expected each path once, found member {info.filename!r} twice")
            seen.add(path)
            parts = path.split("/")
            folders.update("/".join(parts[:end]) for end in range(1, len(parts)))
            top, _, rest = info.filename.partition("/")
            if not rest and not info.filename.endswith("/"):
                raise ArchiveError(
                    f"{label}: expected every member inside the bundle folder, found member "
                    f"{info.filename!r} at the top level"
                )
            tops.add(top)
        files = seen - {info.filename.rstrip("/") for info in members if info.filename.endswith("/")}
        clash = sorted(files & folders)
        if clash:
            raise ArchiveError(
                f"{label}: expected files and folders with distinct paths, found member {clash[0]!r} "
                "both as a file and as a folder"
            )
        if len(tops) != 1:
            raise ArchiveError(f"{label}: expected one top-level bundle folder, found {len(tops)}: {sorted(tops)}")
        name = tops.pop()
        if not _PLAIN_NAME.fullmatch(name):
            raise ArchiveError(
                f"{label}: expected a plain top-level folder name (letters, digits, '_', '-', '.'), "
                f"found {name!r} (member {members[0].filename!r})"
            )
        if expected_name is not None and name != expected_name:
            raise ArchiveError(
                f"{label}: expected the bundle folder {expected_name!r}, found {name!r} "
                f"(member {members[0].filename!r})"
            )
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
            raise ArchiveError(f"{label}: expected readable member data, found a damaged archive ({err})") from None
        if bad is not None:
            raise ArchiveError(f"{label}: expected intact member data, found a CRC mismatch in member {bad!r}")
    return name


def _extract(zip_path: str, destination: str, label: str) -> None:
    """Extract the (validated) members under ``destination``; every path is re-checked to stay inside it."""
    root = os.path.realpath(destination)
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            target = os.path.realpath(os.path.join(root, *info.filename.rstrip("/").split("/")))
            if os.path.commonpath([root, target]) != root or target == root:
                raise ArchiveError(
                    f"{label}: expected members inside the bundle folder, found member "
                    f"{info.filename!r} landing outside {destination}"
                )
            if info.filename.endswith("/"):
                os.makedirs(target, exist_ok=True)
                continue
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with archive.open(info) as src, open(target, "xb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except OSError as err:  # disk full, ``ulimit -f``, a read-only folder: the file it happened on
                raise ArchiveError(
                    f"{target}: expected to write member {info.filename!r} of {label}, found "
                    f"{err.strerror or err} (nothing was unpacked)"
                ) from None


def _files_in(folder: str) -> list[str]:
    """Relative paths of the files (and links) under ``folder``, sorted."""
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, dirs, names in os.walk(folder)
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]
    )


def _aside_path(parent_dir: str, name: str) -> str:
    """A fresh ``<parent_dir>/.previous/<name>-<UTC time>[-<n>]`` (never an existing path)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = os.path.join(parent_dir, PREVIOUS_DIR)
    os.makedirs(folder, exist_ok=True)
    candidate, count = os.path.join(folder, f"{name}-{stamp}"), 1
    while os.path.lexists(candidate):
        count += 1
        candidate = os.path.join(folder, f"{name}-{stamp}-{count}")
    return candidate


def check_target_free(target: str, label: str, overwrite: bool) -> None:
    """Refuse (one line) a ``target`` that is a file, a link, or a non-empty folder without ``overwrite``."""
    if not os.path.lexists(target):
        return
    if os.path.islink(target) or not os.path.isdir(target):
        raise ArchiveError(
            f"{label}: expected {target} to be absent or a bundle folder, found "
            f"{'a symbolic link' if os.path.islink(target) else 'a file'}; not replaced"
        )
    held = _files_in(target)
    if held and not overwrite:
        shown = ", ".join(held[:2]) + (f" and {len(held) - 2} more" if len(held) > 2 else "")
        raise ArchiveError(
            f"{target}: expected an absent or empty folder to unpack {label} into, found {len(held)} file(s) "
            f"({shown}); pass --overwrite to move it aside to {os.path.join(os.path.dirname(target), PREVIOUS_DIR)}/"
        )


def unpack_bundle_archive(
    zip_path: str, parent_dir: str, source: str | None = None, expected_name: str | None = None, overwrite: bool = False
) -> tuple[str, str | None]:
    """Validate ``zip_path`` completely, then unpack its bundle folder to ``<parent_dir>/<name>``; returns
    ``(unpacked folder, where an earlier folder was moved or None)``.

    A non-empty ``<parent_dir>/<name>`` is refused (:class:`ArchiveError`, nothing written) unless ``overwrite``;
    then it is moved to ``<parent_dir>/.previous/<name>-<UTC time>``, never deleted. Extraction goes to a fresh
    temporary folder inside ``parent_dir`` that is renamed into place, so on any error nothing partial is left.
    """
    label = source or zip_path
    name = validate_bundle_archive(zip_path, source, expected_name)
    target = os.path.join(parent_dir, name)
    check_target_free(target, label, overwrite)
    os.makedirs(parent_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=parent_dir)
    aside = None
    try:
        try:
            _extract(zip_path, staging, label)
        except (zipfile.BadZipFile, EOFError, RuntimeError) as err:
            raise ArchiveError(f"{label}: expected readable member data, found a damaged archive ({err})") from None
        unpacked = os.path.join(staging, name)
        if os.path.isdir(target) and not os.path.islink(target):
            if _files_in(target):  # overwrite (checked above): kept, moved aside
                aside = _aside_path(parent_dir, name)
                os.rename(target, aside)  # same file system: both renames are atomic
            else:  # no file inside: only (nested) empty folders, nothing of the user's to keep
                for root, _, _ in sorted(os.walk(target), key=lambda walked: -len(walked[0])):
                    os.rmdir(root)
            try:
                os.rename(unpacked, target)
            except OSError:
                if aside is not None:
                    os.rename(aside, target)
                raise
        else:
            os.rename(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own temporary folder only
    return target, aside
