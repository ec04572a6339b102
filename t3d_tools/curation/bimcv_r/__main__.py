"""Command line: ``python -m t3d_tools.curation.bimcv_r {curate,miniature} --help``."""

import sys

import fire

from custom.data.checks import DataError
from t3d_tools.curation.bimcv_r.curate import curate
from t3d_tools.curation.bimcv_r.miniature import make_miniature


def main() -> None:
    try:
        fire.Fire({"curate": curate, "miniature": make_miniature})
    except DataError as err:  # input problems are one line for the user, not a traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
