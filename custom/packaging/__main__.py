"""``python -m custom.packaging <bundle>``: see ``custom.packaging.pack``."""

import sys

from custom.packaging.pack import main

sys.exit(main())
