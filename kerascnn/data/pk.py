"""P x K batches for online triplet mining: P identities, K images of each, in every batch.

Online mining (:class:`kerascnn.losses.TripletLoss`) needs positives in each batch; random
batches of a face dataset, where most people have one or two images, have almost none. A P x K
batch (Hermans et al. 2017) guarantees ``P * K * (K - 1)`` anchor-positive pairs.

**Identities with fewer than K images** (the documented rule, ``min_images_rule``):

- ``"replace"`` (default): every identity with at least 2 images can be drawn; one with fewer
  than K images contributes all its images once, topped up to K by drawing its images again
  at random (duplicates, made different by the augmentation). Identities with a single image
  are never drawn (they cannot give an anchor-positive pair).
- ``"drop"``: only identities with at least K images are drawn, always without replacement.

Identities are drawn in a shuffled order that covers every eligible identity before any is
drawn again (like an epoch over identities), never twice in one batch. Everything is
reproducible from ``seed``: the same seed gives the same sequence of batches, and successive
epochs of one dataset draw new batches.

Example:
    >>> from kerascnn.data import scan_folder
    >>> from kerascnn.data.pk import pk_batches
    >>> ds = pk_batches(scan_folder("../shared/data/lfw/images"), p=32, k=4, image_size=112,
    ...                 seed=0, augment="face", preprocessing="tf")
    >>> model.fit(ds, epochs=20)   # model compiled with TripletLoss
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from kerascnn.backends import require_tensorflow
from kerascnn.data.folders import FolderDataset
from kerascnn.errors import DatasetError

MIN_IMAGES_RULES = ("replace", "drop")


class PKSampler:
    """Draws index batches of P identities x K images from an array of labels (NumPy level).

    Use it directly on in-memory arrays (``images[sampler.sample()]``), or through
    :func:`pk_batches_from_arrays` / :func:`pk_batches`.

    Args:
        labels: ``(n,)`` integer identity of each image.
        p: identities per batch.
        k: images per identity (>= 2).
        seed: seed of the random draws (None: not reproducible).
        min_images_rule: ``"replace"`` or ``"drop"`` (see the module docstring).

    Attributes:
        classes: the eligible identities (label values), sorted.
        indices: the indices of the images of the eligible identities, sorted.
        steps_per_epoch: batches that draw about every eligible image once.

    Raises:
        ValueError: ``p`` < 1, ``k`` < 2 or an unknown ``min_images_rule``.
        DatasetError: fewer than ``p`` eligible identities (the message gives the counts).
    """

    def __init__(self, labels, p: int, k: int, seed: int | None = None, min_images_rule: str = "replace"):
        if p < 1:
            raise ValueError(f"p (identities per batch) must be >= 1, got {p}")
        if k < 2:
            raise ValueError(f"k (images per identity) must be >= 2 to give positive pairs, got {k}")
        if min_images_rule not in MIN_IMAGES_RULES:
            raise ValueError(f"min_images_rule must be one of {MIN_IMAGES_RULES}, got {min_images_rule!r}")
        labels = np.asarray(labels).reshape(-1)
        self.p, self.k, self.min_images_rule = int(p), int(k), min_images_rule
        classes, counts = np.unique(labels, return_counts=True)
        minimum = k if min_images_rule == "drop" else 2
        self.classes = classes[counts >= minimum]
        if self.classes.size < p:
            raise DatasetError(
                f"P x K batches need at least p={p} identities with >= {minimum} images "
                f"(min_images_rule={min_images_rule!r}); the labels have {self.classes.size} "
                f"(of {classes.size} identities)"
            )
        order = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[order], self.classes)
        self._members = {
            int(c): order[s:s + n] for c, s, n in zip(self.classes, starts, counts[np.isin(classes, self.classes)])
        }
        self.indices = np.sort(np.concatenate(list(self._members.values())))
        self.steps_per_epoch = max(1, self.indices.size // (p * k))
        self._rng = np.random.default_rng(seed)
        self._queue: list[int] = []

    def _next_identities(self) -> list[int]:
        while len(self._queue) < self.p:  # a new permutation; the leftovers' repeats go last
            left = set(self._queue)
            fresh = [int(c) for c in self._rng.permutation(self.classes)]
            self._queue += [c for c in fresh if c not in left] + [c for c in fresh if c in left]
        chosen, self._queue = self._queue[:self.p], self._queue[self.p:]
        return chosen

    def _images_of(self, identity: int) -> np.ndarray:
        members = self._members[identity]
        if members.size >= self.k:
            return self._rng.choice(members, self.k, replace=False)
        extra = self._rng.choice(members, self.k - members.size, replace=True)
        return np.r_[self._rng.permutation(members), extra]

    def sample(self) -> np.ndarray:
        """One batch: ``p * k`` indices into ``labels``, identity by identity (K consecutive)."""
        return np.concatenate([self._images_of(c) for c in self._next_identities()])

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.sample()


def _finish_fn(augment: Any, image_size: tuple[int, int], seed: int | None, preprocessing: str | None):
    from kerascnn.data.pipeline import preprocess, resolve_preprocessing

    mode = resolve_preprocessing(preprocessing)
    layer = None
    if isinstance(augment, (str, list, tuple)):
        from kerascnn.data.augment import build_augmentation

        layer = build_augmentation(augment, image_size, seed)
    elif augment is not None:
        if not callable(augment):
            raise ValueError(f"augment must be None, a preset name, a list of layers or a layer, got {augment!r}")
        layer = augment

    def finish(images, labels):
        images = tf.cast(images, tf.float32)
        if layer is not None:
            images = layer(images, training=True)
        return preprocess(images, mode), labels

    return finish


def pk_batches_from_arrays(
    images: np.ndarray,
    labels,
    p: int,
    k: int,
    seed: int | None = 0,
    augment: Any = None,
    preprocessing: str | None = "none",
    steps_per_epoch: int | None = None,
    min_images_rule: str = "replace",
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """P x K batches of in-memory images (e.g. pre-aligned face crops).

    Args:
        images: ``(n, h, w, c)`` array (``uint8`` 0..255, or float).
        labels: ``(n,)`` identities.
        p, k, seed, min_images_rule: as :class:`PKSampler`.
        augment: ``None``, a preset name or list for
            :func:`kerascnn.data.augment.build_augmentation`, or a layer / callable applied to
            each float32 0..255 batch in training mode.
        preprocessing: a mode of ``kerascnn.data.pipeline.PREPROCESSING_MODES`` or a registry
            model name (``"none"``: float32 0..255).
        steps_per_epoch: batches per pass over the dataset (default: about one draw of every
            eligible image). Each pass draws new batches.
        num_parallel_calls: parallel augmentation calls (1 makes augmentation reproducible).

    Returns:
        A ``tf.data.Dataset`` of ``(images float32 (p*k, h, w, c), labels int32 (p*k,))``.

    Raises:
        DatasetError: ``images`` and ``labels`` differ in length, or too few identities.
        ValueError: bad ``p``, ``k``, ``min_images_rule`` or ``augment``.
    """
    require_tensorflow("kerascnn.data.pk_batches_from_arrays")
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1).astype(np.int32)
    if images.ndim != 4 or images.shape[0] != labels.size:
        raise DatasetError(
            f"expected images (n, h, w, c) and n labels, got images {images.shape} and {labels.size} labels"
        )
    sampler = PKSampler(labels, p, k, seed, min_images_rule)
    steps = steps_per_epoch or sampler.steps_per_epoch

    def generate():
        for _ in range(steps):
            idx = sampler.sample()
            yield images[idx], labels[idx]

    spec = (
        tf.TensorSpec((p * k, *images.shape[1:]), tf.as_dtype(images.dtype)),
        tf.TensorSpec((p * k,), tf.int32),
    )
    ds = tf.data.Dataset.from_generator(generate, output_signature=spec)
    finish = _finish_fn(augment, images.shape[1:3], seed, preprocessing)
    ds = ds.map(finish, num_parallel_calls=num_parallel_calls)
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def load_images(dataset: FolderDataset, image_size: int | tuple[int, int], channels: int = 3) -> np.ndarray:
    """Decode and resize every image of a folder dataset once, as a ``uint8`` array in memory.

    Uses :func:`kerascnn.data.pipeline.make_dataset` (same decoder, resizing and bad-file
    checks as every kerascnn pipeline).

    Returns:
        ``(len(dataset), h, w, channels)`` uint8 array in ``dataset.paths`` order.
    """
    from kerascnn.data.pipeline import make_dataset

    ds = make_dataset(dataset.paths, image_size=image_size, batch_size=256, channels=channels)
    return np.concatenate([np.asarray(batch) for batch in ds]).astype(np.uint8)


def pk_batches(
    dataset: FolderDataset,
    p: int,
    k: int,
    image_size: int | tuple[int, int],
    seed: int | None = 0,
    augment: Any = None,
    preprocessing: str | None = "none",
    steps_per_epoch: int | None = None,
    min_images_rule: str = "replace",
    channels: int = 3,
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """P x K batches of a folder dataset, for ``model.fit`` with an online triplet loss.

    The images of the eligible identities are decoded and resized once and kept in memory as
    ``uint8`` (about ``n * h * w * 3`` bytes: 340 MB for 9,000 faces at 112 x 112); batches are
    drawn from them, then augmented and normalised per batch.

    Args:
        dataset: a :class:`~kerascnn.data.folders.FolderDataset` (``scan_folder(root)``).
        p, k, seed, min_images_rule: as :class:`PKSampler`.
        image_size: output ``(height, width)`` or one int.
        augment, preprocessing, steps_per_epoch, num_parallel_calls: as
            :func:`pk_batches_from_arrays`.
        channels: 3 (RGB) or 1 (grey).

    Returns:
        A ``tf.data.Dataset`` of ``(images float32 (p*k, h, w, channels), labels int32)``,
        labels being ``dataset``'s class indices.

    Raises:
        DatasetError: too few eligible identities.
        ImageReadError: an unreadable image file (named).
        ValueError: bad arguments.
    """
    require_tensorflow("kerascnn.data.pk_batches")
    subset = dataset.subset(PKSampler(dataset.labels, p, k, None, min_images_rule).indices)
    images = load_images(subset, image_size, channels)
    return pk_batches_from_arrays(
        images, subset.labels, p, k, seed, augment, preprocessing, steps_per_epoch, min_images_rule,
        num_parallel_calls,
    )
