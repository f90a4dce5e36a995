"""kerascnn.losses against slow NumPy references that enumerate every triplet."""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascnn.losses import (
    ActiveTripletFraction, ArcFaceHead, ContrastiveLoss, TripletLoss, active_triplet_counts,
    pairwise_distances, triplet_loss,
)

MININGS = ("batch_all", "batch_hard", "semi_hard")
DISTANCES = ("squared_euclidean", "euclidean", "cosine")


# --- slow references ---------------------------------------------------------------------------
def ref_distance(a, b, distance):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if distance == "cosine":
        return 1.0 - a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    d2 = float(np.sum((a - b) ** 2))
    return d2 if distance == "squared_euclidean" else math.sqrt(d2)


def ref_triplet_loss(labels, emb, margin, mining, distance, soft=False):
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
        chosen = min(farther) if farther else min(d[a][m] for m in negs[a])
        values.append(hinge(d[a][p] - chosen))
    return sum(values) / len(values) if values else 0.0


def random_batch(rng, n=12, dim=5, identities=4, unit=True):
    labels = rng.integers(0, identities, size=n)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    if unit:
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return labels, emb


def loss_and_grad(loss, labels, emb):
    x = tf.Variable(emb)
    with tf.GradientTape() as tape:
        value = loss(tf.constant(labels), x)
    return float(value), tape.gradient(value, x).numpy()


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


def test_triplet_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mining must be one of 'batch_all', 'batch_hard', 'semi_hard', got 'hard'"):
        TripletLoss(mining="hard")
    with pytest.raises(ValueError, match="distance must be one of .*got 'l1'"):
        TripletLoss(distance="l1")
    with pytest.raises(ValueError, match="margin must be >= 0, got -1"):
        TripletLoss(margin=-1)


def test_triplet_loss_config_round_trip():
    loss = TripletLoss(0.3, mining="semi_hard", distance="cosine", soft_margin=True)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, TripletLoss)
    assert (clone.margin, clone.mining, clone.distance, clone.soft_margin) == (0.3, "semi_hard", "cosine", True)


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


def test_semi_hard_falls_back_to_the_hardest_negative():
    # 1-D points: no negative is farther from either anchor than its positive (d_ap = 9)
    labels = np.array([0, 0, 1, 2])
    emb = np.array([[0.0], [3.0], [1.0], [2.0]], np.float32)
    # anchor 0: negatives at 1 and 4 -> hardest 1; anchor 1: negatives at 4 and 1 -> hardest 1
    assert float(triplet_loss(labels, emb, 0.2, "semi_hard")) == pytest.approx(9 - 1 + 0.2)
    # with a farther negative present, it is chosen: anchor 0 d_ap=1, negatives at 4 and 9
    emb = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    got = float(triplet_loss(labels, emb, 5.0, "semi_hard"))
    # anchor 0 picks d=4 (1-4+5=2); anchor 1 has d_ap=1, negatives at 1 and 4: picks 4 (1-4+5=2)
    assert got == pytest.approx(2.0)


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
