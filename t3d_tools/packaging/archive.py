"""The one place bundle zips are checked and unpacked, for ``t3d_tools.serving.prepare`` and
``t3d_tools.packaging.download``.

:func:`validate_bundle_archive` reads the whole archive before anything is written: every member must be a
relative path (no leading ``/``, no drive such as ``C:``, no backslash, no ``.`` / ``..`` / empty component), a
regular file or a folder (no symbolic links or other special entries), and all members must sit inside exactly one
top-level folder whose name is plain (letters, digits, ``_``, ``-``, ``.``; not ``.`` or ``..``); every member's
data must pass its CRC check. :func:`unpack_bundle_archive` then extracts into a fresh temporary folder next to the
target and renames it into place, so a refused or failed unpack leaves nothing behind and never removes anything but
the target folder it replaces (``<parent>/<top folder>``).

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
import zipfile

from custom.data.checks import DataError

__all__ = ["ArchiveError", "validate_bundle_archive", "unpack_bundle_archive"]

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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


def validate_bundle_archive(zip_path: str, source: str | None = None, expected_name: str | None = None) -> str:
    """Check every member of the bundle zip ``zip_path`` (see the module docstring); returns its top folder name.

    ``source`` is what messages call the archive (default ``zip_path``; the URL for a download); with
    ``expected_name`` the top folder must be exactly that. Raises :class:`ArchiveError`; writes nothing.
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
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(info) as src, open(target, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def unpack_bundle_archive(
    zip_path: str, parent_dir: str, source: str | None = None, expected_name: str | None = None
) -> str:
    """Validate ``zip_path`` completely, then unpack its bundle folder to ``<parent_dir>/<name>``, replacing a folder
    of that name; returns the unpacked folder's path.

    Extraction goes to a fresh temporary folder inside ``parent_dir`` that is renamed into place, so on any error
    nothing partial is left and nothing but ``<parent_dir>/<name>`` (a folder being replaced) is ever removed.
    """
    label = source or zip_path
    name = validate_bundle_archive(zip_path, source, expected_name)
    os.makedirs(parent_dir, exist_ok=True)
    target = os.path.join(parent_dir, name)
    staging = tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=parent_dir)
    try:
        try:
            _extract(zip_path, staging, label)
        except (zipfile.BadZipFile, EOFError, RuntimeError) as err:
            raise ArchiveError(f"{label}: expected readable member data, found a damaged archive ({err})") from None
        unpacked = os.path.join(staging, name)
        if os.path.lexists(target):
            if os.path.islink(target) or not os.path.isdir(target):
                raise ArchiveError(
                    f"{label}: expected {target} to be absent or a bundle folder, found "
                    f"{'a symbolic link' if os.path.islink(target) else 'a file'}; not replaced"
                )
            previous = os.path.join(staging, ".previous")
            os.rename(target, previous)  # same file system: both renames are atomic
            try:
                os.rename(unpacked, target)
            except OSError:
                os.rename(previous, target)
                raise
        else:
            os.rename(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own temporary folder (and a replaced bundle folder)
    return target
