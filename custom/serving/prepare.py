"""Lay out a MONAI Label app folder with packed bundles: ``python -m custom.serving.prepare --app_dir APPS/t3d
--bundle dist/t3d_btcv_seg_v0.2.0.zip [--bundle ...] [--stock APPS/monaibundle]``.

Without ``--stock`` it copies this repository's app (``custom/serving/monailabel_app``) to ``--app_dir``; with it,
``--app_dir`` is an app MONAI Label already wrote (``monailabel apps --download --name monaibundle --output APPS``).
Each zip is unpacked into ``<app_dir>/model/<name>`` with MONAI's own extraction, which refuses entries that would
land outside that folder. Prints the ``--conf models`` value to start the server with.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile

APP_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "monailabel_app")


def prepare_app(app_dir: str, bundles: list[str], stock: bool = False) -> list[str]:
    """Copy the app (unless ``stock``) and unpack ``bundles`` (zip paths) into its model folder; returns names."""
    from monai.apps.utils import extractall

    if not stock:
        os.makedirs(app_dir, exist_ok=True)
        shutil.copyfile(os.path.join(APP_SOURCE, "main.py"), os.path.join(app_dir, "main.py"))
    elif not os.path.isfile(os.path.join(app_dir, "main.py")):
        raise ValueError(f"{app_dir}: no MONAI Label app there (run `monailabel apps --download --name monaibundle`)")
    model_dir = os.path.join(app_dir, "model")
    os.makedirs(model_dir, exist_ok=True)
    names = []
    for zip_path in bundles:
        with zipfile.ZipFile(zip_path) as archive:
            tops = {name.split("/")[0] for name in archive.namelist()}
        if len(tops) != 1:
            raise ValueError(f"{zip_path}: a bundle zip holds one top folder, found {sorted(tops)}")
        name = tops.pop()
        shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
        extractall(zip_path, model_dir, has_base=True)  # (its "already extracted" check looks for <zip stem>/)
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom.serving.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--app_dir", required=True)
    parser.add_argument("--bundle", action="append", default=[], required=True, help="packed bundle zip; repeatable")
    parser.add_argument("--stock", action="store_true", help="app_dir is MONAI Label's own monaibundle app")
    args = parser.parse_args(argv)
    try:
        names = prepare_app(args.app_dir, args.bundle, args.stock)
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"--conf models {','.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
