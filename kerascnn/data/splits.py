"""Deterministic train/val/test splits of a :class:`FolderDataset` from a seed.

- :func:`stratified_split`: every class is split with the same fractions (classification:
  the same classes in every part, labels unchanged).
- :func:`identity_split`: whole classes go to one part (verification / embeddings: the people
  of the test part are never seen in training); each part's labels index its own classes.

Example:
    >>> from kerascnn.data import scan_folder, stratified_split, identity_split
    >>> train, val, test = stratified_split(scan_folder("../shared/data/orl"), (0.8, 0.1, 0.1), seed=0)
    >>> train_ids, test_ids = identity_split(scan_folder("../shared/data/orl"), (0.75, 0.25), seed=0)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kerascnn.data.folders import FolderDataset
from kerascnn.errors import DatasetError


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) < 2 or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise DatasetError(f"split fractions must be 2 or more non-negative numbers summing to 1, got {list(fractions)}")
    return f


def _counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Part sizes of ``n`` items: rounded cumulative fractions (they always sum to ``n``)."""
    edges = np.round(np.cumsum(fractions) * n).astype(int)
    return np.diff(np.concatenate([[0], edges]))


def stratified_split(dataset: FolderDataset, fractions: Sequence[float] = (0.8, 0.2), seed: int = 0) -> tuple[FolderDataset, ...]:
    """Split every class with the same fractions.

    Each class's images are shuffled with ``seed`` and cut at the rounded cumulative fractions,
    so a class of ``n`` images gives parts of sizes that sum to ``n``; a class too small for a
    part contributes nothing to it. Class names and labels are kept in every part.

    Args:
        dataset: the dataset to split.
        fractions: fraction of each part, e.g. ``(0.8, 0.1, 0.1)``; they sum to 1.
        seed: seed of the shuffle; the same seed gives the same split.

    Returns:
        One :class:`FolderDataset` per fraction, images in the dataset's order.

    Raises:
        DatasetError: fractions that are negative or do not sum to 1.
    """
    f = _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in f]
    for label in range(dataset.num_classes):
        members = rng.permutation(np.flatnonzero(dataset.labels == label))
        start = 0
        for part, count in zip(parts, _counts(len(members), f)):
            part.extend(members[start:start + count].tolist())
            start += count
    return tuple(dataset.subset(sorted(part)) for part in parts)


def identity_split(dataset: FolderDataset, fractions: Sequence[float] = (0.8, 0.2), seed: int = 0) -> tuple[FolderDataset, ...]:
    """Split the classes (identities): each class goes whole to one part.

    Args:
        dataset: the dataset to split.
        fractions: fraction of the classes in each part; they sum to 1.
        seed: seed of the class shuffle; the same seed gives the same split.

    Returns:
        One :class:`FolderDataset` per fraction; each has only its classes, in the dataset's
        order, and labels ``0..k-1`` indexing them.

    Raises:
        DatasetError: bad fractions, or a non-zero fraction that gets no class (too few classes).
    """
    f = _check_fractions(fractions)
    order = np.random.default_rng(seed).permutation(dataset.num_classes)
    counts = _counts(dataset.num_classes, f)
    if ((counts == 0) & (f > 0)).any():
        raise DatasetError(
            f"cannot split {dataset.num_classes} classes into parts of fractions {list(fractions)}: "
            f"a part would get no class (sizes {counts.tolist()})"
        )
    parts, start = [], 0
    for count in counts:
        classes = np.sort(order[start:start + count])
        start += count
        parts.append(_select_classes(dataset, classes))
    return tuple(parts)


def _select_classes(dataset: FolderDataset, classes: np.ndarray) -> FolderDataset:
    """The images of ``classes`` (old label indices), relabelled ``0..len(classes)-1``."""
    remap = np.full(dataset.num_classes, -1, dtype=np.int32)
    remap[classes] = np.arange(len(classes), dtype=np.int32)
    idx = np.flatnonzero(remap[dataset.labels] >= 0)
    return FolderDataset(
        dataset.root, [dataset.paths[i] for i in idx], remap[dataset.labels[idx]],
        [dataset.class_names[c] for c in classes],
    )
