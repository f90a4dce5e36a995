#!/usr/bin/env python3
"""Measure face detection on a folder of face images (by default the LFW images).

Prints, for the Haar cascades and (given its model file) YuNet: the failure-to-detect rate
(images where no face is found), the share of images with several faces, the alignment kinds
the Haar detector gives ("eyes" or "box"), and the time per image. With ``--box-means`` it also
measures the mean positions of YuNet's 5 landmarks relative to the Haar box of the central face,
the numbers behind ``kerascnn.face.detect.BOX_LANDMARKS``.

Usage:
    python3 scripts/measure_detection.py --images ../shared/data/lfw/images \\
        --detector-model ../shared/models/face_detection_yunet_2026may.onnx [--step 1] [--box-means]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kerascnn.data.folders import read_image, scan_folder  # noqa: E402
from kerascnn.face.detect import HaarDetector, YuNetDetector, select_faces  # noqa: E402
from kerascnn.errors import NoFaceError  # noqa: E402


def measure(detector, images: list[np.ndarray]) -> tuple[dict, list]:
    """Failure-to-detect rate, several-faces rate, alignment kinds and ms/image of one detector."""
    found, start = [], time.perf_counter()
    for image in images:
        found.append(detector(image))
    seconds = time.perf_counter() - start
    n = len(images)
    stats = {
        "images": n,
        "no_face": sum(not f for f in found),
        "failure_to_detect_rate": sum(not f for f in found) / n,
        "several_faces_rate": sum(len(f) > 1 for f in found) / n,
        "ms_per_image": 1000 * seconds / n,
    }
    central = []
    for image, faces in zip(images, found):
        try:
            central.append(select_faces(faces, image.shape, "central")[0])
        except NoFaceError:
            central.append(None)
    kinds = ["landmarks" if d.landmarks is not None else "eyes" if d.eyes is not None else "box"
             for d in central if d is not None]
    stats["alignment"] = {k: kinds.count(k) for k in sorted(set(kinds))}
    return stats, central


def box_means(haar_faces: list, yunet_faces: list) -> np.ndarray:
    """Mean YuNet landmarks relative to the Haar box, where both boxes overlap (same face)."""
    rel = []
    for h, y in zip(haar_faces, yunet_faces):
        if h is None or y is None:
            continue
        x0, y0, w, hh = h.box
        if abs(h.center[0] - y.center[0]) > 0.25 * w or abs(h.center[1] - y.center[1]) > 0.25 * hh:
            continue  # not the same face
        rel.append((y.landmarks - np.array([x0, y0])) / np.array([w, hh]))
    print(f"box means from {len(rel)} images where both detectors found the central face", file=sys.stderr)
    return np.mean(rel, axis=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="../shared/data/lfw/images", help="identity/image folder")
    parser.add_argument("--detector-model", default=os.environ.get("KERASCNN_DETECTOR_MODEL"),
                        help="YuNet .onnx file (also $KERASCNN_DETECTOR_MODEL)")
    parser.add_argument("--step", type=int, default=1, help="use every STEP-th image (1: all)")
    parser.add_argument("--box-means", action="store_true", help="print the Haar-box landmark means")
    args = parser.parse_args(argv)

    paths = scan_folder(args.images).paths[::args.step]
    print(f"reading {len(paths)} images from {args.images}", file=sys.stderr)
    images = [read_image(p) for p in paths]
    report = {}
    report["haar"], haar_faces = measure(HaarDetector(), images)
    if args.detector_model:
        report["yunet"], yunet_faces = measure(YuNetDetector(args.detector_model), images)
        if args.box_means:
            means = box_means(haar_faces, yunet_faces)
            report["box_landmarks"] = np.round(means, 4).tolist()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
