"""kerascnn.siamese: embedding tower, triplet / pair / ArcFace models, GeM pooling."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascnn.layers import GeneralizedMeanPooling2D
from kerascnn.losses import ContrastiveLoss, TripletLoss
from kerascnn.siamese import (
    build_arcface_model, build_embedding_model, build_pair_model, build_triplet_model, extract_tower,
)

SHAPE = (12, 12, 3)


def tiny_backbone():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    return keras.Model(inputs, x, name="tiny_backbone")


def synthetic(n_ids=4, per_id=4, seed=0):
    """Images of ``n_ids`` identities: a random pattern each, plus noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 1, size=(n_ids, *SHAPE)).astype(np.float32)
    labels = np.repeat(np.arange(n_ids), per_id)
    return patterns[labels] + 0.3 * rng.normal(size=(labels.size, *SHAPE)).astype(np.float32), labels


def round_trip(model, tmp_path, inputs):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(inputs)), keras.ops.convert_to_numpy(loaded(inputs)))
    return loaded


# --- the tower ---------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["avg", "max", "gem"])
def test_embedding_model_outputs_unit_vectors(pooling, tmp_path):
    model = build_embedding_model(tiny_backbone(), embedding_dim=16, pooling=pooling, dropout=0.1)
    x, _ = synthetic()
    emb = keras.ops.convert_to_numpy(model(x))
    assert emb.shape == (16, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert [layer.name for layer in model.get_layer("tiny_backbone").layers[1:]] == ["conv1", "conv2"]
    round_trip(model, tmp_path, x)


def test_embedding_model_from_registry_backbone(tmp_path):
    model = build_embedding_model("lenet5", (32, 32, 1), embedding_dim=8, pooling="gem")
    assert model.output_shape == (None, 8)
    assert model.get_layer("gem_pool").get_config()["p"] == 3.0
    round_trip(model, tmp_path, np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_embedding_model_float32_output_under_mixed_precision(policy):
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = build_embedding_model(tiny_backbone(), embedding_dim=8, pooling="gem")
        out = model(synthetic()[0][:2])
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(np.linalg.norm(keras.ops.convert_to_numpy(out), axis=1), 1.0, rtol=1e-3)


def test_embedding_model_errors():
    with pytest.raises(ValueError, match="pooling must be one of 'avg', 'max', 'gem', got 'sum'"):
        build_embedding_model(tiny_backbone(), pooling="sum")
    with pytest.raises(ValueError, match="input_shape is required to build the registry backbone 'resnet18'"):
        build_embedding_model("resnet18")
    with pytest.raises(ValueError, match="backbone must be a registry name or a keras.Model, got int"):
        build_embedding_model(3, SHAPE)
    with pytest.raises(ValueError, match="embedding_dim must be >= 1, got 0"):
        build_embedding_model(tiny_backbone(), embedding_dim=0)
    with pytest.raises(KeyError, match="Unknown model 'resnet17'"):
        build_embedding_model("resnet17", SHAPE)


@pytest.mark.slow
def test_online_formulation_fits_images_and_labels():
    x, labels = synthetic()
    model = build_embedding_model(tiny_backbone(), embedding_dim=8)
    model.compile(keras.optimizers.Adam(1e-2), loss=TripletLoss(0.2, "batch_all"))
    # one batch per epoch: each epoch's loss is computed before that epoch's update
    loss = model.fit(x, labels, batch_size=16, epochs=4, shuffle=False, verbose=0).history["loss"]
    assert loss[-1] < loss[0]


# --- offline formulations ------------------------------------------------------------------------
def triplets():
    x, labels = synthetic()
    anchors = np.arange(16)
    positives = np.array([i + 1 if i % 4 < 3 else i - 3 for i in anchors])
    negatives = (anchors + 4) % 16
    return {"anchor": x[anchors], "positive": x[positives], "negative": x[negatives]}


@pytest.mark.slow
def test_triplet_model_shares_one_tower_and_trains(tmp_path):
    tower = build_embedding_model(tiny_backbone(), embedding_dim=8)
    model = build_triplet_model(tower, margin=0.5)
    assert extract_tower(model) is tower
    assert len(model.trainable_weights) == len(tower.trainable_weights)  # one copy of the weights
    data = triplets()
    out = keras.ops.convert_to_numpy(model(data))
    emb = {k: keras.ops.convert_to_numpy(tower(v)) for k, v in data.items()}
    np.testing.assert_allclose(out[:, 0], np.sum((emb["anchor"] - emb["positive"]) ** 2, axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 1], np.sum((emb["anchor"] - emb["negative"]) ** 2, axis=1), rtol=1e-5, atol=1e-6)
    model.compile(keras.optimizers.Adam(1e-2))
    loss = model.fit(data, batch_size=16, epochs=3, verbose=0).history["loss"]
    assert loss[0] == pytest.approx(np.mean(np.maximum(out[:, 0] - out[:, 1] + 0.5, 0)), rel=1e-5)
    assert loss[-1] < loss[0]
    loaded = round_trip(model, tmp_path, data)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(extract_tower(loaded)(data["anchor"])), keras.ops.convert_to_numpy(tower(data["anchor"])))


def pairs():
    x, labels = synthetic()
    left = np.arange(16)
    right = np.r_[left[:8] ^ 1, (left[8:] + 4) % 16]  # 8 same pairs then 8 different
    return {"left": x[left], "right": x[right]}, (labels[left] == labels[right]).astype(np.float32)


@pytest.mark.parametrize("head", ["sigmoid", "distance"])
@pytest.mark.slow
def test_pair_model_trains_and_round_trips(head, tmp_path):
    tower = build_embedding_model(tiny_backbone(), embedding_dim=8)
    model = build_pair_model(tower, head=head)
    assert extract_tower(model) is tower
    data, same = pairs()
    assert same[:8].all() and not same[8:].any()
    model.compile(keras.optimizers.Adam(1e-2), loss="binary_crossentropy" if head == "sigmoid" else ContrastiveLoss(1.0))
    out = keras.ops.convert_to_numpy(model(data))
    if head == "sigmoid":
        np.testing.assert_allclose(out, 0.5)  # w = b = 0 at the start
    else:
        emb = [keras.ops.convert_to_numpy(tower(data[k])) for k in ("left", "right")]
        np.testing.assert_allclose(out[:, 0], np.linalg.norm(emb[0] - emb[1], axis=1), rtol=1e-5, atol=1e-6)
    loss = model.fit(data, same, batch_size=16, epochs=3, verbose=0).history["loss"]
    assert loss[-1] < loss[0]
    round_trip(model, tmp_path, data)


def test_arcface_model_trains_and_exports_the_tower(tmp_path):
    x, labels = synthetic()
    tower = build_embedding_model(tiny_backbone(), embedding_dim=8)
    model = build_arcface_model(tower, num_classes=4, scale=16.0, margin=0.2)
    assert extract_tower(model) is tower
    model.compile(keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = {"image": x, "label": labels}
    loss = model.fit(data, labels, batch_size=16, epochs=3, verbose=0).history["loss"]
    assert loss[-1] < loss[0]
    round_trip(model, tmp_path, data)


def test_extract_tower_needs_exactly_one_nested_model():
    with pytest.raises(ValueError, match="expected exactly one nested embedding model in 'tiny_backbone', found 0"):
        extract_tower(tiny_backbone())


# --- GeM ----------------------------------------------------------------------------------------
def test_gem_pooling_matches_reference():
    x = np.random.default_rng(1).uniform(-0.5, 2.0, size=(2, 3, 4, 5)).astype(np.float32)
    for p in (1.0, 3.0):
        got = keras.ops.convert_to_numpy(GeneralizedMeanPooling2D(p=p)(x))
        ref = np.mean(np.maximum(x, 1e-6).astype(np.float64) ** p, axis=(1, 2)) ** (1 / p)
        np.testing.assert_allclose(got, ref, rtol=1e-5)
    layer = GeneralizedMeanPooling2D(p=2.0, trainable_p=False)
    layer.build(x.shape)
    assert not layer.trainable_weights
    assert GeneralizedMeanPooling2D.from_config(layer.get_config()).get_config()["p"] == 2.0
    with pytest.raises(ValueError, match="p and epsilon must be > 0, got p=0, epsilon=1e-06"):
        GeneralizedMeanPooling2D(p=0)
