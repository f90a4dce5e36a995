"""The whole face pipeline measured on labelled photos: LFW-protocol pairs and identity folders.

Where :mod:`kerascnn.face.decision` works on embeddings, these functions start from image files:
they detect, align and embed every photo with a :class:`~kerascnn.face.pipeline.FacePipeline`,
then score (:func:`evaluate_pairs_file`) or calibrate 1:1 (:func:`calibrate_pairs_file`) and
1:N (:func:`calibrate_identity_folder`) decisions, as ``kerascnn evaluate`` and ``kerascnn
calibrate`` do. Storing a calibration is :func:`kerascnn.face.calibrations.store_calibration`'s job.

Example:
    >>> from kerascnn.face.pipeline import FacePipeline                       # doctest: +SKIP
    >>> run = evaluate_pairs_file(FacePipeline(select="central"), "pairs.txt", "lfw/")  # doctest: +SKIP
    >>> run.report["accuracy"], run.failures["failure_to_detect"]              # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from kerascnn.errors import DatasetError


@dataclass
class PairEmbeddings:
    """The embeddings of both sides of every pair of a pairs file.

    Attributes:
        pairs: the pairs read (a :class:`kerascnn.data.lfw.PairList`, after ``folds``).
        left: ``(n, d)`` embeddings of the left images (NaN rows: no face, unless rejected).
        right: ``(n, d)`` embeddings of the right images.
        batch: the :class:`~kerascnn.face.pipeline.FaceBatch` of every image embedded.
    """

    pairs: Any
    left: np.ndarray
    right: np.ndarray
    batch: Any

    def failures(self) -> dict:
        """JSON-ready counts of the images without a face: ``images``, ``failure_to_detect``,
        ``pairs_with_missing_face`` and the first 50 ``failures`` (path and error)."""
        failed = {r.source: r.message for r in self.batch.errors}
        pairs = self.pairs
        return {"images": len(self.batch), "failure_to_detect": len(failed),
                "pairs_with_missing_face": int(sum(a in failed or b in failed for a, b in zip(pairs.left, pairs.right))),
                "failures": [{"path": p, "error": m} for p, m in sorted(failed.items())[:50]]}


@dataclass
class Measurement:
    """What a run of the pipeline on a dataset found.

    Attributes:
        report: the JSON-ready figures (a calibration in the card format, or an evaluation).
        dataset: what was measured, in words (absolute paths, folds or sets): the key under which
            a calibration is stored.
        failures: for pairs, :meth:`PairEmbeddings.failures`; empty for an identity folder.
        fold_ids: for pairs, the 0-based fold of each pair scored; None for an identity folder.
    """

    report: dict
    dataset: str
    failures: dict = field(default_factory=dict)
    fold_ids: np.ndarray | None = None


def embed_pairs(pipeline, pairs_file: str | os.PathLike, images: str | os.PathLike, *,
                folds: Sequence[int] | None = None, missing: str = "reject", progress: bool = True) -> PairEmbeddings:
    """Embed every image of an LFW-format pairs file, once each.

    Args:
        pipeline: the face pipeline (``select="central"`` for LFW's centred faces).
        pairs_file: the pairs file (``pairs.txt``).
        images: the folder of ``<name>/<name>_NNNN.jpg`` images.
        folds: use only these folds (1-based); default all.
        missing: a pair with an image without a face: ``"reject"`` gives it the worst score (a
            failed comparison), ``"exclude"`` leaves NaN rows that scoring leaves out.
        progress: show a progress bar.

    Returns:
        A :class:`PairEmbeddings`.

    Raises:
        DatasetError: a bad pairs file, missing images, or a fold out of range.
    """
    from kerascnn.data.lfw import read_pairs

    pairs = read_pairs(pairs_file, images)
    if folds:
        wanted = [f - 1 for f in folds]
        if min(wanted) < 0 or max(wanted) >= pairs.num_folds:
            raise DatasetError(f"--folds must be between 1 and {pairs.num_folds}, got {list(folds)}")
        pairs = pairs.select(np.isin(pairs.fold, wanted))
    paths = sorted(set(pairs.left) | set(pairs.right))
    batch = pipeline.embed_images(paths, progress=progress)
    left, right = pair_embeddings(pairs, paths, batch.embeddings, missing)
    return PairEmbeddings(pairs, left, right, batch)


def pair_embeddings(pairs, paths: Sequence[str], embeddings: np.ndarray, missing: str = "reject") -> tuple[np.ndarray, np.ndarray]:
    """The embeddings ``(left, right)`` of each pair, from those of its images.

    Args:
        pairs: a :class:`kerascnn.data.lfw.PairList`.
        paths: the image of each row of ``embeddings``.
        embeddings: ``(n, d)``; NaN rows: no face.
        missing: as :func:`embed_pairs`.

    Returns:
        Two ``(n_pairs, d)`` arrays.
    """
    row = {p: i for i, p in enumerate(paths)}
    left = embeddings[[row[p] for p in pairs.left]]
    right = embeddings[[row[p] for p in pairs.right]]
    if missing == "reject":  # the worst score: a genuine pair is falsely rejected, an impostor rejected
        worst = np.zeros(embeddings.shape[1], np.float32)
        worst[0] = 1.0
        bad = ~np.isfinite(left).all(1) | ~np.isfinite(right).all(1)
        left[bad], right[bad] = worst, -worst
    return left, right


def cv_folds(fold_ids: np.ndarray):
    """The pairs' own folds for cross-validation (the LFW protocol); a single fold is split into 10 instead."""
    return fold_ids if len(np.unique(fold_ids)) >= 2 else 10


def _pairs_dataset(pairs_file, folds) -> str:
    return os.path.abspath(pairs_file) + (f", folds {' '.join(map(str, folds))}" if folds else "")


def evaluate_pairs_file(pipeline, pairs_file: str | os.PathLike, images: str | os.PathLike, *, metric: str = "cosine",
                        folds: Sequence[int] | None = None, missing: str = "reject",
                        roc_path: str | os.PathLike | None = None, progress: bool = True) -> Measurement:
    """LFW-protocol accuracy of the whole pipeline (threshold chosen on the other folds), AUC, EER, TAR at FAR.

    Args:
        pipeline, pairs_file, images, folds, missing, progress: as :func:`embed_pairs`.
        metric: ``"cosine"`` or ``"euclidean"``.
        roc_path: write the ROC curve there (PNG).

    Returns:
        A :class:`Measurement` whose report is :class:`kerascnn.evaluation.PairReport`'s dict with
        ``metric``, ``missing``, ``pairs`` and ``pairs_scored``.
    """
    from kerascnn.evaluation import evaluate_pairs, plot_roc
    from kerascnn.face.decision import pair_scores

    embedded = embed_pairs(pipeline, pairs_file, images, folds=folds, missing=missing, progress=progress)
    pairs, left, right = embedded.pairs, embedded.left, embedded.right
    kept = np.isfinite(left).all(1) & np.isfinite(right).all(1)
    scores = pair_scores(left[kept], right[kept], metric)
    report = evaluate_pairs(scores, pairs.same[kept], folds=cv_folds(pairs.fold[kept]), similarity=metric == "cosine")
    if roc_path:
        plot_roc(report, roc_path)
    out = {**report.to_dict(), "metric": metric, "missing": missing, "pairs": len(pairs), "pairs_scored": int(kept.sum())}
    return Measurement(out, _pairs_dataset(pairs_file, folds), embedded.failures(), pairs.fold[kept])


def calibrate_pairs_file(pipeline, pairs_file: str | os.PathLike, images: str | os.PathLike, *,
                         metric: str = "cosine", target_far: float | None = None, folds: Sequence[int] | None = None,
                         missing: str = "reject", roc_path: str | os.PathLike | None = None,
                         progress: bool = True) -> Measurement:
    """The 1:1 calibration of the whole pipeline on LFW-format pairs (:func:`kerascnn.face.decision.calibrate`).

    Args:
        pipeline, pairs_file, images, folds, missing, progress: as :func:`embed_pairs`.
        metric: ``"cosine"`` or ``"euclidean"``.
        target_far: the threshold of highest TAR with FAR <= this (default: best accuracy).
        roc_path: write the ROC curve there (PNG).

    Returns:
        A :class:`Measurement` whose report is the calibration (card format, with its ``source``).
    """
    from kerascnn.face.decision import calibrate

    embedded = embed_pairs(pipeline, pairs_file, images, folds=folds, missing=missing, progress=progress)
    pairs = embedded.pairs
    calibration = calibrate(embedded.left, embedded.right, pairs.same, metric=metric, target_far=target_far,
                            folds=cv_folds(pairs.fold), roc_path=roc_path)
    failures = embedded.failures()
    calibration["source"] = calibration_source(pairs_file, len(pairs), failures["failure_to_detect"], missing)
    return Measurement(calibration, _pairs_dataset(pairs_file, folds), failures, pairs.fold)


def calibration_source(pairs_file, pairs: int, no_face: int, missing: str = "reject") -> str:
    """The ``source`` line of a 1:1 calibration measured on a pairs file."""
    return f"kerascnn calibrate on {pairs_file} ({pairs} pairs; {no_face} images without a face, pairs {missing}ed)"


def calibrate_identity_folder(pipeline, folder: str | os.PathLike, *, people_file: str | os.PathLike | None = None,
                              sets: Sequence[int] | None = None, gallery_sizes: Sequence[int] | None = None,
                              fpirs: Sequence[float] = (1e-1, 1e-2, 1e-3), enroll_per_person: int = 1,
                              draws: int = 5, metric: str = "cosine", seed: int = 0,
                              plot_path: str | os.PathLike | None = None, progress: bool = True) -> Measurement:
    """The 1:N (open-set) calibration of the whole pipeline on an identity folder of development people.

    The sizes and draws are checked on the folder's listing before any photo is embedded
    (:func:`kerascnn.face.decision.open_set_gallery_sizes`), then every photo is embedded and
    :func:`kerascnn.face.decision.calibrate_open_set` draws the galleries.

    Args:
        pipeline: the face pipeline.
        folder: ``folder/<person>/<image>``.
        people_file: an LFW ``people.txt``: use only the people of its ``sets``.
        sets: the 1-based sets of ``people_file`` (default all).
        gallery_sizes, fpirs, draws, metric, seed, plot_path: as
            :func:`~kerascnn.face.decision.calibrate_open_set`.
        enroll_per_person: images enrolled per person.
        progress: show a progress bar.

    Returns:
        A :class:`Measurement` whose report is the open-set calibration (with its ``source``).

    Raises:
        DatasetError: a set out of range, too few people or images for the sizes asked for.
    """
    from kerascnn.data.folders import scan_folder
    from kerascnn.data.lfw import read_people
    from kerascnn.face.decision import calibrate_open_set, open_set_gallery_sizes

    names, where = None, os.path.abspath(folder)
    if people_file:
        people_sets = read_people(people_file)
        chosen = list(sets) if sets else list(range(1, len(people_sets) + 1))
        if min(chosen) < 1 or max(chosen) > len(people_sets):
            raise DatasetError(f"--sets must be between 1 and {len(people_sets)} ({people_file}), got {sets}")
        names = sorted({n for k in chosen for n in people_sets[k - 1]})
        where += f", people of sets {' '.join(map(str, chosen))} of {os.path.abspath(people_file)}"
    elif sets:
        raise DatasetError("--sets needs --people PEOPLE.txt")
    dataset = scan_folder(folder, classes=names)
    # checked on the listing, before the slow embedding (calibrate_open_set checks again on the faces found)
    open_set_gallery_sizes(list(dataset.class_counts().values()), gallery_sizes, fpirs, enroll_per_person, draws,
                           where=folder)
    batch = pipeline.embed_images(dataset.paths, progress=progress)
    labels = np.asarray(dataset.class_names)[dataset.labels]
    result = calibrate_open_set(batch.embeddings, labels, gallery_sizes=gallery_sizes, fpirs=fpirs,
                                enroll_per_person=enroll_per_person, draws=draws, metric=metric, seed=seed,
                                plot_path=plot_path)
    result["source"] = (f"kerascnn calibrate --open-set on {where} ({result['people']} people, {result['images']} "
                        f"images with a face, {result['excluded_images']} without; {enroll_per_person} enrolled per "
                        f"person, {draws} draws, seed {seed})")
    return Measurement(result, where)
