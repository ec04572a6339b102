"""Download a packed bundle by name, validating the zip before anything is unpacked:

    python -m t3d_tools.packaging.download --name t3d_btcv_seg --url file:///abs/dist/t3d_btcv_seg_v0.2.0.zip \
        --bundle_dir bundles
    python -m t3d_tools.packaging.download --name t3d_btcv_seg --repo <owner>/<repo>/hosting_storage_v1 \
        [--version 0.2.0] --bundle_dir bundles

The same sources as ``python -m monai.bundle download --url`` / ``--source github`` (MONAI's ``download_url`` fetches
the zip; without ``--version`` MONAI's GitHub release lookup picks the latest), but the zip goes to a temporary folder
inside ``--bundle_dir``, is checked completely by :func:`t3d_tools.packaging.archive.validate_bundle_archive` (the check
``t3d_tools.serving.prepare`` uses: relative paths, no ``..``, no links, one top folder that must be ``--name``) and is
then unpacked into a temporary folder and renamed to ``<bundle_dir>/<name>``. An existing non-empty
``<bundle_dir>/<name>`` (an earlier copy, perhaps with the user's own files in it) is refused before the download
unless ``--overwrite``, which moves it to ``<bundle_dir>/.previous/<name>-<UTC time>`` (printed) rather than deleting
it. A refused or failed download leaves nothing in ``--bundle_dir`` and exits 2 with one line; running it again
downloads again.
(``monai.bundle download`` refuses unsafe members only while extracting: the partial folder it leaves makes a re-run
print "Non-empty folder exists ..., skipped extracting" and exit 0.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from t3d_tools.packaging.archive import ArchiveError, check_target_free, unpack_bundle_archive
from t3d_tools.packaging.errors import one_line_os_error

__all__ = ["bundle_url", "download_bundle", "main"]


def bundle_url(name: str, repo: str, version: str | None = None) -> str:
    """The GitHub release-asset URL of ``<name>_v<version>.zip`` in ``repo`` (``owner/name/tag``), as MONAI builds
    it."""
    parts = repo.split("/")
    if len(parts) != 3 or not all(parts):
        raise ArchiveError(f"--repo {repo!r}: expected owner/repository/release_tag")
    if version is None:
        from monai.bundle.scripts import _get_latest_bundle_version  # network: GitHub's release API

        version = _get_latest_bundle_version(source="github", name=name, repo=repo)
        if not version:
            raise ArchiveError(f"{repo}: expected a release asset {name}_v<version>.zip, found none")
    return f"https://github.com/{parts[0]}/{parts[1]}/releases/download/{parts[2]}/{name}_v{version}.zip"


def download_bundle(
    name: str,
    bundle_dir: str,
    url: str | None = None,
    repo: str | None = None,
    version: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[str, str | None]:
    """Fetch the bundle zip (``url``, or the GitHub release of ``repo``), validate it, unpack it to
    ``<bundle_dir>/<name>``; returns ``(that folder, where an earlier copy was moved or None)``. Raises
    :class:`ArchiveError` (nothing left behind) on refusal, also for a non-empty ``<bundle_dir>/<name>`` without
    ``overwrite`` (checked before downloading)."""
    from monai.apps.utils import download_url

    if url is None:
        if repo is None:
            raise ArchiveError(f"{name}: expected --url or --repo owner/repository/release_tag, found neither")
        url = bundle_url(name, repo, version)
    check_target_free(os.path.join(bundle_dir, name), url, overwrite)
    os.makedirs(bundle_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{name}.download-", dir=bundle_dir)
    try:
        zip_path = os.path.join(scratch, f"{name}.zip")
        try:
            download_url(url=url, filepath=zip_path, hash_val=None, progress=progress)
        except (OSError, RuntimeError) as err:  # URLError / HTTPError are OSErrors; MONAI raises RuntimeError
            reason = one_line_os_error(err) or type(err).__name__
            if isinstance(err, OSError) and err.strerror and not err.filename:  # disk full, ``ulimit -f``
                reason += f" (writing {zip_path})"
            raise ArchiveError(f"{url}: expected a downloadable bundle zip, found {reason}") from None
        return unpack_bundle_archive(zip_path, bundle_dir, source=url, expected_name=name, overwrite=overwrite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m t3d_tools.packaging.download", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--name", required=True, help="bundle name: the zip's top folder must be exactly this")
    parser.add_argument("--bundle_dir", required=True, help="the bundle is unpacked to <bundle_dir>/<name>")
    parser.add_argument("--url", help="the zip's URL (file:///abs/path.zip for a local file)")
    parser.add_argument("--repo", help="owner/repository/release_tag of a GitHub release holding <name>_v<version>.zip")
    parser.add_argument("--version", help="with --repo: the version (default: the latest release asset)")
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty <bundle_dir>/<name>, moving it to <bundle_dir>/.previous/ (never deleted)",
    )
    args = parser.parse_args(argv)
    try:
        path, aside = download_bundle(
            args.name, args.bundle_dir, args.url, args.repo, args.version, not args.no_progress, args.overwrite
        )
    except (ValueError, OSError) as err:  # ArchiveError is a ValueError; OSError: URLError, disk
        print(f"error: {one_line_os_error(err)}", file=sys.stderr)
        return 2
    if aside:
        print(f"moved the earlier {path} to {aside}")
    print(f"downloaded {args.name} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
