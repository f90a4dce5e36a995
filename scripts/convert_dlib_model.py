#!/usr/bin/env python3
"""Rebuild kerascnn's default face model from dlib's own file (NumPy reader, no dlib needed).

A thin script over :func:`kerascnn.face.model.convert_dlib_model` (also ``kerascnn convert-dlib``):
reads ``dlib_face_recognition_resnet_model_v1.dat`` (public domain; inside the PyPI package
``face_recognition_models``, or any copy given with ``--dat``) into the registry model
``dlib_resnet29`` + ``UnitNormalization``, checks it (plausible weights, the known descriptor of a
synthetic test chip), writes ``<out>.keras`` and the shipped model's card as ``<out>.json``, then,
when dlib is installed, compares the raw descriptors with dlib's own ``compute_face_descriptor`` on
LFW chips.

Usage:
    pip install face_recognition_models            # the file (22 MB); dlib-bin for the check
    python scripts/convert_dlib_model.py           # writes kerascnn/assets/dlib_resnet29.keras
    python scripts/convert_dlib_model.py --dat my/dlib_face_recognition_resnet_model_v1.dat --out /tmp/dlib.keras
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout

ROOT = Path(__file__).resolve().parents[1]


def check_against_dlib(out: Path, chips: int) -> float | None:
    """Max |kerascnn - dlib| of the raw descriptors of ``chips`` LFW chips (None without dlib or data)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return None
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from _dlib_reference import dlib_chips, dlib_descriptors, raw_descriptors

    images = ROOT.parent / "shared" / "data" / "lfw" / "images"
    if not images.is_dir():
        return None
    faces = dlib_chips(images, chips)
    return float(np.abs(raw_descriptors(out, faces) - dlib_descriptors(faces)).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dat", default=None, help="dlib's .dat file (default: face_recognition_models')")
    parser.add_argument("--out", type=Path, default=ROOT / "kerascnn" / "assets" / "dlib_resnet29.keras")
    parser.add_argument("--check-chips", type=int, default=20, help="LFW chips to compare with dlib (0: skip)")
    args = parser.parse_args(argv)
    from kerascnn.face.model import convert_dlib_model

    out = convert_dlib_model(args.out, args.dat)
    print(f"wrote {out} ({out.stat().st_size:,} bytes) and its card {out.with_suffix('.json')}")
    if args.check_chips:
        diff = check_against_dlib(out, args.check_chips)
        print("no check (dlib or the LFW images missing)" if diff is None
              else f"max |kerascnn - dlib| over {args.check_chips} chips: {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
