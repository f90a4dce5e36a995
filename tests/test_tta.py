"""Test-time augmentation: exact 10 crops, flip and 10-crop averaging, ensembles."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascnn.data import ensemble_model, ensemble_predict, flip_predict, ten_crop_predict, ten_crops
from kerascnn.errors import InputShapeError

IMAGES = np.arange(2 * 7 * 9 * 2, dtype=np.float32).reshape(2, 7, 9, 2)


def _tiny(size=(4, 5), seed=0, name="tiny"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(size + (2,))
    x = keras.layers.Conv2D(3, 2, name=f"{name}_conv")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name=f"{name}_head")(x), name=name)


def test_ten_crops_exact_corners_centre_and_mirrors():
    crops = ten_crops(IMAGES, (4, 5))
    assert crops.shape == (2, 10, 4, 5, 2)
    expected = [IMAGES[:, :4, :5], IMAGES[:, :4, 4:], IMAGES[:, 3:, :5], IMAGES[:, 3:, 4:], IMAGES[:, 1:5, 2:7]]
    for k, crop in enumerate(expected):
        np.testing.assert_array_equal(crops[:, k], crop)
        np.testing.assert_array_equal(crops[:, k + 5], crop[:, :, ::-1])
    with pytest.raises(InputShapeError, match="crop size 8x5 must be between 1x1 and the image size 7x9"):
        ten_crops(IMAGES, (8, 5))
    with pytest.raises(InputShapeError, match=r"expected a batch of images .* got shape \(7, 9, 2\)"):
        ten_crops(IMAGES[0], 3)


def test_ten_crop_and_flip_predict_equal_manual_averages():
    model = _tiny()
    crops = ten_crops(IMAGES, (4, 5))
    manual = np.mean([model.predict(crops[:, k], verbose=0) for k in range(10)], axis=0)
    np.testing.assert_allclose(ten_crop_predict(model, IMAGES), manual, rtol=1e-5, atol=1e-6)
    small = IMAGES[:, :4, :5]
    manual = (model.predict(small, verbose=0) + model.predict(small[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(flip_predict(model, small), manual, rtol=1e-5, atol=1e-6)


def test_ensemble_average_of_probabilities():
    models = [_tiny(seed=s, name=f"m{s}") for s in range(3)]
    x = IMAGES[:, :4, :5]
    manual = sum(m.predict(x, verbose=0) for m in models) / 3
    np.testing.assert_allclose(ensemble_predict(models, x), manual, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ensemble_model(models).predict(x, verbose=0), manual, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="must share one input shape"):
        ensemble_model([models[0], _tiny((5, 5), name="other")])
