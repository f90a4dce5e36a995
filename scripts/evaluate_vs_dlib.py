#!/usr/bin/env python3
"""kerascnn's face pipeline against face_recognition's recipe, on the same LFW pairs, same run.

For every image of the pairs (LFW folds 1-7 by default: the 4,200 development pairs) this runs:

- kerascnn with the YuNet detector and with the Haar cascades (detect the central face, align on
  the model's template, embed): plain, with test-time flip (the mean of the descriptors of the
  chip and of its mirror image), and, for Haar, with flip and box scales (the model card's
  defaults: faces aligned without landmarks are also embedded from their box scaled by 0.92 and
  1.08, and the embeddings averaged);
- face_recognition's recipe: dlib's HOG detector (upsampled once), its 5-point shape predictor,
  dlib's 150x150 chip (padding 0.25) and dlib's descriptor, compared by Euclidean distance as
  face_recognition does. ``--recipe-descriptor dlib`` (default) calls dlib's own
  ``compute_face_descriptor``; ``port`` computes the same descriptor with kerascnn's port, which
  equals dlib's within 1e-6 (tests/test_dlib_resnet.py) and is 20x faster.

An image without a face scores its pairs as failed comparisons (the worst score: a genuine
pair is rejected, an impostor pair is rejected), for every method alike. For each method it
prints the LFW-protocol accuracy (threshold chosen on the other folds), AUC, EER and TAR at FAR
1e-2 and 1e-3 over all folds, and separately the cross-validated accuracy on folds 1-6 (where
variants are chosen) and the accuracy on fold 7 at the threshold of best accuracy on folds 1-6
(where the choice is confirmed). Slow work is cached in ``--cache`` so a stopped run resumes.

Usage:
    python scripts/evaluate_vs_dlib.py --pairs ../shared/data/lfw/pairs.txt --images ../shared/data/lfw/images \\
        --detector-model ../shared/models/face_detection_yunet_2026may.onnx [--json] [--limit 100]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout


def recipe_descriptors(paths: list[str], descriptor: str, cache: Path | None, progress: bool) -> tuple[np.ndarray, float]:
    """face_recognition's recipe on each photo: ``(n, 128)`` raw descriptors (NaN: no face), seconds."""
    import dlib

    from kerascnn.distillation import dlib_model_dir

    done = {}
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            done = dict(zip(data["paths"].tolist(), data["vectors"]))
    folder = dlib_model_dir()
    hog = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")) \
        if descriptor == "dlib" else None
    port = None
    if descriptor == "port":
        import keras

        import kerascnn

        port = kerascnn.create_model("dlib_resnet29", weights="dlib")
        port = keras.Model(port.input, port.output)
    todo = [p for p in paths if p not in done]
    start = time.perf_counter()
    iterator = todo
    if progress:
        from tqdm import tqdm

        iterator = tqdm(todo, desc="face_recognition recipe", unit="img", leave=False)
    for i, path in enumerate(iterator):
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        boxes = hog(rgb, 1)
        vector = np.full(128, np.nan, np.float32)
        if boxes:
            centre = np.array(rgb.shape[1::-1]) / 2.0
            box = min(boxes, key=lambda b: np.hypot(b.center().x - centre[0], b.center().y - centre[1]))
            landmarks = shape(rgb, box)
            if net is not None:
                vector = np.asarray(net.compute_face_descriptor(rgb, landmarks), np.float32)
            else:
                chip = np.asarray(dlib.get_face_chip(rgb, landmarks, size=150, padding=0.25), np.float32)
                vector = np.asarray(port(chip[None], training=False))[0]
        done[path] = vector
        if cache is not None and (i % 200 == 199 or i == len(todo) - 1):
            cache.parent.mkdir(parents=True, exist_ok=True)
            keys = sorted(done)
            np.savez(str(cache) + ".tmp.npz", paths=np.array(keys), vectors=np.stack([done[k] for k in keys]))
            os.replace(str(cache) + ".tmp.npz", cache)
    seconds = time.perf_counter() - start
    return np.stack([done[p] for p in paths]).astype(np.float32), (seconds / len(todo) if todo else None)


class _Memo:
    """A detector that remembers its answer per image, so every variant sees the same faces."""

    def __init__(self, detector):
        from kerascnn.face.detect import get_detector

        self.detector, self.seen, self.seconds = get_detector(detector), {}, 0.0

    def __call__(self, image):
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
        if key not in self.seen:
            start = time.perf_counter()
            self.seen[key] = self.detector(image)
            self.seconds += time.perf_counter() - start
        return self.seen[key]


def kerascnn_embeddings(paths: list[str], detector, model: str, variants: dict, progress: bool) -> dict:
    """Unit embeddings of every photo for each variant (pipeline options), and seconds per image."""
    from kerascnn.face.pipeline import FacePipeline

    memo = _Memo(detector)
    out, seconds = {}, {}
    for name, options in variants.items():
        pipeline = FacePipeline(detector=memo, model=model, select="central", **options)
        start = time.perf_counter()
        batch = pipeline.embed_images(paths, progress=progress)
        seconds[name] = (time.perf_counter() - start) / max(1, len(paths))
        out[name] = batch.embeddings
        kinds = [r.alignment for r in batch.results if r.ok]
    for name in list(seconds)[1:]:  # the detector ran during the first variant: count it in every one
        seconds[name] += memo.seconds / max(1, len(paths))
    return {"embeddings": out, "seconds_per_image": seconds,
            "alignment": {k: kinds.count(k) for k in sorted(set(kinds))}}


def pair_scores(vectors: np.ndarray, left: np.ndarray, right: np.ndarray, metric: str) -> np.ndarray:
    """Similarity of each pair (cosine, or minus the Euclidean distance); failed images: the worst."""
    a, b = vectors[left], vectors[right]
    if metric == "cosine":
        scores = np.sum(a * b, axis=1)
        worst = -1.0
    else:
        scores = -np.linalg.norm(a - b, axis=1)
        worst = -np.inf
    return np.where(np.isfinite(scores), scores, worst)


def report(scores: np.ndarray, same: np.ndarray, fold: np.ndarray, develop: list[int], confirm: list[int]) -> dict:
    """LFW-protocol figures over all folds, on the development folds, and on the confirmation folds."""
    from kerascnn.evaluation import accuracy, best_threshold, evaluate_pairs

    finite = np.where(np.isfinite(scores), scores, np.nanmin(scores[np.isfinite(scores)]) - 1.0)
    full = evaluate_pairs(finite, same, folds=fold, similarity=True).to_dict()
    dev = np.isin(fold, [f - 1 for f in develop])
    out = {"all_folds": {k: full[k] for k in ("accuracy", "accuracy_std", "auc", "eer", "tar_at_far")}}
    if dev.any() and len(np.unique(fold[dev])) > 1:
        out["develop_cv_accuracy"] = evaluate_pairs(finite[dev], same[dev], folds=fold[dev], similarity=True).accuracy
    held = np.isin(fold, [f - 1 for f in confirm])
    if dev.any() and held.any():
        threshold = best_threshold(finite[dev], same[dev], similarity=True)
        out["confirm_accuracy"] = accuracy(finite[held], same[held], threshold, similarity=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7])
    parser.add_argument("--develop-folds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--confirm-folds", type=int, nargs="+", default=[7])
    parser.add_argument("--detector-model", required=True, help="YuNet .onnx")
    parser.add_argument("--model", default="dlib", help="kerascnn face model (name or .keras)")
    parser.add_argument("--recipe-descriptor", choices=("dlib", "port"), default="dlib")
    parser.add_argument("--no-recipe", action="store_true", help="skip face_recognition's recipe")
    parser.add_argument("--cache", type=Path, default=Path("runs/evaluate_vs_dlib/recipe.npz"))
    parser.add_argument("--limit", type=int, help="only the first N matched and N mismatched pairs of each fold")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)

    from kerascnn.data.lfw import read_pairs

    pairs = read_pairs(args.pairs, args.images)
    keep = np.isin(pairs.fold, [f - 1 for f in args.folds])
    if args.limit:
        rank = np.zeros(len(pairs), int)
        for f in np.unique(pairs.fold):
            for same in (True, False):
                group = (pairs.fold == f) & (pairs.same == same)
                rank[group] = np.arange(group.sum())
        keep &= rank < args.limit
    pairs = pairs.select(keep)
    paths = sorted(set(pairs.left) | set(pairs.right))
    row = {p: i for i, p in enumerate(paths)}
    left = np.array([row[p] for p in pairs.left])
    right = np.array([row[p] for p in pairs.right])
    progress = not args.json
    results, speed, extra = {}, {}, {}
    variants = {"plain": {"flip": False, "box_scales": ()}, "flip": {"flip": True, "box_scales": ()},
                "flip + box scales": {}}  # the last: the model card's options (the default)
    for name, detector in (("yunet", args.detector_model), ("haar", "haar")):
        chosen = variants if name == "haar" else {k: v for k, v in variants.items() if k != "flip + box scales"}
        emb = kerascnn_embeddings(paths, detector, args.model, chosen, progress)
        extra[f"kerascnn {name}"] = {"no_face": int((~np.isfinite(emb["embeddings"]["plain"]).all(1)).sum()),
                                     "alignment": emb["alignment"]}
        for variant, vectors in emb["embeddings"].items():
            label = f"kerascnn {name}" + ("" if variant == "plain" else f" + {variant}")
            speed[label] = emb["seconds_per_image"][variant]
            scores = pair_scores(vectors, left, right, "cosine")
            results[label] = report(scores, pairs.same, pairs.fold, args.develop_folds, args.confirm_folds)
    if not args.no_recipe:
        vectors, seconds = recipe_descriptors(paths, args.recipe_descriptor, args.cache, progress)
        if seconds is not None:  # else every descriptor came from the cache of an earlier run
            speed["face_recognition recipe"] = seconds
        extra["face_recognition recipe"] = {"no_face": int((~np.isfinite(vectors).all(1)).sum()),
                                            "descriptor": args.recipe_descriptor}
        scores = pair_scores(vectors, left, right, "euclidean")
        results["face_recognition recipe"] = report(scores, pairs.same, pairs.fold, args.develop_folds,
                                                    args.confirm_folds)
        tolerance = -scores <= 0.6  # face_recognition's default tolerance
        results["face_recognition recipe"]["accuracy_at_tolerance_0.6"] = float(np.mean(tolerance == pairs.same))
    out = {"pairs": len(pairs), "images": len(paths), "folds": args.folds, "results": results,
           "seconds_per_image": speed, "details": extra}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(pairs)} pairs of LFW folds {args.folds} ({len(paths)} images); variants chosen on folds "
          f"{args.develop_folds}, confirmed on {args.confirm_folds}")
    print(f"{'method':<34} {'accuracy':>16} {'AUC':>7} {'EER':>7} {'TAR@1e-2':>9} {'TAR@1e-3':>9} "
          f"{'dev CV':>7} {'confirm':>8}  no face")
    for name, r in results.items():
        a = r["all_folds"]
        tar = a["tar_at_far"]
        no_face = extra.get(name.split(" + ")[0], {}).get("no_face", "")
        print(f"{name:<34} {100 * a['accuracy']:>7.2f} +- {100 * a['accuracy_std']:.2f} {a['auc']:>7.4f} "
              f"{100 * a['eer']:>6.2f}% {tar[0.01] if 0.01 in tar else tar['0.01']:>9.4f} "
              f"{tar[0.001] if 0.001 in tar else tar['0.001']:>9.4f} {100 * r.get('develop_cv_accuracy', float('nan')):>7.2f} "
              f"{100 * r.get('confirm_accuracy', float('nan')):>8.2f}  {no_face}")
    if "face_recognition recipe" in results:
        print(f"face_recognition at its default tolerance 0.6: accuracy "
              f"{100 * results['face_recognition recipe']['accuracy_at_tolerance_0.6']:.2f}%")
    print("seconds per image (whole pipeline): " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in speed.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
