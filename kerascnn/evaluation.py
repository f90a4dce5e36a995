"""Verification metrics of labelled pairs: ROC, AUC, EER, TAR at FAR, LFW-protocol k-fold accuracy.

Everything works on NumPy arrays of one value per pair and a boolean ``same`` (True for a
genuine pair, same identity; False for an impostor pair). Values are **distances** by default
(a pair is declared "same" when ``distance <= threshold``); pass ``similarity=True`` for scores
where higher means more alike (``score >= threshold``). Thresholds are always returned in the
caller's units.

Example:
    >>> from kerascnn.evaluation import pair_distances, evaluate_pairs, plot_roc
    >>> d = pair_distances(emb_left, emb_right)               # (n,) Euclidean distances
    >>> report = evaluate_pairs(d, pairs.same, folds=pairs.fold)  # LFW protocol
    >>> print(report.accuracy, report.tar_at_far[1e-3])
    >>> plot_roc(report, "roc.png")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from kerascnn.errors import DatasetError

METRICS = ("euclidean", "squared_euclidean", "cosine")


def unit_vectors(x) -> np.ndarray:
    """Vectors (along the last axis) scaled to unit length, as float32; zero vectors stay zero.

    Args:
        x: ``(..., d)`` array-like.

    Returns:
        The float32 array of unit vectors.
    """
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pair_distances(a, b, metric: str = "euclidean") -> np.ndarray:
    """Row-wise distances between two arrays of embeddings.

    Args:
        a, b: ``(n, dim)`` arrays (row ``i`` of ``a`` is paired with row ``i`` of ``b``).
        metric: ``"euclidean"``, ``"squared_euclidean"`` or ``"cosine"`` (``1 - cos``).

    Returns:
        ``(n,)`` float64 distances.

    Raises:
        ValueError: unknown ``metric``.
        DatasetError: ``a`` and ``b`` are not 2-D arrays of the same shape.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(map(repr, METRICS))}, got {metric!r}")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise DatasetError(f"expected two (n, dim) embedding arrays of the same shape, got {a.shape} and {b.shape}")
    if metric == "cosine":
        na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
        nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
        return 1.0 - np.sum(a * b, axis=1) / (na * nb)
    d2 = np.sum((a - b) ** 2, axis=1)
    return d2 if metric == "squared_euclidean" else np.sqrt(d2)


def _binary_labels(same: np.ndarray) -> np.ndarray:
    """Pair labels as booleans, accepting what scikit-learn's ``roc_curve`` accepts without a
    ``pos_label``: booleans, ``{0, 1}`` or ``{-1, 1}`` (1 = genuine).

    Raises:
        DatasetError: other labels (``{0, 1, 2}``: scikit-learn's "multiclass format is not
            supported"; strings), listing the values seen.
    """
    if same.dtype == bool:
        return same
    seen = set(np.unique(same).tolist()) if np.issubdtype(same.dtype, np.number) else None
    if seen is None or not (seen <= {0, 1} or seen <= {-1, 1}):
        shown = sorted(seen) if seen is not None else np.unique(same).tolist()[:10]
        raise DatasetError(
            "pair labels must be two classes, True/False, {0, 1} or {-1, 1} (1 = genuine), "
            f"got the values {shown}"
        )
    return same == 1


def _check_pairs(values, same) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, np.float64).reshape(-1)
    same = np.asarray(same).reshape(-1)
    if values.shape != same.shape:
        raise DatasetError(f"expected one label per pair: {values.size} values but {same.size} labels")
    if not np.all(np.isfinite(values)):
        raise DatasetError(f"distances must be finite; {int(np.sum(~np.isfinite(values)))} are NaN or infinite")
    same = _binary_labels(same)
    if same.all() or not same.any():
        raise DatasetError(
            f"need both genuine and impostor pairs, got {int(same.sum())} genuine and {int((~same).sum())} impostor"
        )
    return values, same


def _scores(values, similarity: bool) -> np.ndarray:
    """Scores where higher means "same"."""
    return values if similarity else -values


def _roc_points(scores, same):
    """Cumulative (false, true) positives when accepting scores >= each distinct value, descending."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], same[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct value
    tp = np.cumsum(y)[last]
    fp = last + 1 - tp
    return np.r_[0, fp], np.r_[0, tp], s[last]


def roc_curve(values, same, similarity: bool = False):
    """The ROC curve: false accept rate against true accept rate at every distinct threshold.

    Args:
        values: distances (or similarities with ``similarity=True``), one per pair.
        same: True for genuine pairs (or 1 in ``{0, 1}`` or ``{-1, 1}`` labels, as scikit-learn).
        similarity: the values are similarities (higher means same).

    Returns:
        ``(far, tar, thresholds)``: increasing FAR and TAR, starting at ``(0, 0)`` (threshold
        ``-inf`` for distances, ``+inf`` for similarities: nothing accepted) and ending at
        ``(1, 1)``; point ``i`` accepts the pairs with ``distance <= thresholds[i]``.

    Raises:
        DatasetError: lengths differ, non-finite values, labels other than two classes, or
            only one kind of pair (scikit-learn's ``roc_curve`` and ``roc_auc_score`` warn and
            give NaN there; kerascnn raises, on purpose: no metric has a value then).
    """
    values, same = _check_pairs(values, same)
    fp, tp, s = _roc_points(_scores(values, similarity), same)
    thresholds = np.r_[np.inf, s]
    return fp / (~same).sum(), tp / same.sum(), thresholds if similarity else -thresholds


def roc_auc(values, same, similarity: bool = False) -> float:
    """Area under the ROC curve (trapezoids; tied values count one half, as Mann-Whitney's U).

    Raises:
        DatasetError: as :func:`roc_curve`.
    """
    far, tar, _ = roc_curve(values, same, similarity)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def eer(values, same, similarity: bool = False) -> float:
    """Equal error rate: where the false accept rate equals the false reject rate (1 - TAR).

    Interpolated linearly between the two ROC points that enclose the crossing.

    Raises:
        DatasetError: as :func:`roc_curve`.
    """
    far, tar, _ = roc_curve(values, same, similarity)
    frr = 1.0 - tar
    i = int(np.argmax(far >= frr))  # first point past the crossing (far - frr grows; i >= 1)
    gap_before, gap_after = frr[i - 1] - far[i - 1], far[i] - frr[i]
    t = gap_before / (gap_before + gap_after) if gap_before + gap_after > 0 else 0.0
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def tar_at_far(values, same, far: float | Sequence[float] = (1e-2, 1e-3), similarity: bool = False) -> dict[float, float]:
    """True accept rate at given false accept rates.

    For each target, the highest TAR of a threshold whose FAR does not exceed it (no
    interpolation: with ``n`` impostor pairs, FARs below ``1/n`` give the TAR at FAR 0).

    Returns:
        ``{target_far: tar}``.

    Raises:
        DatasetError: as :func:`roc_curve`.
    """
    fars, tars, _ = roc_curve(values, same, similarity)
    targets = [far] if np.isscalar(far) else list(far)
    return {float(f): float(tars[fars <= f + 1e-12].max()) for f in targets}


def best_threshold(values, same, target_far: float | None = None, similarity: bool = False) -> float:
    """The threshold of best accuracy, or of the highest TAR with FAR <= ``target_far``.

    The threshold lies halfway between the last accepted value and the next one, so that it
    generalises symmetrically; among equally good thresholds the strictest is chosen.

    Args:
        values: distances (or similarities).
        same: True for genuine pairs.
        target_far: None for the best accuracy; else the false accept rate not to exceed.
        similarity: the values are similarities.

    Returns:
        The threshold: "same" when ``distance <= threshold`` (``similarity >= threshold``).

    Raises:
        DatasetError: as :func:`roc_curve`.
    """
    values, same = _check_pairs(values, same)
    scores = _scores(values, similarity)
    fp, tp, s = _roc_points(scores, same)
    if target_far is None:
        correct = tp + ((~same).sum() - fp)
        i = int(np.argmax(correct))
    else:
        ok = fp <= target_far * (~same).sum() + 1e-9
        i = int(np.flatnonzero(ok)[np.argmax(tp[ok])])
    # point i accepts scores >= s[i - 1] (nothing at i = 0); cut halfway to the next value
    upper = s[i - 1] if i > 0 else s[0] + 1.0
    lower = s[i] if i < s.size else s[-1] - 1.0
    threshold = (upper + lower) / 2
    return float(threshold if similarity else -threshold)


def accuracy(values, same, threshold: float, similarity: bool = False) -> float:
    """Fraction of pairs classified correctly at ``threshold``."""
    values, same = np.asarray(values, np.float64).reshape(-1), np.asarray(same, bool).reshape(-1)
    accepted = values >= threshold if similarity else values <= threshold
    return float(np.mean(accepted == same))


@dataclass
class KFoldResult:
    """k-fold accuracy: ``mean`` and ``std`` (population) of the per-fold ``accuracies``;
    ``thresholds[i]`` was chosen on the other folds and applied to fold ``i``."""

    mean: float
    std: float
    accuracies: list[float]
    thresholds: list[float]


def _fold_ids(n: int, folds) -> np.ndarray:
    if np.isscalar(folds):
        k = int(folds)
        if not 2 <= k <= n:
            raise DatasetError(f"folds must be between 2 and the number of pairs ({n}), got {k}")
        return np.repeat(np.arange(k), [len(c) for c in np.array_split(np.arange(n), k)])
    ids = np.asarray(folds).reshape(-1)
    if ids.size != n:
        raise DatasetError(f"expected one fold id per pair: {n} pairs but {ids.size} fold ids")
    if np.unique(ids).size < 2:
        raise DatasetError(f"need at least 2 folds, got fold ids {np.unique(ids).tolist()}")
    return ids


def kfold_accuracy(values, same, folds=10, similarity: bool = False) -> KFoldResult:
    """Accuracy with the threshold chosen on the other folds (the LFW View 2 protocol).

    Args:
        values: distances (or similarities), one per pair.
        same: True for genuine pairs.
        folds: the number of folds (contiguous runs of pairs in order, as LFW's ``pairs.txt``
            lists them) or one fold id per pair (e.g. ``PairList.fold``).
        similarity: the values are similarities.

    Returns:
        A :class:`KFoldResult`.

    Raises:
        DatasetError: bad lengths or folds, or training folds without both kinds of pair.
    """
    values, same = _check_pairs(values, same)
    ids = _fold_ids(values.size, folds)
    accuracies, thresholds = [], []
    for fold in np.unique(ids):
        test = ids == fold
        threshold = best_threshold(values[~test], same[~test], similarity=similarity)
        thresholds.append(threshold)
        accuracies.append(accuracy(values[test], same[test], threshold, similarity))
    return KFoldResult(float(np.mean(accuracies)), float(np.std(accuracies)), accuracies, thresholds)


@dataclass
class VerificationReport:
    """The verification figures of a set of labelled pairs (see :func:`evaluate_pairs`).

    Attributes:
        accuracy, accuracy_std: k-fold accuracy (threshold chosen on the other folds).
        auc: area under the ROC curve.
        eer: equal error rate.
        tar_at_far: ``{far: tar}``.
        threshold: best-accuracy threshold over all pairs (the one to deploy).
        fold_accuracies, fold_thresholds: per fold.
        num_genuine, num_impostor: pair counts.
        similarity: the values were similarities rather than distances.
        far, tar: the ROC curve (not in :meth:`to_dict`).
    """

    accuracy: float
    accuracy_std: float
    auc: float
    eer: float
    tar_at_far: dict[float, float]
    threshold: float
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    num_genuine: int
    num_impostor: int
    similarity: bool = False
    far: np.ndarray = field(default=None, repr=False)
    tar: np.ndarray = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The figures as JSON-ready builtins (``tar_at_far`` keys as strings like ``"0.001"``)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("far", "tar")}
        out["tar_at_far"] = {repr(float(k)): float(v) for k, v in self.tar_at_far.items()}
        return out


def evaluate_pairs(values, same, folds=10, far: Sequence[float] = (1e-2, 1e-3), similarity: bool = False) -> VerificationReport:
    """All verification figures of labelled pairs: k-fold accuracy, AUC, EER, TAR at FAR, threshold.

    Args:
        values: distances (or similarities with ``similarity=True``), one per pair.
        same: True for genuine pairs.
        folds: number of folds or one fold id per pair (see :func:`kfold_accuracy`).
        far: the false accept rates at which to report the TAR.
        similarity: the values are similarities.

    Returns:
        A :class:`VerificationReport`.

    Raises:
        DatasetError: as :func:`kfold_accuracy`.
    """
    values, same = _check_pairs(values, same)
    folds_result = kfold_accuracy(values, same, folds, similarity)
    fars, tars, _ = roc_curve(values, same, similarity)
    return VerificationReport(
        accuracy=folds_result.mean,
        accuracy_std=folds_result.std,
        auc=roc_auc(values, same, similarity),
        eer=eer(values, same, similarity),
        tar_at_far=tar_at_far(values, same, far, similarity),
        threshold=best_threshold(values, same, similarity=similarity),
        fold_accuracies=folds_result.accuracies,
        fold_thresholds=folds_result.thresholds,
        num_genuine=int(same.sum()),
        num_impostor=int((~same).sum()),
        similarity=similarity,
        far=fars,
        tar=tars,
    )


def agg_pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (plots are written as PNG, never shown).

    Returns:
        The ``matplotlib.pyplot`` module.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(report_or_curve, path: str | os.PathLike, label: str | None = None) -> str:
    """Save the ROC curve (TAR against FAR, log FAR axis) as a PNG.

    Args:
        report_or_curve: a :class:`VerificationReport` or a ``(far, tar)`` pair of arrays.
        path: the PNG to write.
        label: legend text (default: the AUC when a report is given).

    Returns:
        ``path`` as a string.
    """
    if isinstance(report_or_curve, VerificationReport):
        far, tar = report_or_curve.far, report_or_curve.tar
        label = label or f"AUC {report_or_curve.auc:.4f}, EER {report_or_curve.eer:.2%}"
    else:
        far, tar = (np.asarray(a, np.float64) for a in report_or_curve)
    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    positive = far > 0
    ax.plot(far[positive], tar[positive], label=label)
    ax.set_xscale("log")
    ax.set_xlim(max(far[positive].min(), 1e-4) if positive.any() else 1e-4, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.grid(True, which="both", alpha=0.3)
    if label:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)
    return os.fspath(path)


def plot_distance_histograms(values, same, threshold: float | None, path: str | os.PathLike, bins: int = 50) -> str:
    """Save the genuine and impostor distance histograms (and the threshold) as a PNG.

    Args:
        values: distances (or similarities), one per pair.
        same: True for genuine pairs.
        threshold: drawn as a vertical line when given.
        path: the PNG to write.
        bins: number of histogram bins.

    Returns:
        ``path`` as a string.

    Raises:
        DatasetError: as :func:`roc_curve`.
    """
    values, same = _check_pairs(values, same)
    plt = agg_pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    edges = np.histogram_bin_edges(values, bins=bins)
    ax.hist(values[same], bins=edges, alpha=0.6, label=f"genuine ({int(same.sum())})", density=True)
    ax.hist(values[~same], bins=edges, alpha=0.6, label=f"impostor ({int((~same).sum())})", density=True)
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("distance")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)
    return os.fspath(path)


def impostor_genuine_scores(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of every pair of images, and whether each pair is the same person.

    Args:
        embeddings: ``(n, d)`` unit vectors.
        labels: ``(n,)`` identity of each vector.

    Returns:
        ``(scores, same)`` over the ``n (n - 1) / 2`` pairs ``i < j``.
    """
    sims = embeddings @ embeddings.T
    upper = np.triu_indices(len(labels), 1)
    return sims[upper], labels[upper[0]] == labels[upper[1]]
