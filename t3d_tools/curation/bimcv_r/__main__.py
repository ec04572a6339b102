"""Command line: ``python -m t3d_tools.curation.bimcv_r {curate,miniature} --help``."""

from t3d_tools.curation.bimcv_r.curate import curate
from t3d_tools.curation.bimcv_r.miniature import make_miniature
from t3d_tools.curation.cli import run_commands

if __name__ == "__main__":
    run_commands({"curate": curate, "miniature": make_miniature})
