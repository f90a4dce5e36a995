"""Decisions on face embeddings: verify (1:1), identify (1:N), and threshold calibration.

Everything works on plain arrays of unit embeddings, so it runs without a gallery; a
:class:`kerascnn.face.gallery.Gallery` (anything with ``templates(name)`` and
``search(queries, k)``) or a gallery's ``search`` result is accepted wherever templates are.

Scores. ``metric="cosine"`` (the default, the gallery's): the cosine similarity, higher is
closer, a match when ``score >= threshold``. ``metric="euclidean"``: the L2 distance between unit
vectors, lower is closer, a match when ``score <= threshold``. For unit vectors the two carry the
same information: ``distance = sqrt(2 - 2 * similarity)``.

Several templates per identity. :func:`verify` compares the probe with the claimed identity's
templates and keeps the closest one (``reduce="best"``, the default: a person enrolled from
several photos matches when any of them is close, as the gallery's search does) or compares it
once with the mean template, renormalized (``reduce="mean"``: steadier with noisy templates).
:func:`identify` uses the best template of each identity.

The threshold comes from calibration (:func:`calibrate`), stored beside the model, not from a
constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from typing import Any, Mapping, Sequence

import numpy as np

from kerascnn.errors import DatasetError, EmptyGalleryError, UnknownIdentityError

METRICS = ("cosine", "euclidean")
REDUCTIONS = ("best", "mean")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _probe(probe: Any) -> np.ndarray:
    probe = np.asarray(probe, dtype=np.float32)
    if probe.ndim == 2 and probe.shape[0] == 1:
        probe = probe[0]
    if probe.ndim != 1 or not np.all(np.isfinite(probe)):
        raise ValueError(f"the probe must be one finite embedding (d,), got shape {probe.shape}")
    return _unit(probe)


def similarity_to_score(similarity: np.ndarray, metric: str) -> np.ndarray:
    """Cosine similarities of unit vectors as scores of ``metric``."""
    _check_metric(metric)
    similarity = np.asarray(similarity, dtype=np.float32)
    if metric == "cosine":
        return similarity
    return np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0)).astype(np.float32)


def pair_scores(left: np.ndarray, right: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Scores of row-aligned embedding pairs (``left[i]`` with ``right[i]``)."""
    left, right = _unit(left), _unit(right)
    return similarity_to_score(np.sum(left * right, axis=1), metric)


def is_match(score: float | np.ndarray, threshold: float, metric: str = "cosine"):
    """True where ``score`` is on the match side of ``threshold`` for ``metric``."""
    _check_metric(metric)
    return np.asarray(score) >= threshold if metric == "cosine" else np.asarray(score) <= threshold


def _better(a: float, b: float, metric: str) -> bool:
    return a > b if metric == "cosine" else a < b


@dataclass
class Verification:
    """The 1:1 decision. ``score`` is a similarity or a distance, by ``metric``."""

    name: str
    match: bool
    score: float
    threshold: float
    metric: str
    templates: int

    def to_dict(self) -> dict:
        return {"decision": "match" if self.match else "no match", "name": self.name, "match": self.match,
                "score": round(self.score, 6), "threshold": self.threshold, "metric": self.metric,
                "templates": self.templates}


@dataclass
class Candidate:
    name: str
    score: float


@dataclass
class Identification:
    """The 1:N decision: ``name`` is None when the best candidate is beyond the threshold."""

    recognized: bool
    name: str | None
    score: float
    threshold: float
    metric: str
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"decision": self.name if self.recognized else "not recognized", "recognized": self.recognized,
                "name": self.name, "score": round(self.score, 6), "threshold": self.threshold,
                "metric": self.metric,
                "candidates": [{"name": c.name, "score": round(c.score, 6)} for c in self.candidates]}


def _templates_of(gallery_or_templates: Any, name: str) -> np.ndarray:
    """The ``(k, d)`` templates of ``name`` from a mapping or a gallery."""
    if isinstance(gallery_or_templates, Mapping):
        if name not in gallery_or_templates:
            known = ", ".join(sorted(map(str, gallery_or_templates))[:10]) or "nobody"
            raise UnknownIdentityError(f"{name!r} is not enrolled (enrolled: {known})")
        templates = gallery_or_templates[name]
    else:
        templates = gallery_or_templates.templates(name)  # raises UnknownIdentityError
    templates = np.asarray(templates, dtype=np.float32).reshape(-1, np.shape(templates)[-1])
    if len(templates) == 0:
        raise EmptyGalleryError(f"{name!r} has no templates enrolled")
    return templates


def verify(gallery_or_templates: Any, name: str, probe: np.ndarray, threshold: float,
           metric: str = "cosine", reduce: str = "best") -> Verification:
    """Does ``probe`` belong to ``name``? (1:1)

    Args:
        gallery_or_templates: ``{name: (k, d) templates}`` or a gallery with ``templates(name)``.
        name: the claimed identity.
        probe: the probe's embedding ``(d,)``.
        threshold: the decision threshold for ``metric`` (from :func:`calibrate`).
        metric: ``"cosine"`` (similarity) or ``"euclidean"`` (distance); see the module doc.
        reduce: ``"best"`` (closest template) or ``"mean"`` (the mean template).

    Returns:
        A :class:`Verification`.

    Raises:
        UnknownIdentityError: ``name`` is not enrolled.
        EmptyGalleryError: ``name`` has no template.
        ValueError: a bad metric, reduction or probe, or a probe of another dimension.
    """
    _check_metric(metric)
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    probe = _probe(probe)
    templates = _unit(_templates_of(gallery_or_templates, name))
    if templates.shape[1] != probe.shape[0]:
        raise ValueError(f"probe has dimension {probe.shape[0]}, the templates of {name!r} {templates.shape[1]}")
    if reduce == "mean":
        similarity = float(_unit(templates.mean(axis=0)) @ probe)
    else:
        similarity = float(np.max(templates @ probe))
    score = float(similarity_to_score(similarity, metric))
    return Verification(name, bool(is_match(score, threshold, metric)), score, float(threshold), metric, len(templates))


def decide_identity(names: Sequence[str], similarities: Sequence[float], threshold: float,
                    metric: str = "cosine") -> Identification:
    """The 1:N decision from one query's ranked search result (a gallery's ``search`` row).

    Args:
        names: candidate names, best first.
        similarities: their cosine similarities (what ``Gallery.search`` returns).
        threshold: the threshold for ``metric``.
        metric: the scale of ``threshold`` and of the reported scores.
    """
    _check_metric(metric)
    if len(names) == 0:
        raise EmptyGalleryError("no candidate to identify against: the gallery is empty")
    scores = similarity_to_score(np.asarray(similarities, dtype=np.float32), metric)
    candidates = [Candidate(str(n), float(s)) for n, s in zip(names, scores)]
    best = candidates[0]
    recognized = bool(is_match(best.score, threshold, metric))
    return Identification(recognized, best.name if recognized else None, best.score, float(threshold), metric, candidates)


def identify(gallery_or_templates: Any, probe: np.ndarray, threshold: float, metric: str = "cosine",
             top_k: int = 5) -> Identification:
    """Who is ``probe``, if anyone? (1:N, with "not recognized")

    Args:
        gallery_or_templates: ``{name: (k, d) templates}``, a gallery with ``search(queries, k)``,
            or a gallery's ``search`` result ``(names, similarities)`` for this probe.
        probe: the probe's embedding ``(d,)`` (ignored for a search result; pass None).
        threshold: the decision threshold for ``metric``.
        metric: ``"cosine"`` or ``"euclidean"``.
        top_k: how many candidates to report.

    Returns:
        An :class:`Identification`: the best identity when within the threshold, else
        ``recognized=False``; ``candidates`` are the ``top_k`` best identities (one score each,
        its best template's).

    Raises:
        EmptyGalleryError: nobody is enrolled.
        ValueError: a bad metric, probe or ``top_k``.
    """
    _check_metric(metric)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if isinstance(gallery_or_templates, tuple) and len(gallery_or_templates) == 2:
        names, sims = (np.asarray(a) for a in gallery_or_templates)
        return decide_identity(names.reshape(-1)[:top_k], sims.reshape(-1)[:top_k], threshold, metric)
    probe = _probe(probe)
    if isinstance(gallery_or_templates, Mapping):
        names, sims = _search_mapping(gallery_or_templates, probe, top_k)
    else:
        names, sims = gallery_or_templates.search(probe[None, :], k=top_k)
        names, sims = names[0], sims[0]
    return decide_identity(names, sims, threshold, metric)


def _search_mapping(templates: Mapping[str, np.ndarray], probe: np.ndarray, k: int):
    """Best-template cosine similarity of each identity of a mapping, top ``k`` first."""
    names = [n for n in templates if len(np.asarray(templates[n]))]
    if not names:
        raise EmptyGalleryError("no templates to identify against: nobody is enrolled")
    best = np.array([np.max(_unit(np.asarray(templates[n]).reshape(-1, probe.shape[0])) @ probe) for n in names])
    order = np.argsort(-best, kind="stable")[:k]
    return [names[i] for i in order], best[order]


def calibrate(left: np.ndarray, right: np.ndarray, same: Sequence[bool], metric: str = "cosine",
              target_far: float | None = 1e-3, folds: int | Sequence[int] = 10,
              roc_path: str | os.PathLike | None = None) -> dict:
    """Choose the decision threshold on labelled pairs of embeddings, and report how it does.

    Pairs with a NaN embedding (a face not found) are excluded and counted.

    Args:
        left, right: ``(n, d)`` embeddings of the two images of each pair.
        same: True for genuine (same person) pairs.
        metric: ``"cosine"`` or ``"euclidean"``: the scale of the threshold.
        target_far: the false accept rate not to exceed (the threshold of highest TAR under it),
            or None for the threshold of best accuracy over all pairs.
        folds: folds of the k-fold accuracy (a count, or one fold id per pair: LFW's folds).
        roc_path: write the ROC curve there as a PNG.

    Returns:
        A JSON-ready calibration dict in the card format of :mod:`kerascnn.face.model`:
        ``threshold`` (by the criterion asked for), ``metric``, ``criterion``, ``target_far``,
        ``best_accuracy_threshold``, ``threshold_far_1e-3``,
        the rates at the threshold (``far``, ``tar``, ``accuracy_at_threshold``), and the report
        of :func:`kerascnn.evaluation.evaluate_pairs` (k-fold ``accuracy``, ``auc``, ``eer``,
        ``tar_at_far`` at 1e-2 and 1e-3, pair counts), ``excluded_pairs`` and ``roc_png``.

    Raises:
        DatasetError: mismatched lengths, or no genuine or no impostor pair left.
        ValueError: a bad metric.
    """
    from kerascnn import evaluation

    _check_metric(metric)
    left, right = np.asarray(left, np.float32), np.asarray(right, np.float32)
    same = np.asarray(same, bool).reshape(-1)
    if left.shape != right.shape or left.ndim != 2 or len(left) != len(same):
        raise DatasetError(
            f"calibrate needs left and right embeddings (n, d) and n labels, got {left.shape}, {right.shape} "
            f"and {same.shape[0]} labels"
        )
    kept = np.isfinite(left).all(axis=1) & np.isfinite(right).all(axis=1)
    fold_ids = folds if np.isscalar(folds) else np.asarray(folds).reshape(-1)[kept]
    scores, same = pair_scores(left[kept], right[kept], metric), same[kept]
    similarity = metric == "cosine"
    report = evaluation.evaluate_pairs(scores, same, folds=fold_ids, similarity=similarity)
    threshold = evaluation.best_threshold(scores, same, target_far=target_far, similarity=similarity)
    accepted = is_match(scores, threshold, metric)
    calibration = report.to_dict()
    calibration.pop("similarity")
    calibration["best_accuracy_threshold"] = calibration.pop("threshold")
    calibration.update(
        threshold=float(threshold),
        metric=metric,
        criterion="best accuracy" if target_far is None else f"highest TAR at FAR <= {target_far:g}",
        target_far=target_far,
        far=float(accepted[~same].mean()),
        tar=float(accepted[same].mean()),
        accuracy_at_threshold=float(np.mean(accepted == same)),
        **{"threshold_far_1e-3": evaluation.best_threshold(scores, same, target_far=1e-3, similarity=similarity)},
        excluded_pairs=int((~kept).sum()),
    )
    if roc_path is not None:
        calibration["roc_png"] = evaluation.plot_roc(report, roc_path)
    return calibration
