"""``python -m kerascnn`` runs the command line."""

import sys

from kerascnn.cli import main

sys.exit(main())
