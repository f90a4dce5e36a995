#!/usr/bin/env python3
"""Print the people of some LFW folds (1-based), space-separated, for ``--people`` options.

Example (fine-tune on folds 1-6, score every pair of fold 7's images)::

    kerascnn finetune-face --data ../shared/data/lfw/images \\
        --people $(python scripts/lfw_fold_people.py --folds 1 2 3 4 5 6 --min-images 2) \\
        --eval-data ../shared/data/lfw/images --eval-people $(python scripts/lfw_fold_people.py --folds 7) \\
        --detector ../shared/models/face_detection_yunet_2026may.onnx --out runs/ft_lfw
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=str(SHARED / "pairs.txt"), help="LFW pairs.txt")
    parser.add_argument("--images", default=str(SHARED / "images"), help="LFW images/<person>/ folder")
    parser.add_argument("--folds", nargs="+", type=int, required=True, help="folds, 1-based")
    parser.add_argument("--min-images", type=int, default=1, help="only people with this many images")
    args = parser.parse_args(argv)
    from kerascnn.data.lfw import read_pairs

    pairs = read_pairs(args.pairs, args.images)
    people = set().union(*(pairs.people_of_fold(f - 1) for f in args.folds))
    images = Path(args.images)
    print(" ".join(sorted(p for p in people if sum(1 for _ in (images / p).iterdir()) >= args.min_images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
