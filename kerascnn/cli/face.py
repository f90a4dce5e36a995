"""``kerascnn verify``, ``identify``, ``calibrate``, ``evaluate`` and ``demo``: decisions on photos.

The thresholds, calibrations and workflows are the library's (:mod:`kerascnn.face.faces`,
:mod:`kerascnn.face.calibrations`, :mod:`kerascnn.face.evaluate`, :mod:`kerascnn.face.demo`);
these handlers parse, call and print.
"""

from __future__ import annotations

import argparse
import os

from kerascnn.cli.common import (EXIT_NO_MATCH, EXIT_OK, GALLERY_HELP, add_detector_option, count, face_pipeline,
                                 finite, fraction, positive_int, print_result, seconds)


def add_commands(sub) -> None:
    """Add ``verify``, ``identify``, ``calibrate``, ``evaluate`` and ``demo`` to the subparsers ``sub``."""
    face = argparse.ArgumentParser(add_help=False)
    face.add_argument("--model", metavar="NAME|M.keras",
                      help="face model: dlib (the default: dlib's ResNet in Keras), small (the 64x64 distilled "
                           "model), or the path of a .keras embedder")
    add_detector_option(face)
    face.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    decide = argparse.ArgumentParser(add_help=False)
    decide.add_argument("--threshold", type=finite, metavar="T",
                        help="decision threshold (default: the model's calibration)")
    decide.add_argument("--metric", choices=("cosine", "euclidean"),
                        help="scale of --threshold (default: the calibration's, else cosine)")
    decide.add_argument("--gallery", required=True, metavar="G", help=GALLERY_HELP)
    decide.add_argument("--timeout", type=seconds, default=10.0, metavar="S", help="gallery lock wait (default 10)")
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
    p.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="candidates to show (default 5)")
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
    p.add_argument("--target-far", type=fraction, metavar="F",
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
    p.add_argument("--people", type=positive_int, default=8, help="people to enroll (default 8)")
    p.add_argument("--enroll-images", type=positive_int, default=5, help="images enrolled per person (default 5)")
    p.add_argument("--strangers", type=count, default=4, help="people not enrolled to probe with (default 4)")
    p.add_argument("--threshold", type=finite, metavar="T",
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


def _searching(args):
    """The gallery of ``--gallery``, read-only, with the pipeline of the arguments (:class:`~kerascnn.face.faces.Faces`)."""
    from kerascnn.face.faces import Faces

    return Faces(args.gallery, pipeline=face_pipeline(args, select=args.select), read_only=True,
                 timeout=args.timeout, calibration_file=args.calibration)


def _cmd_verify(args) -> int:
    from kerascnn.face.calibrations import threshold_text

    with _searching(args) as faces:
        result = faces.verify(args.name, args.image, threshold=args.threshold, metric=args.metric, reduce=args.reduce)
    word = "MATCH" if result.match else "NO MATCH"
    print_result(args, {"image": args.image, **result.to_dict()},
                 f"{word}: {args.image} vs {args.name} ({result.templates} templates): {result.metric} "
                 f"{result.score:.4f} ({'>=' if result.metric == 'cosine' else '<='} {threshold_text(result.threshold)} "
                 f"needed)\n  threshold from {result.decision_threshold.source.describe()}"
                 + _faces_note(result.face, args.select))
    return EXIT_OK if result.match else EXIT_NO_MATCH


def _cmd_identify(args) -> int:
    from kerascnn.face.calibrations import threshold_text

    with _searching(args) as faces:
        result = faces.identify(args.image, top_k=args.top_k, fpir=args.fpir, threshold=args.threshold,
                                metric=args.metric)
    used = result.decision_threshold
    head = (f"RECOGNIZED: {args.image} is {result.name} ({result.metric} {result.score:.4f})" if result.recognized
            else f"NOT RECOGNIZED: {args.image} (best {result.candidates[0].name}, {result.metric} {result.score:.4f}, "
                 f"threshold {threshold_text(result.threshold)})")
    lines = [head + _faces_note(result.face, args.select)]
    lines += [f"  {i + 1}. {c.name:<30} {c.score:.4f}" for i, c in enumerate(result.candidates)]
    lines += [f"threshold from {used.source.describe()}", used.description]
    print_result(args, {"image": args.image, **result.to_dict()}, "\n".join(lines))
    return EXIT_OK if result.recognized else EXIT_NO_MATCH


def _faces_note(face, select: str) -> str:
    """``""``, or which face of a photo with several was used (appended to the result line)."""
    if not face.faces_found or face.faces_found < 2:
        return ""
    x, y, w, h = (round(v) for v in face.box)
    return f"\n  note: {face.faces_found} faces found, used the {select} (box x={x} y={y} w={w} h={h})"


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
    from kerascnn.errors import DatasetError
    from kerascnn.face.evaluate import calibrate_pairs_file

    if args.open_set:
        return _calibrate_open_set(args)
    if not (args.pairs and args.images):
        raise DatasetError("calibrate needs --pairs and --images (1:1), or --open-set --folder DIR (1:N)")
    pipeline = face_pipeline(args, select="central")
    run = calibrate_pairs_file(pipeline, args.pairs, args.images, metric=args.metric, target_far=args.target_far,
                               folds=args.folds, missing=args.missing, roc_path=args.roc, progress=not args.json)
    calibration, failures = run.report, run.failures
    stored, where = _store(args, "1:1", calibration, pipeline, run.dataset)
    lines = _report_lines(calibration, args.metric, run.fold_ids) + [
        f"threshold {calibration['threshold']:.4f} ({calibration['criterion']}): FAR {calibration['far']:.4f}, "
        f"TAR {calibration['tar']:.4f}, accuracy {calibration['accuracy_at_threshold']:.4f}",
        f"failure to detect: {failures['failure_to_detect']} of {failures['images']} images", where]
    if args.roc:
        lines.append(f"ROC curve: {args.roc}")
    print_result(args, {**calibration, **failures, **stored}, "\n".join(lines))
    return EXIT_OK


def _calibrate_open_set(args) -> int:
    from kerascnn.errors import DatasetError
    from kerascnn.face.evaluate import calibrate_identity_folder

    if not args.folder:
        raise DatasetError("calibrate --open-set needs --folder DIR (an identity folder DIR/<person>/<image>)")
    pipeline = face_pipeline(args, select="central")
    run = calibrate_identity_folder(pipeline, args.folder, people_file=args.people, sets=args.sets,
                                    gallery_sizes=args.gallery_sizes, fpirs=args.fpir, enroll_per_person=args.enroll,
                                    draws=args.draws, metric=args.metric, seed=args.seed, plot_path=args.plot,
                                    progress=not args.json)
    result = run.report
    stored, stored_where = _store(args, "open-set", result, pipeline, run.dataset)
    lines = [f"open-set calibration on {run.dataset}: {result['people']} people, {result['images']} images "
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
    print_result(args, {**result, **stored}, "\n".join(lines))
    return EXIT_OK


def _cmd_evaluate(args) -> int:
    from kerascnn.face.evaluate import evaluate_pairs_file

    run = evaluate_pairs_file(face_pipeline(args, select="central"), args.pairs, args.images, metric=args.metric,
                              folds=args.folds, missing=args.missing, roc_path=args.roc, progress=not args.json)
    failures = run.failures
    lines = _report_lines(run.report, args.metric, run.fold_ids) + [
        f"failure to detect: {failures['failure_to_detect']} of {failures['images']} images "
        f"({failures['pairs_with_missing_face']} pairs {args.missing}ed)"]
    print_result(args, {**run.report, **failures}, "\n".join(lines))
    return EXIT_OK


def _cmd_demo(args) -> int:
    from kerascnn.face.calibrations import threshold_text
    from kerascnn.face.demo import run_demo

    report = run_demo(args.data, people=args.people, enroll_images=args.enroll_images, strangers=args.strangers,
                      pipeline=face_pipeline(args), gallery=args.gallery, threshold=args.threshold, metric=args.metric,
                      fpir=args.fpir, calibration_file=args.calibration)
    one, many = report.verification, report.identification
    lines = [f"enrolled {len(report.enrolled)} ORL people x {args.enroll_images} images ({report.templates} templates) "
             f"into {args.gallery or 'a temporary gallery'}",
             f"verify: 1:1 {one.metric} threshold {threshold_text(one.threshold)} ({one.description})",
             f"identify: {many.description}",
             "(thresholds come from calibration on development data, never from these photos)"]
    for r in report.rows:
        if "error" in r:
            lines.append(f"{r['image']}: error: {r['error']}")
            continue
        v, i = r["verify"], r["identify"]
        lines.append(f"{'ok ' if r['correct'] else 'BAD'} {os.path.relpath(r['image'], report.orl):<10} "
                     f"({r['truth']}{'' if r['enrolled'] else ', not enrolled'}): "
                     f"verify as {v['name']}: {v['decision']} ({v['score']:.3f}); identify: {i['decision']} "
                     f"({i['candidates'][0]['name']} {i['score']:.3f})")
    lines.append(f"{report.correct} of {len(report.rows)} probes decided correctly")
    wrong = ", ".join(f"{what}: {n}" for what, n in report.failure_counts().items())
    if wrong:
        lines.append(f"the model does not decide every probe correctly at these operating points: {wrong}")
    print_result(args, {"threshold": one.threshold, "metric": one.metric, "threshold_source": one.source.to_dict(),
                        "identify_operating_point": many.operating_point,
                        "identify_threshold_source": many.source.to_dict(), "enrolled": report.enrolled,
                        "templates": report.templates, "probes": report.rows, "correct": report.correct,
                        "failures": wrong or None}, "\n".join(lines))
    return EXIT_NO_MATCH if wrong else EXIT_OK
