"""Lay out a MONAI Label app folder with packed bundles: ``python -m t3d_tools.serving.prepare --app_dir APPS/t3d
--bundle dist/t3d_btcv_seg_v0.2.0.zip [--bundle ...] [--stock APPS/monaibundle]``.

Without ``--stock`` it copies this repository's app (``t3d_tools/serving/monailabel_app``) to ``--app_dir``; with it,
``--app_dir`` is an app MONAI Label already wrote (``monailabel apps --download --name monaibundle --output APPS``).
Each zip is unpacked into ``<app_dir>/model/<name>`` by :func:`t3d_tools.packaging.archive.unpack_bundle_archive`: every
zip is validated completely before anything is written (relative member paths only, no ``..``, no links, one plainly
named top folder), then extracted into a temporary folder and renamed into place. An existing non-empty
``<app_dir>/model/<name>`` is refused before anything is written unless ``--overwrite``, which moves it to
``<app_dir>/model/.previous/<name>-<UTC time>`` (printed) instead of deleting it; a refused zip is a one-line error
and leaves the app folder as it was. Prints the ``--conf models`` value to start the server with.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from t3d_tools.packaging.archive import ArchiveError, check_target_free, unpack_bundle_archive, validate_bundle_archive
from t3d_tools.packaging.errors import one_line_os_error

APP_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "monailabel_app")


def prepare_app(
    app_dir: str, bundles: list[str], stock: bool = False, overwrite: bool = False, moved: list | None = None
) -> list[str]:
    """Copy the app (unless ``stock``) and unpack ``bundles`` (zip paths) into its model folder; returns names.

    All zips are validated, and every target folder checked (a non-empty ``model/<name>`` is refused unless
    ``overwrite``), before anything is written (:class:`ArchiveError` names the zip and the offending member, or the
    folder). ``moved`` (a list) receives ``(folder, where it was moved)`` for each earlier bundle folder moved aside.
    """
    zip_of: dict[str, str] = {}
    for zip_path in bundles:
        name = validate_bundle_archive(zip_path)
        if name in zip_of:
            raise ArchiveError(
                f"{zip_path}: expected one zip per bundle, found bundle folder {name!r} also in {zip_of[name]}"
            )
        zip_of[name] = zip_path
    model_dir = os.path.join(app_dir, "model")
    for name, zip_path in zip_of.items():
        check_target_free(os.path.join(model_dir, name), zip_path, overwrite)
    if not stock:
        os.makedirs(app_dir, exist_ok=True)
        shutil.copyfile(os.path.join(APP_SOURCE, "main.py"), os.path.join(app_dir, "main.py"))
    elif not os.path.isfile(os.path.join(app_dir, "main.py")):
        raise ValueError(f"{app_dir}: no MONAI Label app there (run `monailabel apps --download --name monaibundle`)")
    os.makedirs(model_dir, exist_ok=True)
    for name, zip_path in zip_of.items():
        target, aside = unpack_bundle_archive(zip_path, model_dir, expected_name=name, overwrite=overwrite)
        if aside is not None and moved is not None:
            moved.append((target, aside))
    return list(zip_of)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m t3d_tools.serving.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--app_dir", required=True)
    parser.add_argument("--bundle", action="append", default=[], required=True, help="packed bundle zip; repeatable")
    parser.add_argument("--stock", action="store_true", help="app_dir is MONAI Label's own monaibundle app")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace non-empty model/<name> folders, moving them to model/.previous/ (never deleted)",
    )
    args = parser.parse_args(argv)
    moved: list = []
    try:
        names = prepare_app(args.app_dir, args.bundle, args.stock, args.overwrite, moved)
    except (ValueError, OSError) as err:  # ArchiveError is a ValueError
        print(f"error: {one_line_os_error(err)}", file=sys.stderr)
        return 2
    for target, aside in moved:
        print(f"moved the earlier {target} to {aside}")
    print(f"--conf models {','.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
