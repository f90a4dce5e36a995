#!/usr/bin/env python3
"""Verify or identify a face against an enrollment gallery (a thin script over kerascnn.face).

The probe photo goes through the same face pipeline as enrollment (detect, keep the largest face,
align, embed with the face model); its embedding is compared with the gallery's templates using
the threshold calibrated for the model (``kerascnn calibrate``), or ``--threshold``.

Usage:
    # 1:1: is the face in probe.jpg alice? (exit 0: match, 1: no match, 2: error)
    python scripts/verify_face.py --gallery faces.db alice probe.jpg

    # 1:N: who is it, among the enrolled? (exit 0: recognized, 1: not recognized, 2: error)
    python scripts/verify_face.py --gallery faces.db probe.jpg --top-k 3

    # another embedding model, the YuNet detector, an explicit threshold, JSON for programs
    python scripts/verify_face.py --gallery faces.db alice probe.jpg --model my_embedder.keras \\
        --detector-model ../shared/models/face_detection_yunet_2026may.onnx --threshold 0.45 --json

Enroll first with ``scripts/enroll_faces.py`` or ``kerascnn enroll``. Every option of
``kerascnn verify`` / ``kerascnn identify`` is accepted (``--help`` lists them).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout

from kerascnn.cli import main as kerascnn_main  # noqa: E402

_VALUE_OPTIONS = {"--gallery", "--model", "--detector", "--detector-model", "--threshold", "--metric",
                  "--timeout", "--top-k", "--reduce", "--calibration"}


def main(argv: list[str] | None = None) -> int:
    """``verify`` with NAME IMG, ``identify`` with IMG alone; returns the command's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    positional, i = [], 0
    while i < len(argv):
        if argv[i] in _VALUE_OPTIONS:
            i += 2
            continue
        if not argv[i].startswith("--"):
            positional.append(argv[i])
        i += 1
    command = "verify" if len(positional) >= 2 else "identify"
    return kerascnn_main([command, *argv])


if __name__ == "__main__":
    sys.exit(main())
