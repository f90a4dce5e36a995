"""Augmentation presets and the custom layers (PCA lighting, grid distortion)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascnn.data import (
    AUGMENTATION_PRESETS, IMAGENET_EIGVAL, IMAGENET_EIGVEC, PCALighting, RandomGridDistortion,
    build_augmentation,
)
from kerascnn.errors import UnknownAugmentationError

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (6, 24, 24, 3)).astype(np.float32)


def test_presets_listed():
    assert {"none", "light", "standard", "heavy", "face"} <= set(AUGMENTATION_PRESETS)


@pytest.mark.parametrize("name", sorted(AUGMENTATION_PRESETS))
@pytest.mark.slow
def test_preset_shape_inference_identity_and_seed(name):
    aug = build_augmentation(name, (24, 24), seed=7)
    out = np.asarray(aug(IMAGES, training=True))
    assert out.shape == IMAGES.shape and out.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(aug(IMAGES, training=False)), IMAGES)
    again = np.asarray(build_augmentation(name, (24, 24), seed=7)(IMAGES, training=True))
    np.testing.assert_array_equal(out, again)  # same seed, same output
    if name != "none":
        assert not np.allclose(out, IMAGES)
        other = np.asarray(build_augmentation(name, (24, 24), seed=8)(IMAGES, training=True))
        assert not np.allclose(out, other)


def test_mirroring_is_exact():
    aug = build_augmentation(["flip"], 24, seed=3)
    images = RNG.uniform(0, 255, (32, 24, 24, 3)).astype(np.float32)
    out = np.asarray(aug(images, training=True))
    same = [np.array_equal(o, x) for o, x in zip(out, images)]
    mirrored = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)


def test_pca_lighting_shifts_colour_along_eigenvectors():
    flat = np.full((4000, 2, 2, 3), 128.0, np.float32)
    out = np.asarray(PCALighting(0.1, seed=1)(flat, training=True))
    assert out.shape == flat.shape and out.dtype == np.float32
    shift = out - flat
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1, :1], shift.shape), atol=1e-4)  # one per image
    # coordinates of the shift in the eigenbasis, over the eigenvalues, are the alphas ~ N(0, 0.1)
    alphas = np.linalg.solve(np.array(IMAGENET_EIGVEC), shift[:, 0, 0].T / 255).T / np.array(IMAGENET_EIGVAL)
    np.testing.assert_allclose(alphas.std(axis=0), 0.1, rtol=0.08)
    np.testing.assert_allclose(alphas.mean(axis=0), 0.0, atol=0.01)
    # so the colour moves mostly along the first (luminance) eigenvector
    along_first = shift[:, 0, 0] @ np.array(IMAGENET_EIGVEC)[:, 0]
    assert (along_first**2).mean() / (shift[:, 0, 0] ** 2).sum(axis=1).mean() > 0.95  # 0.99 expected
    np.testing.assert_array_equal(np.asarray(PCALighting(seed=1)(flat, training=False)), flat)
    bright = np.asarray(PCALighting(5.0, seed=1)(np.full((8, 2, 2, 3), 250.0, np.float32), training=True))
    assert bright.min() >= 0 and bright.max() <= 255  # clipped to value_range


def test_grid_distortion_warps_locally_and_monotonically():
    ramp = np.broadcast_to(np.arange(32, dtype=np.float32)[None, None, :, None], (4, 20, 32, 3)).copy()
    out = np.asarray(RandomGridDistortion(4, 0.4, seed=2)(ramp, training=True))
    assert out.shape == ramp.shape
    assert not np.allclose(out, ramp)
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1], out.shape), atol=1e-4)  # rows map as a whole
    assert (np.diff(out[:, 0, :, 0], axis=1) >= -1e-4).all()  # monotone: no folding
    np.testing.assert_allclose(out[:, :, [0, -1]], ramp[:, :, [0, -1]], atol=1e-4)  # frame kept
    images = RNG.uniform(0, 255, (3, 20, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(RandomGridDistortion(4, 0.0)(images, training=True)), images)
    np.testing.assert_array_equal(np.asarray(RandomGridDistortion(4, 0.4)(images, training=False)), images)


def test_usable_in_tf_data():
    aug = build_augmentation(["flip", "pca_lighting", "grid_distortion"], 24, seed=0)
    ds = tf.data.Dataset.from_tensor_slices(IMAGES).batch(3).map(
        lambda x: aug(x, training=True), num_parallel_calls=tf.data.AUTOTUNE)
    out = np.concatenate(list(ds.as_numpy_iterator()))
    assert out.shape == IMAGES.shape and not np.allclose(out, IMAGES)


def test_inside_model_trains_and_round_trips_keras_file(tmp_path):
    inputs = keras.Input((24, 24, 3))
    x = build_augmentation(["flip", "pca_lighting", "grid_distortion"], 24, seed=0)(inputs)
    x = keras.layers.Conv2D(2, 3, name="conv")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(IMAGES, np.array([0, 1] * 3), epochs=1, verbose=0)
    path = tmp_path / "aug.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(IMAGES, verbose=0), model.predict(IMAGES, verbose=0), rtol=1e-6)
    kinds = {type(layer).__name__ for layer in loaded.get_layer(index=1).layers}
    assert {"PCALighting", "RandomGridDistortion"} <= kinds


def test_own_pipeline_and_unknown_names():
    own = build_augmentation([keras.layers.RandomRotation(0.1), "pca_lighting"], 24, seed=0, name="mine")
    assert own.name == "mine" and isinstance(own.layers[1], PCALighting)
    with pytest.raises(UnknownAugmentationError, match="unknown augmentation preset 'strong'; expected one of none, light"):
        build_augmentation("strong", 24)
    with pytest.raises(UnknownAugmentationError, match="unknown augmentation layer 'mirror'.*flip"):
        build_augmentation(["mirror"], 24)
