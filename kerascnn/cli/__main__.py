"""``python -m kerascnn.cli`` runs the command line (as ``python -m kerascnn`` does)."""

import sys

from kerascnn.cli.app import main

sys.exit(main())
