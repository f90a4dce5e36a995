#!/usr/bin/env python3
"""Score face models on every pair of images of the people of some LFW folds.

The 600 pairs of one LFW fold measure accuracy coarsely (one pair is 0.17%) and cannot reach a
false-accept rate of 1e-3 (300 impostor pairs). Every pair of the images of that fold's people
gives tens of thousands of genuine and about a million impostor pairs. For each ``--model``
(default: the shipped one) this runs the whole pipeline (detect, align, embed) once per image
and prints, over all pairs: AUC, EER, TAR at FAR 1e-2 and 1e-3, and at the model's calibrated
threshold the TAR, the FAR and the balanced accuracy (mean of TAR and 1 - FAR).

Only folds whose people the model never saw in training measure generalisation: the shipped
model held out fold 7.

Usage:
    python3 scripts/evaluate_all_pairs.py --pairs ../shared/data/lfw/pairs.txt \\
        --images ../shared/data/lfw/images --folds 7 \\
        --detector-model ../shared/models/face_detection_yunet_2026may.onnx \\
        [--model A.keras --model B.keras] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def fold_images(pairs_file, images_dir, folds: list[int], max_people: int | None = None) -> tuple[list[str], np.ndarray]:
    """Paths of every image of the people named in ``folds`` (1-based), and their person index."""
    from kerascnn.data.folders import IMAGE_EXTENSIONS
    from kerascnn.data.lfw import read_pairs

    pairs = read_pairs(pairs_file, images_dir)
    people = sorted(set().union(*(pairs.people_of_fold(f - 1) for f in folds)))[:max_people]
    paths, labels = [], []
    for i, person in enumerate(people):
        for f in sorted((Path(images_dir) / person).iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(f))
                labels.append(i)
    return paths, np.asarray(labels)


def all_pairs_report(embeddings: np.ndarray, labels: np.ndarray, threshold: float | None) -> dict:
    """Verification figures of every pair of unit ``embeddings`` (rows without a face: NaN)."""
    from kerascnn.evaluation import eer, roc_auc, tar_at_far
    from kerascnn.evaluation import impostor_genuine_scores

    ok = np.isfinite(embeddings).all(axis=1)
    scores, same = impostor_genuine_scores(embeddings[ok], labels[ok])
    report = {
        "images": int(len(labels)),
        "no_face": int((~ok).sum()),
        "genuine_pairs": int(same.sum()),
        "impostor_pairs": int((~same).sum()),
        "auc": roc_auc(scores, same, similarity=True),
        "eer": eer(scores, same, similarity=True),
        "tar_at_far": {str(k): v for k, v in tar_at_far(scores, same, (1e-2, 1e-3), similarity=True).items()},
    }
    if threshold is not None:
        tar = float(np.mean(scores[same] >= threshold))
        far = float(np.mean(scores[~same] >= threshold))
        report.update(threshold=threshold, tar_at_threshold=tar, far_at_threshold=far,
                      balanced_accuracy_at_threshold=0.5 * (tar + 1.0 - far))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", required=True, help="LFW pairs.txt")
    parser.add_argument("--images", required=True, help="the LFW images folder the pairs refer to")
    parser.add_argument("--folds", type=int, nargs="+", default=[7], help="1-based folds whose people to use")
    parser.add_argument("--model", action="append", help="a .keras embedder (repeat; default: the shipped model)")
    parser.add_argument("--detector-model", help="YuNet .onnx (default: Haar cascades)")
    parser.add_argument("--max-people", type=int, help="use only the first N people (a quick run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from kerascnn.errors import FaceModelError
    from kerascnn.face.model import load_face_model, load_face_model_card
    from kerascnn.face.pipeline import FacePipeline

    paths, labels = fold_images(args.pairs, args.images, args.folds, args.max_people)
    results = {}
    for model_path in args.model or [None]:
        model = load_face_model(model_path)
        try:
            threshold = float(load_face_model_card(model_path)["calibration"]["threshold"])
        except (FaceModelError, KeyError, TypeError, ValueError):  # no card, or not calibrated
            threshold = None
        pipeline = FacePipeline(detector=args.detector_model or "haar", model=model)
        batch = pipeline.embed_images(paths, progress=not args.json, strict=False)
        results[model_path or "shipped"] = all_pairs_report(batch.embeddings, labels, threshold)
    if args.json:
        print(json.dumps({"folds": args.folds, "models": results}, indent=2))
        return 0
    print(f"every pair of the {len(paths)} images of the people of LFW fold(s) {args.folds}")
    for name, r in results.items():
        line = (f"{name}: {r['genuine_pairs']} genuine / {r['impostor_pairs']} impostor pairs, "
                f"{r['no_face']} images without a face; AUC {r['auc']:.4f}, EER {100 * r['eer']:.2f}%, "
                f"TAR {r['tar_at_far']['0.01']:.3f} at FAR 1e-2, {r['tar_at_far']['0.001']:.3f} at FAR 1e-3")
        if "threshold" in r:
            line += (f"; at the calibrated threshold {r['threshold']:.4f}: TAR {r['tar_at_threshold']:.3f}, "
                     f"FAR {r['far_at_threshold']:.3f}, balanced accuracy {100 * r['balanced_accuracy_at_threshold']:.2f}%")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
