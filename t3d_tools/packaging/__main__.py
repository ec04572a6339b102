"""``python -m t3d_tools.packaging <bundle>``: see ``t3d_tools.packaging.pack``."""

import sys

from t3d_tools.packaging.pack import main

sys.exit(main())
