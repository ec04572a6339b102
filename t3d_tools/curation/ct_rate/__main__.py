"""Command line: ``python -m t3d_tools.curation.ct_rate {curate,miniature} --help``."""

from t3d_tools.curation.cli import run_commands
from t3d_tools.curation.ct_rate.curate import curate
from t3d_tools.curation.ct_rate.miniature import make_miniature

if __name__ == "__main__":
    run_commands({"curate": curate, "miniature": make_miniature})
