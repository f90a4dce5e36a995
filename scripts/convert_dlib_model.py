#!/usr/bin/env python3
"""Rebuild kerascnn's default face model from dlib's own file (NumPy reader, no dlib needed).

Reads ``dlib_face_recognition_resnet_model_v1.dat`` (public domain, shipped inside the PyPI
package ``face_recognition_models``, or any copy given with ``--dat``) into the registry model
``dlib_resnet29``, appends ``UnitNormalization`` (kerascnn's face models output unit vectors;
dlib's raw descriptor stays available as the layer ``descriptor``), checks the result against
dlib's own ``compute_face_descriptor`` when dlib is installed, and writes ``<out>.keras`` plus
the architecture part of its card ``<out>.json`` (an existing card's calibration, alignment and
figures are kept).

Usage:
    pip install face_recognition_models            # the file (22 MB); dlib-bin for the check
    python scripts/convert_dlib_model.py           # writes kerascnn/assets/dlib_resnet29.keras
    python scripts/convert_dlib_model.py --dat my/dlib_face_recognition_resnet_model_v1.dat --out /tmp/dlib.keras
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout

ROOT = Path(__file__).resolve().parents[1]

CARD = {
    "source": "dlib_face_recognition_resnet_model_v1.dat (Davis King, dlib-models; shipped in the PyPI package "
              "face_recognition_models), read with kerascnn.models.dlib_format",
    "licence": "public domain (dlib-models README: 'anyone can do whatever they want with these model files')",
    "architecture": "dlib_resnet29 (kerascnn registry): 7x7/2 conv 32 + affine + ReLU, 3x3/2 max pool, basic "
                    "residual stages of 32x3, 64x4, 128x3, 256x3, 256x1 blocks (avg-pool zero-padded shortcuts), "
                    "global average pool, Dense 128 without bias (dlib's descriptor), UnitNormalization",
    "input": {"size": [150, 150, 3], "dtype": "float32", "range": [0, 255], "color": "RGB",
              "normalization": "inside the model: (x - [122.782, 117.001, 104.298]) / 256",
              "alignment": "the card's 'alignment' template at size 150 (dlib's chips: 5-point template, padding 0.25)"},
    "output": {"embedding_dim": 128, "unit_norm": True, "metric": "cosine",
               "raw_descriptor_layer": "descriptor (dlib's descriptor, length about 1.3-1.5)"},
    "training": {"method": "trained by dlib's author on about 3 million faces (dlib's metric loss); not retrained here"},
}


def convert(dat: str | None, out: Path) -> dict:
    """Build the unit-vector face model from dlib's file and write it with its card."""
    import keras

    import kerascnn
    from kerascnn.models.dlib_resnet import dlib_file

    source = dlib_file(dat)
    base = kerascnn.create_model("dlib_resnet29", weights=str(source))
    unit = keras.layers.UnitNormalization(name="unit")(base.output)
    model = keras.Model(base.input, unit, name="dlib_resnet29_face")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    card_file = out.with_suffix(".json")
    card = json.loads(card_file.read_text()) if card_file.is_file() else {}
    card.update({"model": out.name, "parameters": int(model.count_params()), **CARD})
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    return {"model": str(out), "card": str(card_file), "parameters": model.count_params(),
            "bytes": out.stat().st_size}


def check_against_dlib(out: Path, chips: int) -> float | None:
    """Max |kerascnn - dlib| of the raw descriptors of ``chips`` LFW chips (None without dlib)."""
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
    report = convert(args.dat, args.out)
    print(json.dumps(report, indent=2))
    if args.check_chips:
        diff = check_against_dlib(args.out, args.check_chips)
        print("dlib not installed: no check" if diff is None else f"max |kerascnn - dlib| over {args.check_chips} chips: {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
