"""kerascnn.losses against slow NumPy references that enumerate every triplet."""

from __future__ import annotations

import itertools
import math
import os

import keras
import numpy as np
import pytest

from _backends import value_and_input_grad
from kerascnn.losses import (
    ActiveTripletFraction, ArcFaceHead, ContrastiveLoss, TripletLoss, active_triplet_counts,
    pairwise_distances, triplet_loss,
)
from kerascnn.losses import SEMI_HARD_FALLBACKS

MININGS = ("batch_all", "batch_hard", "semi_hard")
DISTANCES = ("squared_euclidean", "euclidean", "cosine")


# --- slow references ---------------------------------------------------------------------------
def ref_distance(a, b, distance):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if distance == "cosine":
        return 1.0 - a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    d2 = float(np.sum((a - b) ** 2))
    return d2 if distance == "squared_euclidean" else math.sqrt(d2)


def ref_triplet_loss(labels, emb, margin, mining, distance, soft=False, fallback="farthest"):
    n = len(labels)
    d = [[ref_distance(emb[i], emb[j], distance) if i != j else 0.0 for j in range(n)] for i in range(n)]

    def hinge(x):
        return math.log1p(math.exp(x)) if soft else max(x + margin, 0.0)

    pos = [(a, p) for a in range(n) for p in range(n) if a != p and labels[a] == labels[p]]
    negs = {a: [m for m in range(n) if labels[m] != labels[a]] for a in range(n)}
    if mining == "batch_all":
        values = [hinge(d[a][p] - d[a][m]) for a, p in pos for m in negs[a]]
        values = [v for v in values if v > 0]
        return sum(values) / len(values) if values else 0.0
    if mining == "batch_hard":
        values = []
        for a in range(n):
            ps = [p for p in range(n) if p != a and labels[p] == labels[a]]
            if ps and negs[a]:
                values.append(hinge(max(d[a][p] for p in ps) - min(d[a][m] for m in negs[a])))
        return sum(values) / len(values) if values else 0.0
    values = []
    for a, p in pos:
        if not negs[a]:
            continue
        farther = [d[a][m] for m in negs[a] if d[a][m] > d[a][p]]
        pick = max if fallback == "farthest" else min
        chosen = min(farther) if farther else pick(d[a][m] for m in negs[a])
        values.append(hinge(d[a][p] - chosen))
    return sum(values) / len(values) if values else 0.0


def random_batch(rng, n=12, dim=5, identities=4, unit=True):
    labels = rng.integers(0, identities, size=n)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    if unit:
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return labels, emb


def loss_and_grad(loss, labels, emb):
    return value_and_input_grad(lambda x: loss(labels, x), emb)


# --- triplet loss ------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("soft", [False, True])
def test_triplet_loss_matches_enumeration(mining, distance, soft):
    rng = np.random.default_rng([MININGS.index(mining), DISTANCES.index(distance), int(soft)])
    margin = 0.5 if distance == "euclidean" else 0.2
    for _ in range(3):
        labels, emb = random_batch(rng, unit=distance != "euclidean")
        got = TripletLoss(margin, mining=mining, distance=distance, soft_margin=soft)(labels, emb)
        want = ref_triplet_loss(labels, emb, margin, mining, distance, soft)
        assert want > 0
        np.testing.assert_allclose(float(got), want, rtol=1e-4, atol=1e-5)


def test_pairwise_distances_match_reference():
    rng = np.random.default_rng(0)
    _, emb = random_batch(rng, n=7, unit=False)
    for distance in DISTANCES:
        got = keras.ops.convert_to_numpy(pairwise_distances(emb, distance))
        want = np.array([[ref_distance(a, b, distance) if i != j else 0 for j, b in enumerate(emb)]
                         for i, a in enumerate(emb)])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mining", MININGS)
def test_identical_embeddings_give_finite_loss_and_gradients(mining):
    labels = np.array([0, 0, 1, 1, 2, 2])
    emb = np.tile(np.array([[0.6, 0.8, 0.0]], np.float32), (6, 1))
    for distance in DISTANCES:
        value, grad = loss_and_grad(TripletLoss(0.2, mining=mining, distance=distance), labels, emb)
        # every valid triplet has d_ap = d_an = 0, so the loss is the margin
        assert value == pytest.approx(0.2, abs=1e-5), distance
        assert np.all(np.isfinite(grad)), distance


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("labels", [[3, 3, 3, 3, 3], [0, 1, 2, 3, 4]], ids=["one_identity", "all_distinct"])
@pytest.mark.slow
def test_no_valid_triplet_gives_zero_loss_and_zero_gradients(mining, labels):
    emb = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    for distance in DISTANCES:
        for soft in (False, True):
            value, grad = loss_and_grad(TripletLoss(0.2, mining, distance, soft), np.array(labels), emb)
            assert value == 0.0, (distance, soft)
            assert np.all(np.isfinite(grad)) and np.all(grad == 0), (distance, soft)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("mining", MININGS)
def test_mixed_precision_gives_float32_result(policy, mining):
    rng = np.random.default_rng(2)
    labels, emb = random_batch(rng, n=16, dim=8)
    want = float(TripletLoss(0.2, mining)(labels, emb))
    half = "float16" if policy == "mixed_float16" else "bfloat16"
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        loss = TripletLoss(0.2, mining)
        got = loss(labels, keras.ops.cast(emb, half))
        assert keras.backend.standardize_dtype(got.dtype) == "float32"
        rounded = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(emb, half), "float32"))
        np.testing.assert_allclose(float(got), ref_triplet_loss(labels, rounded, 0.2, mining, "squared_euclidean"), rtol=1e-4)
        np.testing.assert_allclose(float(got), want, rtol=0.05, atol=1e-3)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_losses_run_on_the_backend_asked_for():
    """The backend matrix of .ci/run sets KERAS_BACKEND; these tests must really run on it."""
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]


@pytest.mark.parametrize("mining", MININGS)
def test_triplet_loss_honours_keras_reductions(mining):
    """One value per anchor (its share, mean = the batch loss), as keras.losses.Loss reduces them."""
    labels, emb = random_batch(np.random.default_rng(7))
    n, want = len(labels), ref_triplet_loss(labels, emb, 0.2, mining, "squared_euclidean")
    per_anchor = keras.ops.convert_to_numpy(TripletLoss(0.2, mining, reduction=None)(labels, emb))
    assert per_anchor.shape == (n,) and np.all(per_anchor >= 0) and np.count_nonzero(per_anchor) > 1
    np.testing.assert_allclose(per_anchor.mean(), want, rtol=1e-4)
    np.testing.assert_allclose(float(TripletLoss(0.2, mining, reduction="sum")(labels, emb)), n * want, rtol=1e-4)
    np.testing.assert_allclose(float(TripletLoss(0.2, mining, reduction="sum_over_batch_size")(labels, emb)), want,
                               rtol=1e-4)
    weights = np.zeros(n, np.float32)
    weights[0] = 1.0  # sample_weight weighs anchors: only anchor 0 counts
    np.testing.assert_allclose(float(TripletLoss(0.2, mining, reduction="sum")(labels, emb, sample_weight=weights)),
                               per_anchor[0], rtol=1e-5)
    if mining == "batch_hard":  # each anchor's hinge, scaled by n / (anchors with a positive and a negative)
        d = lambda i, j: ref_distance(emb[i], emb[j], "squared_euclidean")  # noqa: E731
        hinges = [max(max(d(a, p) for p in range(n) if p != a and labels[p] == labels[a])
                      - min(d(a, m) for m in range(n) if labels[m] != labels[a]) + 0.2, 0.0)
                  if np.sum(labels == labels[a]) > 1 else 0.0 for a in range(n)]
        valid = sum(np.sum(labels == labels[a]) > 1 for a in range(n))
        np.testing.assert_allclose(per_anchor, np.array(hinges) * n / valid, rtol=1e-4, atol=1e-6)


def test_contrastive_loss_honours_keras_reductions():
    d = np.array([0.1, 0.5, 1.5, 0.2], np.float32)
    y = np.array([1, 0, 0, 1])
    want = np.array([0.01, 0.25, 0.0, 0.04])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ContrastiveLoss(1.0, reduction=None)(y, d)), want, rtol=1e-5)
    assert float(ContrastiveLoss(1.0, reduction="sum")(y, d)) == pytest.approx(want.sum(), rel=1e-5)
    assert float(ContrastiveLoss(1.0)(y, d)) == pytest.approx(want.mean(), rel=1e-5)


def test_triplet_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mining must be one of 'batch_all', 'batch_hard', 'semi_hard', got 'hard'"):
        TripletLoss(mining="hard")
    with pytest.raises(ValueError, match="distance must be one of .*got 'l1'"):
        TripletLoss(distance="l1")
    with pytest.raises(ValueError, match="margin must be >= 0, got -1"):
        TripletLoss(margin=-1)
    with pytest.raises(ValueError, match="semi_hard_fallback must be one of 'farthest', 'closest', got 'hardest'"):
        TripletLoss(mining="semi_hard", semi_hard_fallback="hardest")


def test_triplet_loss_config_round_trip():
    loss = TripletLoss(0.3, mining="semi_hard", distance="cosine", soft_margin=True, semi_hard_fallback="closest")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, TripletLoss)
    assert (clone.margin, clone.mining, clone.distance, clone.soft_margin, clone.semi_hard_fallback) == (
        0.3, "semi_hard", "cosine", True, "closest")


def test_active_triplet_fraction_counts_violating_triplets():
    rng = np.random.default_rng(3)
    metric = ActiveTripletFraction(0.2)
    active = valid = 0
    for _ in range(2):
        labels, emb = random_batch(rng)
        metric.update_state(labels, emb)
        for a, p, m in itertools.permutations(range(len(labels)), 3):
            if labels[a] == labels[p] and labels[a] != labels[m]:
                valid += 1
                active += ref_distance(emb[a], emb[p], "squared_euclidean") - ref_distance(emb[a], emb[m], "squared_euclidean") + 0.2 > 0
    assert 0 < active < valid
    assert float(metric.result()) == pytest.approx(active / valid, rel=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    a, v = active_triplet_counts(np.zeros(4), np.eye(4, dtype=np.float32))
    assert (float(a), float(v)) == (0.0, 0.0)


def test_online_fit_with_triplet_loss_and_metric_decreases_loss():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(4, 6)).astype(np.float32)
    labels = np.repeat(np.arange(4), 4)
    x = centres[labels] + 0.8 * rng.normal(size=(16, 6)).astype(np.float32)
    inputs = keras.Input((6,))
    outputs = keras.layers.UnitNormalization()(keras.layers.Dense(8)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.05), loss=TripletLoss(0.2, "batch_hard"), metrics=[ActiveTripletFraction(0.2)])
    history = model.fit(x, labels, batch_size=16, epochs=15, shuffle=False, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert history["active_triplets"][-1] < history["active_triplets"][0]


# --- contrastive -------------------------------------------------------------------------------
def test_contrastive_loss_matches_reference():
    rng = np.random.default_rng(5)
    d = rng.uniform(0, 2, size=10).astype(np.float32)
    y = rng.integers(0, 2, size=10)
    want = np.mean([yi * di**2 + (1 - yi) * max(1.0 - di, 0) ** 2 for yi, di in zip(y, d)])
    assert float(ContrastiveLoss(1.0)(y, d[:, None])) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="margin must be >= 0, got -0.5"):
        ContrastiveLoss(-0.5)


# --- ArcFace -----------------------------------------------------------------------------------
def ref_arcface(emb, w, labels, s, m):
    out = np.zeros((len(emb), w.shape[1]))
    for i, e in enumerate(np.asarray(emb, np.float64)):
        for j in range(w.shape[1]):
            c = float(e @ w[:, j] / (np.linalg.norm(e) * np.linalg.norm(w[:, j])))
            if j == labels[i]:
                theta = math.acos(min(max(c, -1.0), 1.0))
                c = math.cos(theta + m) if theta + m <= math.pi else c - m * math.sin(m)
            out[i, j] = s * c
    return out


def test_arcface_logits_match_reference():
    rng = np.random.default_rng(6)
    head = ArcFaceHead(5, scale=30.0, margin=0.5)
    emb = rng.normal(size=(8, 4)).astype(np.float32)
    labels = rng.integers(0, 5, size=8)
    emb[0] = -head_centre(head, emb, labels)[0]  # theta + m > pi: the fallback branch
    w = keras.ops.convert_to_numpy(head.kernel)
    got = keras.ops.convert_to_numpy(head([emb, labels]))
    np.testing.assert_allclose(got, ref_arcface(emb, w, labels, 30.0, 0.5), rtol=1e-4, atol=1e-3)


def head_centre(head, emb, labels):
    if not head.built:
        head.build([emb.shape, labels.shape])
    w = keras.ops.convert_to_numpy(head.kernel)
    return w[:, labels].T


def test_arcface_head_round_trip_and_errors(tmp_path):
    emb_in, lab_in = keras.Input((4,)), keras.Input((), dtype="int32")
    model = keras.Model([emb_in, lab_in], ArcFaceHead(3, 16.0, 0.3, name="arcface")([emb_in, lab_in]))
    x = np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    model.save(tmp_path / "arc.keras")
    loaded = keras.saving.load_model(tmp_path / "arc.keras", safe_mode=True)
    np.testing.assert_array_equal(model.predict([x, y], verbose=0), loaded.predict([x, y], verbose=0))
    assert loaded.get_layer("arcface").get_config()["margin"] == 0.3
    with pytest.raises(ValueError, match=r"margin must be in \[0, pi/2\) radians, got 2.0"):
        ArcFaceHead(3, margin=2.0)
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        ArcFaceHead(0)


def test_semi_hard_falls_back_to_the_farthest_negative_or_the_closest_one():
    # 1-D points: no negative is farther from either anchor than its positive (d_ap = 9)
    labels = np.array([0, 0, 1, 2])
    emb = np.array([[0.0], [3.0], [1.0], [2.0]], np.float32)
    # anchor 0: negatives at 1 and 4; anchor 1: negatives at 4 and 1 (squared distances)
    # tensorflow-addons' rule: the farthest, 4 -> 9 - 4 + 0.2 for both pairs
    assert float(triplet_loss(labels, emb, 0.2, "semi_hard")) == pytest.approx(9 - 4 + 0.2)
    closest = TripletLoss(0.2, "semi_hard", semi_hard_fallback="closest")
    assert float(closest(labels, emb)) == pytest.approx(9 - 1 + 0.2)
    # with a farther negative present, it is chosen: anchor 0 d_ap=1, negatives at 4 and 9
    emb = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    # anchor 0 picks d=4 (1-4+5=2); anchor 1 has d_ap=1, negatives at 1 and 4: picks 4 (1-4+5=2)
    for fallback in SEMI_HARD_FALLBACKS:
        assert float(triplet_loss(labels, emb, 5.0, "semi_hard", semi_hard_fallback=fallback)) == pytest.approx(2.0)


def test_semi_hard_averages_over_every_positive_pair_including_zero_losses():
    labels = np.array([0, 0, 1])
    emb = np.array([[0.0], [1.0], [1.5]], np.float32)
    # pair (0, 1): d_ap 1, the negative at d 2.25 is farther -> 1 - 2.25 + 1 < 0 -> 0
    # pair (1, 0): d_ap 1, the negative at d 0.25 is not farther -> the farthest, 0.25 -> 1.75
    assert float(triplet_loss(labels, emb, 1.0, "semi_hard")) == pytest.approx(1.75 / 2)


@pytest.mark.parametrize("distance", DISTANCES)
def test_semi_hard_closest_fallback_matches_enumeration(distance):
    rng = np.random.default_rng(300 + DISTANCES.index(distance))
    labels, emb = random_batch(rng, unit=distance != "euclidean")
    loss = TripletLoss(0.2, "semi_hard", distance, semi_hard_fallback="closest")
    want = ref_triplet_loss(labels, emb, 0.2, "semi_hard", distance, fallback="closest")
    assert want != pytest.approx(ref_triplet_loss(labels, emb, 0.2, "semi_hard", distance))  # the case occurs
    np.testing.assert_allclose(float(loss(labels, emb)), want, rtol=1e-4, atol=1e-5)


def ref_tfa_semi_hard(labels, emb, margin):
    """tensorflow-addons' TripletSemiHardLoss, restated: squared Euclidean distances; per positive
    pair the smallest negative distance above d_ap, else the largest negative distance; the hinge
    averaged over every positive pair."""
    x = np.asarray(emb, np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    total, pairs = 0.0, 0
    for a, p in itertools.permutations(range(len(labels)), 2):
        if labels[a] != labels[p]:
            continue
        negatives = sorted(d[a][m] for m in range(len(labels)) if labels[m] != labels[a])
        chosen = next((v for v in negatives if v > d[a][p]), negatives[-1])
        total += max(margin + d[a][p] - chosen, 0.0)
        pairs += 1
    return total / pairs


def ref_tfa_hard(labels, emb, margin, soft):
    """tensorflow-addons' TripletHardLoss, restated: per anchor the largest positive and the
    smallest negative squared distance; the (soft) hinge averaged over the anchors."""
    x = np.asarray(emb, np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    values = []
    for a in range(len(labels)):
        hp = max(d[a][p] for p in range(len(labels)) if p != a and labels[p] == labels[a])
        hn = min(d[a][m] for m in range(len(labels)) if labels[m] != labels[a])
        values.append(math.log1p(math.exp(hp - hn)) if soft else max(hp - hn + margin, 0.0))
    return sum(values) / len(values)


@pytest.mark.parametrize("seed", range(4))
def test_semi_hard_matches_tensorflow_addons_semantics(seed):
    # tensorflow-addons' own check: 10 points of U[0, 1)^6 (not normalised), 4 classes, margin 1
    rng = np.random.default_rng(100 + seed)
    emb = rng.random((10, 6)).astype(np.float32)
    labels = rng.integers(0, 4, size=10)
    want = ref_tfa_semi_hard(labels, emb, 1.0)
    assert want > 0
    assert float(TripletLoss(1.0, "semi_hard")(labels, emb)) == pytest.approx(want, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("soft", [False, True])
def test_batch_hard_matches_tensorflow_addons_semantics_on_pk_batches(soft):
    # P x K batches (every anchor has a positive), where both definitions agree
    rng = np.random.default_rng(200 + int(soft))
    emb = rng.random((20, 6)).astype(np.float32)
    labels = rng.permutation(np.repeat(np.arange(4), 5))
    want = ref_tfa_hard(labels, emb, 1.0, soft)
    got = TripletLoss(1.0, "batch_hard", soft_margin=soft)(labels, emb)
    assert float(got) == pytest.approx(want, rel=1e-4)


def test_batch_hard_and_batch_all_hand_computed():
    # 1-D, squared distances; A = {0, 1}, B = {3, 5}
    labels = np.array([0, 0, 1, 1])
    emb = np.array([[0.0], [1.0], [3.0], [5.0]], np.float32)
    # batch-hard (margin 2): anchor 0: hp 1, hn 9 -> 0; anchor 1: hp 1, hn 4 -> 0;
    # anchor 2: hp 4, hn 4 -> 2; anchor 3: hp 4, hn 16 -> 0; mean over 4 anchors = 0.5
    assert float(triplet_loss(labels, emb, 2.0, "batch_hard")) == pytest.approx(0.5)
    # soft margin: mean of softplus(hp - hn) = softplus(-8), softplus(-3), softplus(0), softplus(-12)
    soft = np.mean(np.log1p(np.exp([-8.0, -3.0, 0.0, -12.0])))
    assert float(triplet_loss(labels, emb, 2.0, "batch_hard", soft_margin=True)) == pytest.approx(soft, rel=1e-5)
    # batch-all (margin 2): triplets (a, p, n) with d_ap - d_an + 2 > 0:
    # (0,1,2): 1-9+2<0; (0,1,3): 1-25; (1,0,2): 1-4+2=-1; (1,0,3): 1-16;
    # (2,3,0): 4-9+2=-3; (2,3,1): 4-4+2=2 active; (3,2,0): 4-25; (3,2,1): 4-16
    # -> one active triplet with loss 2: the mean over active triplets is 2 (not 2/8)
    assert float(triplet_loss(labels, emb, 2.0, "batch_all")) == pytest.approx(2.0)
    # margin 4: (1,0,2): 1-4+4 = 1 and (2,3,1): 4 active, (2,3,0): 4-9+4 = -1 not -> (1 + 4) / 2
    assert float(triplet_loss(labels, emb, 4.0, "batch_all")) == pytest.approx(2.5)


@pytest.mark.parametrize("mining", MININGS)
def test_gradients_match_finite_differences_of_the_reference(mining):
    rng = np.random.default_rng(9)
    labels, emb = random_batch(rng, n=8, dim=3, identities=3)
    _, grad = loss_and_grad(TripletLoss(0.3, mining), labels, emb)
    numeric = np.zeros_like(grad, dtype=np.float64)
    x = emb.astype(np.float64)
    for i, j in itertools.product(*map(range, x.shape)):
        step = np.zeros_like(x)
        step[i, j] = 1e-5
        numeric[i, j] = (ref_triplet_loss(labels, x + step, 0.3, mining, "squared_euclidean")
                         - ref_triplet_loss(labels, x - step, 0.3, mining, "squared_euclidean")) / 2e-5
    assert np.abs(numeric).max() > 0
    np.testing.assert_allclose(grad, numeric, atol=2e-3)
