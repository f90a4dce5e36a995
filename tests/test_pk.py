"""kerascnn.data.pk: P x K sampling, its rule for small identities, tf.data batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from kerascnn.data.folders import scan_folder
from kerascnn.data.pk import PKSampler, pk_batches, pk_batches_from_arrays
from kerascnn.errors import DatasetError


def labels_with_counts(counts):
    """Labels where identity ``i`` has ``counts[i]`` images, shuffled."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(0).permutation(labels)


def check_pk(batch_labels, p, k):
    groups = batch_labels.reshape(p, k)
    assert np.all(groups == groups[:, :1]), "each run of K images is one identity"
    assert len(set(groups[:, 0])) == p, "P distinct identities"


def test_batches_are_p_identities_by_k_images():
    labels = labels_with_counts([5, 6, 4, 8, 4, 7, 9, 4])
    sampler = PKSampler(labels, p=4, k=4, seed=0)
    for _ in range(10):
        idx = sampler.sample()
        assert idx.shape == (16,)
        check_pk(labels[idx], 4, 4)
        for group in idx.reshape(4, 4):  # enough images: no repeats
            assert len(set(group)) == 4


def test_identities_are_covered_before_repeating():
    labels = labels_with_counts([3] * 12)
    sampler = PKSampler(labels, p=4, k=2, seed=1)
    for _ in range(3):  # three passes over the 12 identities
        seen = Counter(int(c) for _ in range(3) for c in labels[sampler.sample()][::2])
        assert seen == Counter(range(12))
    labels = labels_with_counts([3] * 5)  # 5 identities, P = 2: batches straddle the passes
    sampler = PKSampler(labels, p=2, k=2, seed=1)
    batches = [labels[sampler.sample()] for _ in range(10)]
    for batch in batches:
        check_pk(batch, 2, 2)
    assert Counter(int(c) for batch in batches[:5] for c in batch[::2]) == Counter(range(5)) + Counter(range(5))


def test_reproducible_from_seed():
    labels = labels_with_counts([4] * 10)
    a = [PKSampler(labels, 3, 2, seed=5).sample() for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    sampler = PKSampler(labels, 3, 2, seed=5)
    first, second = sampler.sample(), sampler.sample()
    assert not np.array_equal(first, second)
    assert not np.array_equal(PKSampler(labels, 3, 2, seed=6).sample(), first)


def test_small_identities_replace_rule():
    # identity 0: 1 image (never drawn); 1: 2 images; 2: 3 images; 3: 6 images
    labels = labels_with_counts([1, 2, 3, 6])
    sampler = PKSampler(labels, p=3, k=4, seed=0)
    np.testing.assert_array_equal(sampler.classes, [1, 2, 3])
    np.testing.assert_array_equal(sampler.indices, np.sort(np.flatnonzero(labels > 0)))
    for _ in range(6):
        idx = sampler.sample()
        check_pk(labels[idx], 3, 4)
        for group in idx.reshape(3, 4):
            identity = labels[group[0]]
            members = set(np.flatnonzero(labels == identity))
            assert set(group) <= members
            assert set(group) == members if len(members) < 4 else len(set(group)) == 4


def test_small_identities_drop_rule():
    labels = labels_with_counts([1, 2, 3, 6, 4, 5])
    sampler = PKSampler(labels, p=2, k=4, seed=0, min_images_rule="drop")
    np.testing.assert_array_equal(sampler.classes, [3, 4, 5])
    for _ in range(6):
        idx = sampler.sample()
        assert set(labels[idx]) <= {3, 4, 5}
        for group in idx.reshape(2, 4):
            assert len(set(group)) == 4


def test_sampler_errors():
    labels = labels_with_counts([1, 2, 3, 6])
    with pytest.raises(DatasetError, match=r"need at least p=4 identities with >= 2 images \(min_images_rule='replace'\); the labels have 3 \(of 4 identities\)"):
        PKSampler(labels, p=4, k=2)
    with pytest.raises(DatasetError, match=r"p=2 identities with >= 4 images \(min_images_rule='drop'\); the labels have 1"):
        PKSampler(labels, p=2, k=4, min_images_rule="drop")
    with pytest.raises(ValueError, match="k \\(images per identity\\) must be >= 2 to give positive pairs, got 1"):
        PKSampler(labels, p=2, k=1)
    with pytest.raises(ValueError, match="min_images_rule must be one of \\('replace', 'drop'\\), got 'keep'"):
        PKSampler(labels, p=2, k=2, min_images_rule="keep")


def test_dataset_from_arrays():
    labels = labels_with_counts([3, 4, 5, 2, 6, 1])
    images = np.zeros((labels.size, 4, 4, 1), np.uint8) + np.arange(labels.size, dtype=np.uint8)[:, None, None, None]
    ds = pk_batches_from_arrays(images, labels, p=3, k=3, seed=7, steps_per_epoch=4)
    assert ds.cardinality() == 4
    epoch1 = [(x.numpy(), y.numpy()) for x, y in ds]
    epoch2 = [(x.numpy(), y.numpy()) for x, y in ds]
    again = [(x.numpy(), y.numpy()) for x, y in pk_batches_from_arrays(images, labels, 3, 3, seed=7, steps_per_epoch=4)]
    assert len(epoch1) == 4
    for x, y in epoch1:
        assert x.shape == (9, 4, 4, 1) and x.dtype == np.float32 and y.dtype == np.int32
        check_pk(y, 3, 3)
        np.testing.assert_array_equal(labels[x[:, 0, 0, 0].astype(int)], y)  # images travel with labels
    for (x1, y1), (x2, y2) in zip(epoch1, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(epoch1, epoch2))
    with pytest.raises(DatasetError, match=r"expected images \(n, h, w, c\) and n labels, got images \(21, 4, 4, 1\) and 20 labels"):
        pk_batches_from_arrays(images, labels[:-1], 3, 3)


def test_pk_batches_of_a_folder(orl_dir):
    dataset = scan_folder(orl_dir)
    ds = pk_batches(dataset, p=4, k=3, image_size=24, seed=0, augment="light", preprocessing="tf", steps_per_epoch=2)
    batches = list(ds)
    assert len(batches) == 2
    for x, y in batches:
        assert tuple(x.shape) == (12, 24, 24, 3)
        assert float(np.min(x)) >= -1.0 and float(np.max(x)) <= 1.0
        check_pk(y.numpy(), 4, 3)
        assert set(y.numpy()) <= set(range(dataset.num_classes))
