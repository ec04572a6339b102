"""Repository tooling beside the bundles' runtime code: BIMCV curation, the paper-table experiments, packing and
download, and the MONAI Label serving set-up.

``custom/`` is what the bundles run at train and inference time and what every packed zip ships whole; nothing in
``custom/`` imports ``t3d_tools`` (``tests/test_layout.py`` checks), so a downloaded bundle never needs this package.
"""

import os

#: the repository checkout the tools work on (bundles/, custom/ beside this package)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
