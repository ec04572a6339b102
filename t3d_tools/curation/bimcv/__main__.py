"""Command line: ``python -m t3d_tools.curation.bimcv {curate,curate_csv,miniature} --help``."""

from t3d_tools.curation.bimcv.curate import curate, curate_csv
from t3d_tools.curation.bimcv.miniature import make_miniature
from t3d_tools.curation.cli import run_commands

if __name__ == "__main__":
    run_commands({"curate": curate, "curate_csv": curate_csv, "miniature": make_miniature})
