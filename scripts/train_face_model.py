#!/usr/bin/env python3
"""Train kerascnn's default face embedder (the same run as ``kerascnn train-face``).

Steps: align every face of the training folders (YuNet + the 5-point template, cached under
``~/.cache/kerascnn``, resumable), describe them with the dlib teacher (optional extra, cached,
resumable), hold out the people of one LFW fold, train a small ResNet by distillation
(or by semi-hard triplets with ``--no-teacher``), score the held-out fold's pairs, calibrate
the thresholds on the held-out people, and write ``face_model.keras`` + ``face_model.json``
(the card) into ``--out``. Interrupted runs resume (crops, teacher and training checkpoints).

Example (the shipped model)::

    python scripts/train_face_model.py --data ../shared/data/lfw/images --data ../shared/data/orl \\
        --pairs ../shared/data/lfw/pairs.txt --holdout-fold 7 --input-size 64 --canvas 80 \\
        --epochs 14 --batch-size 64 --lr 2e-3 --out runs/face_model
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerascnn.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train-face", *sys.argv[1:]]))
