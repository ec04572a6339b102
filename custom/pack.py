"""``python -m custom.pack <bundle>``: build ``dist/<name>_v<version>.zip`` (see ``custom.packaging.pack``)."""

import sys

from custom.packaging.pack import main

if __name__ == "__main__":
    sys.exit(main())
