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
constant. For 1:N, where a stranger meets every enrolled person and false positives grow with the
gallery's size, :func:`calibrate_open_set` measures DIR at target FPIRs per gallery size on
development people, and :func:`open_set_threshold` picks the threshold for a gallery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from typing import Any, Mapping, Sequence

import numpy as np

from kerascnn.evaluation import unit_vectors
from kerascnn.errors import DatasetError, EmptyGalleryError, UnknownIdentityError

METRICS = ("cosine", "euclidean")
REDUCTIONS = ("best", "mean")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _probe(probe: Any) -> np.ndarray:
    probe = np.asarray(probe, dtype=np.float32)
    if probe.ndim == 2 and probe.shape[0] == 1:
        probe = probe[0]
    if probe.ndim != 1 or not np.all(np.isfinite(probe)):
        raise ValueError(f"the probe must be one finite embedding (d,), got shape {probe.shape}")
    return unit_vectors(probe)


def similarity_to_score(similarity: np.ndarray, metric: str) -> np.ndarray:
    """Cosine similarities of unit vectors as scores of ``metric``."""
    _check_metric(metric)
    similarity = np.asarray(similarity, dtype=np.float32)
    if metric == "cosine":
        return similarity
    return np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0)).astype(np.float32)


def pair_scores(left: np.ndarray, right: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Scores of row-aligned embedding pairs (``left[i]`` with ``right[i]``)."""
    left, right = unit_vectors(left), unit_vectors(right)
    return similarity_to_score(np.sum(left * right, axis=1), metric)


def is_match(score: float | np.ndarray, threshold: float, metric: str = "cosine"):
    """True where ``score`` is on the match side of ``threshold`` for ``metric``."""
    _check_metric(metric)
    return np.asarray(score) >= threshold if metric == "cosine" else np.asarray(score) <= threshold



@dataclass
class Verification:
    """The 1:1 decision. ``score`` is a similarity or a distance, by ``metric``.

    Attributes:
        name: the claimed identity.
        match: whether the probe is ``name``.
        score: the probe's score against ``name``'s templates.
        threshold: the threshold it was held to.
        metric: ``"cosine"`` or ``"euclidean"``.
        templates: how many templates ``name`` has.
        threshold_source: where the threshold came from (the high-level API and the CLI fill it).
        face: the probe's face (a :class:`~kerascnn.face.pipeline.FaceResult`), when a photo was given.
        decision_threshold: the :class:`~kerascnn.face.calibrations.DecisionThreshold` used, with
            its description in words, when the high-level API chose it (not in :meth:`to_dict`).
    """

    name: str
    match: bool
    score: float
    threshold: float
    metric: str
    templates: int
    threshold_source: dict | None = None
    face: Any = None
    decision_threshold: Any = None

    def to_dict(self) -> dict:
        """A JSON-ready dict (the CLI's ``--json``)."""
        out = {"decision": "match" if self.match else "no match", "name": self.name, "match": self.match,
               "score": round(self.score, 6), "threshold": self.threshold, "metric": self.metric,
               "templates": self.templates}
        return _with_context(out, self.threshold_source, self.face)


def _with_context(out: dict, threshold_source: dict | None, face: Any, **more: Any) -> dict:
    """``out`` plus the optional context of a decision (where its threshold came from, the faces used)."""
    if threshold_source is not None:
        out["threshold_source"] = threshold_source
    if face is not None:
        out["face"] = face.to_dict()
    out.update({k: v for k, v in more.items() if v is not None})
    return out


@dataclass
class Comparison:
    """Are two photos the same person? (:func:`kerascnn.face.compare`)

    Attributes:
        match: whether they are.
        score: their score (a similarity for ``cosine``, a distance for ``euclidean``).
        threshold: the threshold it was held to.
        metric: ``"cosine"`` or ``"euclidean"``.
        threshold_source: where the threshold came from (calibration file, model card or given).
        faces: the face used in each photo (:class:`~kerascnn.face.pipeline.FaceResult`).
    """

    match: bool
    score: float
    threshold: float
    metric: str
    threshold_source: dict
    faces: tuple

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"decision": "match" if self.match else "no match", "match": self.match,
                "score": round(self.score, 6), "threshold": self.threshold, "metric": self.metric,
                "threshold_source": self.threshold_source, "faces": [f.to_dict() for f in self.faces]}


@dataclass
class Candidate:
    name: str
    score: float


@dataclass
class Identification:
    """The 1:N decision: ``name`` is None when the best candidate is beyond the threshold.

    Attributes:
        recognized: whether the probe is one of the enrolled.
        name: who, or None for a stranger.
        score: the best candidate's score.
        threshold: the threshold it was held to.
        metric: ``"cosine"`` or ``"euclidean"``.
        candidates: the best identities, best first (one score each: its best template's).
        threshold_source: where the threshold came from (the high-level API and the CLI fill it).
        face: the probe's face (a :class:`~kerascnn.face.pipeline.FaceResult`), when a photo was given.
        operating_point: the 1:N operating point the threshold was chosen at (gallery size, FPIR).
        decision_threshold: the :class:`~kerascnn.face.calibrations.DecisionThreshold` used, with
            its description in words, when the high-level API chose it (not in :meth:`to_dict`).
    """

    recognized: bool
    name: str | None
    score: float
    threshold: float
    metric: str
    candidates: list[Candidate] = field(default_factory=list)
    threshold_source: dict | None = None
    face: Any = None
    operating_point: dict | None = None
    decision_threshold: Any = None

    def to_dict(self) -> dict:
        """A JSON-ready dict (the CLI's ``--json``)."""
        out = {"decision": self.name if self.recognized else "not recognized", "recognized": self.recognized,
               "name": self.name, "score": round(self.score, 6), "threshold": self.threshold,
               "metric": self.metric,
               "candidates": [{"name": c.name, "score": round(c.score, 6)} for c in self.candidates]}
        return _with_context(out, self.threshold_source, self.face, operating_point=self.operating_point)


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
    templates = unit_vectors(_templates_of(gallery_or_templates, name))
    if templates.shape[1] != probe.shape[0]:
        raise ValueError(f"probe has dimension {probe.shape[0]}, the templates of {name!r} {templates.shape[1]}")
    if reduce == "mean":
        similarity = float(unit_vectors(templates.mean(axis=0)) @ probe)
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
    best = np.array([np.max(unit_vectors(np.asarray(templates[n]).reshape(-1, probe.shape[0])) @ probe) for n in names])
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


# --- open-set (1:N) calibration ----------------------------------------------------------------
FPIRS = (1e-1, 1e-2, 1e-3)
DEFAULT_FPIR = 1e-2
MAX_DRAWS = 1000  # random galleries per size: more only repeat the same galleries' figures
MAX_SEARCHES = 1_000_000  # pooled searches per gallery size (time and memory grow with them)


def open_set_gallery_sizes(
    counts: Sequence[int],
    gallery_sizes: Sequence[int] | None = None,
    fpirs: Sequence[float] = FPIRS,
    enroll_per_person: int = 1,
    draws: int = 5,
    where: str | None = None,
) -> list[int]:
    """Check the arguments of :func:`calibrate_open_set` against what the data supports.

    Needs only the number of images of each person, so a command checks its arguments on the
    folder's listing before it embeds anything; :func:`calibrate_open_set` checks again on the
    images that gave a face.

    Args:
        counts: the number of images of each person.
        gallery_sizes, fpirs, enroll_per_person, draws: as :func:`calibrate_open_set` takes them.
        where: the data's name (a folder), put before the messages.

    Returns:
        The gallery sizes to calibrate, sorted (the default: 10, 100, 1000... up to what the data
        allows).

    Raises:
        DatasetError: fewer than two people, nobody with more than ``enroll_per_person`` images,
            a gallery size the data cannot fill (with a person left over for non-mated searches),
            more draws than :data:`MAX_DRAWS` or than :data:`MAX_SEARCHES` pooled searches allow.
        ValueError: a bad FPIR, ``draws`` or ``enroll_per_person``.
    """
    if enroll_per_person < 1 or draws < 1:
        raise ValueError(f"enroll_per_person and draws must be >= 1, got {enroll_per_person} and {draws}")
    if not fpirs or any(not 0 < f < 1 for f in fpirs):
        raise ValueError(f"every FPIR must be in (0, 1), got {list(fpirs)}")
    counts = np.asarray(counts, np.int64).reshape(-1)
    prefix = f"{where}: " if where else ""
    if len(counts) < 2:
        raise DatasetError(f"{prefix}open-set calibration needs at least 2 people (some enrolled, others not), "
                           f"got {len(counts)}")
    mateable = int(np.sum(counts > enroll_per_person))
    if mateable == 0:
        raise DatasetError(
            f"{prefix}open-set calibration needs people with at least {enroll_per_person + 1} images "
            f"({enroll_per_person} enrolled + 1 mated search); every one of the {len(counts)} people has at most "
            f"{counts.max()}")
    largest = min(mateable, len(counts) - 1)
    if gallery_sizes is None:
        gallery_sizes = [10 ** k for k in range(1, 7) if 10 ** k <= largest] or [largest]
    gallery_sizes = sorted({int(n) for n in gallery_sizes})
    too_big = [n for n in gallery_sizes if not 1 <= n <= largest]
    if too_big:
        raise DatasetError(
            f"{prefix}gallery sizes {too_big} cannot be drawn: {mateable} people have more than {enroll_per_person} "
            f"images and {len(counts)} people in all (one must stay out for non-mated searches): at most {largest}")
    most = max(1, min(MAX_DRAWS, MAX_SEARCHES // int(counts.sum())))
    if draws > most:
        raise DatasetError(
            f"{prefix}{draws} draws per gallery size are more than the data supports: at most {most} (each draw "
            f"searches up to {int(counts.sum()):,} images; a gallery size pools at most {MAX_SEARCHES:,} searches, "
            f"in at most {MAX_DRAWS} draws)")
    return gallery_sizes


def _identity_similarities(probes: np.ndarray, templates: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """``(probes, identities)``: each probe's best-template cosine similarity to each identity
    (``owner[t]`` is template ``t``'s identity; templates grouped by identity, in order)."""
    sims = probes @ templates.T
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    return np.maximum.reduceat(sims, starts, axis=1)


def _threshold_at_fpir(non_mated: np.ndarray, fpir: float) -> float:
    """The lowest similarity threshold ``t`` with ``mean(non_mated >= t) <= fpir``."""
    allowed = int(np.floor(fpir * len(non_mated) + 1e-9))  # searches allowed above the threshold
    ranked = np.sort(non_mated)[::-1]
    if allowed >= len(ranked):
        return float(ranked[-1])
    return float(np.nextafter(np.float32(ranked[allowed]), np.float32(np.inf)))


def calibrate_open_set(
    embeddings: np.ndarray,
    labels: Sequence,
    gallery_sizes: Sequence[int] | None = None,
    fpirs: Sequence[float] = FPIRS,
    enroll_per_person: int = 1,
    draws: int = 5,
    metric: str = "cosine",
    seed: int = 0,
    plot_path: str | os.PathLike | None = None,
) -> dict:
    """Calibrate open-set identification (1:N): DIR at target FPIRs, per gallery size.

    For each gallery size ``N`` and each of ``draws`` random draws: ``N`` people (among those
    with more than ``enroll_per_person`` images) are enrolled with ``enroll_per_person`` random
    images each; their other images are *mated* searches, every image of the people not
    enrolled a *non-mated* search. Each search's candidates are the enrolled identities, scored
    by their best template. Over the pooled draws, the threshold of a target FPIR is the lowest
    one at which at most that fraction of non-mated searches returns anyone (FPIR, the
    false-positive identification rate); DIR (the detection and identification rate) is the
    fraction of mated searches whose top-1 candidate is the right person and at or above the
    threshold. Use people the model was not trained on.

    An FPIR ``f`` needs at least ``1/f`` non-mated searches to be measured (better ``10/f``):
    operating points with fewer are kept with ``threshold`` None and the count needed.

    Args:
        embeddings: ``(n, d)`` embeddings (rows with NaN, faces not found, are left out).
        labels: the identity of each row.
        gallery_sizes: the ``N`` to calibrate; default 10, 100, 1000, ... up to what the data
            allows (fewer people than needed are left out).
        fpirs: the target FPIRs (each once: repeats are dropped).
        enroll_per_person: images enrolled per person (the others are mated searches).
        draws: random galleries per ``N`` (pooled; at most :data:`MAX_DRAWS`, and
            :data:`MAX_SEARCHES` searches in all).
        metric: the scale of the stored thresholds, ``"cosine"`` or ``"euclidean"`` (the cosine
            thresholds converted, to within float rounding).
        seed: seed of the draws.
        plot_path: write DIR against FPIR (one curve per ``N``) there as a PNG.

    Returns:
        A JSON-ready dict: ``metric``, ``enroll_per_person``, ``draws``, ``people``, ``images``,
        and ``operating_points``: one dict per (N, FPIR) with ``gallery_size``, ``fpir``,
        ``threshold`` (None when not measurable), ``dir``, ``dir_std`` (over the draws at the
        pooled threshold), ``fpir_measured``, ``mated_searches``, ``non_mated_searches``,
        ``non_mated_needed`` (``ceil(1/fpir)``), ``rank1`` (top-1 accuracy of mated searches,
        no threshold); ``plot_png`` with ``plot_path``.

    Raises:
        DatasetError: mismatched lengths, arguments the data cannot support
            (:func:`open_set_gallery_sizes`), or no operating point measurable.
        ValueError: a bad metric, FPIR, ``draws`` or ``enroll_per_person``.
    """
    _check_metric(metric)
    fpirs = list(dict.fromkeys(float(f) for f in fpirs))  # "--fpir 0.5 0.5": one row, not two
    embeddings = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels).reshape(-1)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise DatasetError(f"calibrate_open_set needs (n, d) embeddings and n labels, got {embeddings.shape} "
                           f"and {len(labels)} labels")
    kept = np.isfinite(embeddings).all(axis=1)
    embeddings, labels = unit_vectors(embeddings[kept]), labels[kept]
    people, person = np.unique(labels, return_inverse=True)
    counts = np.bincount(person, minlength=len(people))
    gallery_sizes = open_set_gallery_sizes(counts, gallery_sizes, fpirs, enroll_per_person, draws)
    mateable = np.flatnonzero(counts > enroll_per_person)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(person == p) for p in range(len(people))]
    points, curves = [], {}
    for n in gallery_sizes:
        mated_ok, mated_score, non_mated, mated_draw, non_mated_draw = [], [], [], [], []
        for draw in range(draws):
            enrolled = rng.choice(mateable, size=n, replace=False)
            is_enrolled = np.zeros(len(people), bool)
            is_enrolled[enrolled] = True
            templates, owner, probes, truth = [], [], [], []
            for slot, p in enumerate(enrolled):
                rows = rng.permutation(members[p])
                templates.append(rows[:enroll_per_person])
                owner += [slot] * enroll_per_person
                probes.append(rows[enroll_per_person:])
                truth += [slot] * (len(rows) - enroll_per_person)
            t = np.concatenate(templates)
            mated = np.concatenate(probes)
            strangers = np.flatnonzero(~is_enrolled[person])
            sims = _identity_similarities(embeddings[mated], embeddings[t], np.asarray(owner))
            mated_ok.append(sims.argmax(axis=1) == np.asarray(truth))
            mated_score.append(sims.max(axis=1))
            non_mated.append(_identity_similarities(embeddings[strangers], embeddings[t], np.asarray(owner)).max(axis=1))
            mated_draw.append(np.full(len(mated), draw))
            non_mated_draw.append(np.full(len(strangers), draw))
        ok, score, nm = np.concatenate(mated_ok), np.concatenate(mated_score), np.concatenate(non_mated)
        which = np.concatenate(mated_draw)
        for f in fpirs:
            point = {"gallery_size": n, "fpir": float(f), "threshold": None, "dir": None, "dir_std": None,
                     "fpir_measured": None, "mated_searches": int(len(ok)), "non_mated_searches": int(len(nm)),
                     "non_mated_needed": int(np.ceil(1 / f - 1e-9)), "rank1": float(ok.mean())}
            if len(nm) * f >= 1 - 1e-9:
                threshold = _threshold_at_fpir(nm, f)
                hit = ok & (score >= threshold)
                point.update(threshold=float(similarity_to_score(threshold, metric)), dir=float(hit.mean()),
                             dir_std=float(np.std([hit[which == d].mean() for d in range(draws)])),
                             fpir_measured=float(np.mean(nm >= threshold)))
            points.append(point)
        curves[n] = (ok, score, nm)
    if all(p["threshold"] is None for p in points):
        needed = max(p["non_mated_needed"] for p in points)
        raise DatasetError(
            f"no target FPIR can be measured: {min(p['non_mated_searches'] for p in points)} non-mated searches, an "
            f"FPIR of f needs at least 1/f (better 10/f; {needed} for {min(fpirs):g}): use more people not "
            f"enrolled, more draws or a larger FPIR")
    result = {"metric": metric, "enroll_per_person": int(enroll_per_person), "draws": int(draws), "seed": int(seed),
              "people": int(len(people)), "images": int(len(labels)), "excluded_images": int((~kept).sum()),
              "operating_points": points}
    if plot_path is not None:
        result["plot_png"] = plot_dir_fpir(curves, plot_path)
    return result


def dir_fpir_curve(mated_ok: np.ndarray, mated_score: np.ndarray, non_mated: np.ndarray):
    """``(fpir, dir)`` at every threshold equal to a non-mated search's score (similarities)."""
    thresholds = np.sort(non_mated)[::-1]
    fpir = np.arange(1, len(thresholds) + 1) / len(thresholds)
    correct = np.sort(mated_score[mated_ok])
    dir_ = (len(correct) - np.searchsorted(correct, thresholds, side="left")) / max(len(mated_ok), 1)
    return fpir, dir_


def plot_dir_fpir(curves: Mapping[int, tuple], path: str | os.PathLike) -> str:
    """Save DIR against FPIR (log axis), one curve per gallery size, as a PNG.

    Args:
        curves: ``{N: (mated_ok, mated_score, non_mated_score)}``.
        path: the PNG to write.

    Returns:
        ``path`` as a string.
    """
    from kerascnn.evaluation import agg_pyplot

    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for n, (ok, score, nm) in sorted(curves.items()):
        fpir, dir_ = dir_fpir_curve(ok, score, nm)
        ax.plot(fpir, dir_, label=f"N = {n} ({len(nm)} non-mated searches)")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false-positive identification rate (FPIR)")
    ax.set_ylabel("detection and identification rate (DIR)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)
    return os.fspath(path)


@dataclass
class OperatingPoint:
    """The 1:N threshold chosen for a gallery size and a target FPIR, and why."""

    threshold: float
    metric: str
    fpir: float
    gallery_size: int
    calibrated_sizes: list[int]
    how: str
    dir: float | None = None
    source: str | None = None

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "metric": self.metric, "fpir": self.fpir,
                "gallery_size": self.gallery_size, "calibrated_sizes": self.calibrated_sizes, "how": self.how,
                "dir": self.dir, "source": self.source}

    def describe(self) -> str:
        return (f"1:N operating point: FPIR {self.fpir:g} for a gallery of {self.gallery_size}, {self.metric} threshold "
                f"{self.threshold:.4f} ({self.how}; calibrated on development data: {self.source or 'source not recorded'})")


def open_set_threshold(calibration: Mapping, gallery_size: int, fpir: float = DEFAULT_FPIR) -> OperatingPoint:
    """The threshold for a gallery of ``gallery_size`` people at a target FPIR.

    Between two calibrated sizes the threshold is interpolated linearly in ``log(N)``; below the
    smallest, the smallest size's threshold is used (stricter than needed); above the largest,
    the largest size's (the FPIR will then exceed the target). ``how`` says which.

    Args:
        calibration: the result of :func:`calibrate_open_set` (as stored in a model's card).
        gallery_size: the number of enrolled identities.
        fpir: the target FPIR, one of the calibrated ones.

    Returns:
        An :class:`OperatingPoint`.

    Raises:
        DatasetError: ``fpir`` was not calibrated, or was not measurable at any size.
        ValueError: ``gallery_size`` < 1.
    """
    if gallery_size < 1:
        raise ValueError(f"gallery_size must be >= 1, got {gallery_size}")
    points = calibration.get("operating_points", [])
    fpirs = sorted({p["fpir"] for p in points if p.get("threshold") is not None}, reverse=True)
    usable = sorted((p for p in points if p.get("threshold") is not None and np.isclose(p["fpir"], fpir, rtol=1e-6)),
                    key=lambda p: p["gallery_size"])
    if not usable:
        raise DatasetError(f"no 1:N operating point at FPIR {fpir:g} in the calibration (calibrated and measured: "
                           f"{', '.join(f'{f:g}' for f in fpirs) or 'none'})")
    sizes = [p["gallery_size"] for p in usable]
    metric = calibration.get("metric", "cosine")
    source = calibration.get("source")
    if gallery_size in sizes:
        p = usable[sizes.index(gallery_size)]
        return OperatingPoint(p["threshold"], metric, fpir, gallery_size, sizes, f"calibrated at N={gallery_size}",
                              p["dir"], source)
    if gallery_size < sizes[0]:
        p = usable[0]
        how = (f"a gallery of {gallery_size} is below the calibrated range {sizes[0]}..{sizes[-1]}: using the N={sizes[0]} "
               f"operating point (stricter than needed)")
        return OperatingPoint(p["threshold"], metric, fpir, gallery_size, sizes, how, p["dir"], source)
    if gallery_size > sizes[-1]:
        p = usable[-1]
        how = (f"a gallery of {gallery_size} is above the calibrated range {sizes[0]}..{sizes[-1]}: using the "
               f"N={sizes[-1]} operating point (the FPIR will exceed {fpir:g}; calibrate with larger galleries)")
        return OperatingPoint(p["threshold"], metric, fpir, gallery_size, sizes, how, p["dir"], source)
    hi = int(np.searchsorted(sizes, gallery_size))
    lo_p, hi_p = usable[hi - 1], usable[hi]
    w = (np.log(gallery_size) - np.log(lo_p["gallery_size"])) / (np.log(hi_p["gallery_size"]) - np.log(lo_p["gallery_size"]))
    threshold = float((1 - w) * lo_p["threshold"] + w * hi_p["threshold"])
    how = f"interpolated in log N between N={lo_p['gallery_size']} and N={hi_p['gallery_size']}"
    return OperatingPoint(threshold, metric, fpir, gallery_size, sizes, how, None, source)
