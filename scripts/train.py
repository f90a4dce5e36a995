#!/usr/bin/env python3
"""Train a registry model on a folder of images: the ``kerascnn train`` command as a script.

Example (a quick CPU run on the ORL faces)::

    python scripts/train.py --model resnet18 --data ../shared/data/orl --augment face \\
        --epochs 5 --image-size 64 --batch-size 32 --out runs/orl_resnet18

Writes RUN_DIR/model.keras, best.keras, history.csv, history.png and class_names.json; run it
again with the same --out to resume an interrupted run. See ``--help`` for every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerascnn.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
