"""Command line: ``python -m t3d_tools.curation.bimcv {curate,curate_csv,miniature} --help``."""

import sys

import fire

from custom.data.checks import DataError
from t3d_tools.curation.bimcv.curate import curate, curate_csv
from t3d_tools.curation.bimcv.miniature import make_miniature

if __name__ == "__main__":
    try:
        fire.Fire({"curate": curate, "curate_csv": curate_csv, "miniature": make_miniature})
    except DataError as err:  # input problems are one line for the user, not a traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
