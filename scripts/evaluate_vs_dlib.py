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
  equals dlib's within 1e-6 (tests/test_dlib_resnet.py) and is 20x faster (batched, 200 chips at a time).

An image without a face scores its pairs as failed comparisons (the worst score: a genuine
pair is rejected, an impostor pair is rejected), for every method alike. For each method it
prints the LFW-protocol accuracy (threshold chosen on the other folds), AUC, EER and TAR at FAR
1e-2 and 1e-3 over all folds, and separately the cross-validated accuracy on folds 1-6 (where
variants are chosen) and the accuracy on fold 7 at the threshold of best accuracy on folds 1-6
(where the choice is confirmed). Slow work is cached in ``--cache`` so a stopped run resumes.

``--baseline dlib`` runs a second kerascnn model on the same detections. ``--fusion`` (for a fused
``--model``, :mod:`kerascnn.face.ensemble`) adds each member alone (slices of the fused
embeddings) and fusion rules fitted on the development folds: their weights, figures on the pairs,
and TAR at FAR 1e-3 on every genuine and impostor pair among the photos of the development and of
the confirmation folds (see :func:`fusion_study`). ``--speed-count N`` times enrollment of N photos
end to end for each kerascnn model and face_recognition's recipe, in the same run (per core with
``--speed-cpus 1``, which pins the process to CPU 1 as ``taskset -c 1`` would).

Usage:
    python scripts/evaluate_vs_dlib.py --pairs ../shared/data/lfw/pairs.txt --images ../shared/data/lfw/images \\
        --detector-model ../shared/models/face_detection_yunet_2026may.onnx [--json] [--limit 100]
    python scripts/evaluate_vs_dlib.py ... --model fused --baseline dlib --detectors yunet --variants plain \\
        --fusion --recipe-descriptor port --speed-count 200 --speed-cpus 1
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

        import tensorflow as tf

        port = kerascnn.create_model("dlib_resnet29", weights="dlib")
        port = tf.function(keras.Model(port.input, port.output), reduce_retracing=True)
    chips = {}  # the port's chips, described in batches at each checkpoint (one image at a time is 6x slower)
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
                chips[path] = np.asarray(dlib.get_face_chip(rgb, landmarks, size=150, padding=0.25), np.float32)
        done[path] = vector
        if chips and (i % 200 == 199 or i == len(todo) - 1):
            names = list(chips)
            stack = np.stack([chips.pop(n) for n in names])
            vectors = np.concatenate([np.asarray(port(stack[j:j + 64])) for j in range(0, len(stack), 64)])
            done.update(zip(names, vectors.astype(np.float32)))
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


def kerascnn_embeddings(paths: list[str], detector, model: str, variants: dict, progress: bool,
                        cache: Path | None = None, memo: _Memo | None = None) -> dict:
    """Unit embeddings of every photo for each variant (pipeline options), and seconds per image
    (detection included). With ``cache`` (a folder), each variant's embeddings are kept in a file
    named by the pipeline's model identity, the detector and the photos, and read back when there."""
    from kerascnn.face.gallery import pipeline_identity
    from kerascnn.face.pipeline import FacePipeline

    memo = memo or _Memo(detector)
    out, seconds, kinds = {}, {}, {}
    # detections another model already made (a shared memo) still count in this model's time
    detect = memo.seconds / max(1, len(paths)) if memo.seconds else None
    for name, options in variants.items():
        pipeline = FacePipeline(detector=memo, model=model, select="central", **options)
        key = hashlib.sha256(json.dumps([pipeline_identity(pipeline), str(detector), paths]).encode()).hexdigest()
        file = None if cache is None else cache / f"{pipeline.model.name}-{key[:16]}.npz"
        if file is not None and file.is_file():
            with np.load(file) as data:
                out[name], seconds[name] = data["embeddings"], float(data["seconds"])
                kinds = json.loads(str(data["kinds"]))
            continue
        start = time.perf_counter()
        batch = pipeline.embed_images(paths, progress=progress)
        seconds[name] = (time.perf_counter() - start) / max(1, len(paths))
        if detect is None:  # the detector ran during the first variant computed: count it in every later one
            detect = memo.seconds / max(1, len(paths))
        else:
            seconds[name] += detect
        out[name] = batch.embeddings
        found = [r.alignment for r in batch.results if r.ok]
        kinds = {k: found.count(k) for k in sorted(set(found))}
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(str(file) + ".tmp.npz", embeddings=out[name], seconds=seconds[name], kinds=json.dumps(kinds))
            os.replace(str(file) + ".tmp.npz", file)
    return {"embeddings": out, "seconds_per_image": seconds, "alignment": kinds}


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


def fused_scores(cosines: dict, weights) -> np.ndarray:
    """The fused score of each pair: the weighted mean of the members' cosines (failed: the worst)."""
    return sum(float(w) * c for w, c in zip(weights, cosines.values()))


def all_pairs(members: dict, paths: list[str], wanted: set) -> tuple[np.ndarray, np.ndarray]:
    """The members' cosines ``(n, m)`` of every genuine and every impostor pair among the photos in
    ``wanted`` that have a face (the person is the photo's folder)."""
    rows = [i for i, p in enumerate(paths) if p in wanted and all(np.isfinite(e[i]).all() for e in members.values())]
    person = np.array([Path(paths[i]).parent.name for i in rows])
    vectors = [e[rows] for e in members.values()]
    genuine, impostor = [], []
    for i in range(len(rows) - 1):
        block = np.stack([v[i + 1:] @ v[i] for v in vectors], axis=1)
        same = person[i + 1:] == person[i]
        genuine.append(block[same])
        impostor.append(block[~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def tar_at(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """TAR of the threshold that accepts at most ``far`` of the impostor scores."""
    accepted = int(np.floor(far * len(impostor)))
    limit = np.partition(impostor, len(impostor) - accepted - 1)[len(impostor) - accepted - 1]
    return float(np.mean(genuine > limit))


def fusion_study(card: dict, vectors: np.ndarray, paths: list[str], left, right, pairs, develop: list[int],
                 confirm: list[int]) -> tuple[dict, dict]:
    """A fused model's members alone and fusion rules fitted on the development folds.

    Each member's embeddings are slices of the fused ones. The rules, each a set of fusion
    weights (the fused score is their mean of the members' cosines): ``card``, the fused model's
    own; ``z-mean``, the mean of z-normalised cosines (weights 1 / std of each member's cosines of
    the development pairs); ``logistic``, scikit-learn's logistic regression on those z-normalised
    cosines (weights coef / std); ``max TAR@1e-3``, :func:`kerascnn.face.ensemble.fit_fusion_weights`
    on every genuine and impostor pair among the development folds' photos. Each rule's TAR at
    FAR 1e-3 is also measured on every pair among the confirmation folds' photos.

    Returns:
        ``(pair scores by label, the study's JSON)``.
    """
    from sklearn.linear_model import LogisticRegression

    from kerascnn.face.ensemble import fit_fusion_weights, member_embeddings

    members = member_embeddings(card, vectors)
    cosines = {name: pair_scores(e, left, right, "cosine") for name, e in members.items()}
    dev = np.isin(pairs.fold, [f - 1 for f in develop])
    stacked = np.stack(list(cosines.values()), axis=1)
    finite = dev & np.all(stacked > -1, axis=1)
    std = stacked[finite].std(0)
    z = (stacked[finite] - stacked[finite].mean(0)) / std
    logistic = LogisticRegression(C=1.0).fit(z, pairs.same[finite]).coef_[0]
    wanted = {p for p, f in zip(pairs.left + pairs.right, np.concatenate([pairs.fold, pairs.fold]))
              if f + 1 in develop}
    held = {p for p, f in zip(pairs.left + pairs.right, np.concatenate([pairs.fold, pairs.fold]))
            if f + 1 in confirm}
    genuine, impostor = all_pairs(members, paths, wanted)
    best, _ = fit_fusion_weights(genuine, impostor, 1e-3)
    rules = {"card": [m["weight"] for m in card["members"]], "z-mean": 1 / std,
             "logistic": np.maximum(logistic, 0) / std, "max TAR@1e-3": best}
    rules = {k: np.asarray(v, np.float64) / np.sum(v) for k, v in rules.items()}
    confirm_genuine, confirm_impostor = all_pairs(members, paths, held)
    study = {"members": list(members), "develop_all_pairs": {"genuine": len(genuine), "impostor": len(impostor)},
             "confirm_all_pairs": {"genuine": len(confirm_genuine), "impostor": len(confirm_impostor)}, "rules": {}}
    scores = {f"member {name} (slice)": c for name, c in cosines.items()}
    for one in range(len(members)):  # each member alone, on all pairs too
        rules[f"member {list(members)[one]}"] = np.eye(len(members))[one]
    for name, weights in rules.items():
        study["rules"][name] = {
            "weights": [round(float(w), 4) for w in weights],
            "develop_all_pairs_tar_at_far_1e-3": tar_at(genuine @ weights, impostor @ weights, 1e-3),
            "confirm_all_pairs_tar_at_far_1e-3": tar_at(confirm_genuine @ weights, confirm_impostor @ weights, 1e-3),
        }
        if not name.startswith("member"):
            scores[f"fusion rule {name}"] = fused_scores(cosines, weights)
    return scores, study


def write_calibration(out: Path, pairs, paths: list[str], embeddings: np.ndarray, pairs_file: str,
                      detector: str) -> None:
    """The 1:1 calibration ``kerascnn calibrate --target-far 1e-3`` gives on these pairs and
    embeddings (failed images: their pairs rejected), in the card format, written as JSON."""
    from kerascnn.face.decision import calibrate
    from kerascnn.face.evaluate import calibration_source, cv_folds, pair_embeddings

    left, right = pair_embeddings(pairs, paths, embeddings)
    calibration = calibrate(left, right, pairs.same, metric="cosine", target_far=1e-3, folds=cv_folds(pairs.fold))
    calibration["source"] = calibration_source(pairs_file, len(pairs), int((~np.isfinite(embeddings).all(1)).sum()))
    calibration["detector"] = detector
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(calibration, indent=2) + "\n")


def enrollment_speed(paths: list[str], detector, models: dict, count: int) -> dict:
    """Enrollment of ``count`` photos end to end (read, detect, align, embed, store in a gallery)
    per model, the embedding stage alone, and face_recognition's recipe on the same photos
    (scripts/bench_face.py's ``bench_dlib``: HOG upsampled once, 5 landmarks, dlib's descriptor)."""
    import tempfile

    from bench_face import bench_dlib

    from kerascnn.face.faces import Faces
    from kerascnn.face.pipeline import FacePipeline

    chosen = paths[:: max(1, len(paths) // count)][:count]
    out = {"images": len(chosen), "cpus": sorted(os.sched_getaffinity(0))}
    for label, model in models.items():
        pipeline = FacePipeline(detector=detector, model=model)
        batch = pipeline.embed_images(chosen[:4], progress=False, keep_crops=True)  # load and trace
        pipeline.embed_crops(batch.crops)
        with tempfile.TemporaryDirectory() as tmp, Faces(os.path.join(tmp, "g.db"), pipeline=pipeline) as faces:
            start = time.perf_counter()
            faces.enroll("bench", chosen, strict=False)
            enroll = time.perf_counter() - start
        crops = pipeline.embed_images(chosen, progress=False, keep_crops=True).crops
        start = time.perf_counter()
        pipeline.embed_crops(crops)
        embed = time.perf_counter() - start
        out[label] = {"enroll_ms_per_image": round(1000 * enroll / len(chosen), 2),
                      "enroll_images_per_s": round(len(chosen) / enroll, 2),
                      "embed_ms_per_face": round(1000 * embed / len(chosen), 2)}
    recipe = bench_dlib(chosen)
    if recipe is not None:
        out["face_recognition recipe"] = {"enroll_images_per_s": recipe["images_per_s"],
                                          "ms_per_image_by_stage": recipe["ms_per_image_by_stage"]}
        for label in models:
            out[label]["enroll_over_face_recognition"] = round(out[label]["enroll_images_per_s"]
                                                               / recipe["images_per_s"], 2)
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
    parser.add_argument("--baseline", help="another kerascnn face model run on the same detections (e.g. dlib)")
    parser.add_argument("--detectors", nargs="*", choices=("yunet", "haar"), default=["yunet", "haar"],
                        help="kerascnn with these detectors (none: the recipe only)")
    parser.add_argument("--variants", nargs="+", choices=("plain", "flip", "flip + box scales"),
                        default=["plain", "flip", "flip + box scales"], help="kerascnn variants (box scales: Haar only)")
    parser.add_argument("--fusion", action="store_true",
                        help="--model is a fused model: also its members alone and fusion rules fitted on the "
                             "development folds (from the plain YuNet embeddings)")
    parser.add_argument("--calibration-out", type=Path,
                        help="write the 1:1 calibration of --model with YuNet (kerascnn calibrate --target-far 1e-3 on "
                             "the same pairs: card format) to this JSON file")
    parser.add_argument("--speed-count", type=int, default=0,
                        help="also time enrollment of this many photos: --model, --baseline and face_recognition's "
                             "recipe (on the CPUs of --speed-cpus)")
    parser.add_argument("--speed-cpus", type=int, nargs="+",
                        help="pin the process to these CPUs for the speed measurement (1 CPU: per core, as "
                             "'taskset -c N'; TensorFlow's and dlib's threads all share it)")
    parser.add_argument("--recipe-descriptor", choices=("dlib", "port"), default="dlib")
    parser.add_argument("--no-recipe", action="store_true", help="skip face_recognition's recipe")
    parser.add_argument("--cache", type=Path, default=Path("runs/evaluate_vs_dlib/recipe.npz"),
                        help="the recipe's descriptors; kerascnn's embeddings are cached in the same folder")
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
    variants = {k: v for k, v in variants.items() if k in args.variants}
    models = {"": args.model, **({f" [{args.baseline}]": args.baseline} if args.baseline else {})}
    detectors = {"yunet": args.detector_model, "haar": "haar"}
    cache = args.cache.parent if args.cache else None
    for name in args.detectors:
        memo = _Memo(detectors[name])  # every model sees the same detections
        chosen = variants if name == "haar" else {k: v for k, v in variants.items() if k != "flip + box scales"}
        for tag, model in models.items():
            emb = kerascnn_embeddings(paths, detectors[name], model, chosen, progress, cache, memo)
            first = next(iter(emb["embeddings"].values()))
            extra[f"kerascnn {name}{tag}"] = {"no_face": int((~np.isfinite(first).all(1)).sum()),
                                              "alignment": emb["alignment"]}
            for variant, vectors in emb["embeddings"].items():
                label = f"kerascnn {name}" + ("" if variant == "plain" else f" + {variant}") + tag
                speed[label] = emb["seconds_per_image"][variant]
                scores = pair_scores(vectors, left, right, "cosine")
                results[label] = report(scores, pairs.same, pairs.fold, args.develop_folds, args.confirm_folds)
            if args.calibration_out and name == "yunet" and tag == "" and "plain" in emb["embeddings"]:
                write_calibration(args.calibration_out, pairs, paths, emb["embeddings"]["plain"], args.pairs, name)
            if args.fusion and name == "yunet" and tag == "" and "plain" in emb["embeddings"]:
                from kerascnn.face.model import load_face_model_card

                scores, extra["fusion"] = fusion_study(load_face_model_card(model), emb["embeddings"]["plain"], paths,
                                                       left, right, pairs, args.develop_folds, args.confirm_folds)
                for label, values in scores.items():
                    results[f"kerascnn yunet: {label}"] = report(values, pairs.same, pairs.fold, args.develop_folds,
                                                                 args.confirm_folds)
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
    if args.speed_count:
        if args.speed_cpus:
            os.sched_setaffinity(0, args.speed_cpus)
        extra["enrollment_speed"] = enrollment_speed(paths, args.detector_model, {m: m for m in models.values()},
                                                       args.speed_count)
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
    if "fusion" in extra:
        study = extra["fusion"]
        print(f"fusion weights ({', '.join(study['members'])}) and TAR at FAR 1e-3 on every pair of the photos of the "
              f"development folds ({study['develop_all_pairs']['genuine']} genuine, "
              f"{study['develop_all_pairs']['impostor']} impostor) and of the confirmation folds "
              f"({study['confirm_all_pairs']['genuine']}, {study['confirm_all_pairs']['impostor']}):")
        for name, rule in study["rules"].items():
            print(f"  {name:<16} weights {rule['weights']}: develop {rule['develop_all_pairs_tar_at_far_1e-3']:.4f}, "
                  f"confirm {rule['confirm_all_pairs_tar_at_far_1e-3']:.4f}")
    if "enrollment_speed" in extra:
        bench = extra["enrollment_speed"]
        print(f"enrollment of {bench['images']} photos on CPUs {bench['cpus']}: " + ", ".join(
            f"{k} {v['enroll_images_per_s']} images/s" + (f" (embedding {v['embed_ms_per_face']} ms/face, "
                                                           f"{v.get('enroll_over_face_recognition')}x the recipe)"
                                                           if "embed_ms_per_face" in v else "")
            for k, v in bench.items() if isinstance(v, dict)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
