"""Porting keras.applications weights (offline: their models with random weights), weight
files, and the errors on anything that does not fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerascnn
from kerascnn.errors import WeightsMismatchError, WeightsUnavailableError
from kerascnn.models.weights import load_model_weights, port_weights


def _run(model, x):
    """An eager forward pass (``predict`` would trace a tf.function: slow for one batch)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


SHAPE = (64, 64, 3)
PAIRS = [
    ("resnet50", keras.applications.ResNet50),
    ("resnet50_v2", keras.applications.ResNet50V2),
    ("vgg16", keras.applications.VGG16),
    ("mobilenet", keras.applications.MobileNet),
    ("mobilenet_v2", keras.applications.MobileNetV2),
    ("densenet121", keras.applications.DenseNet121),
]


def _x(seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(2, *SHAPE)).astype("float32")


@pytest.mark.parametrize("name,app", PAIRS, ids=[n for n, _ in PAIRS])
@pytest.mark.slow
def test_port_from_keras_applications_gives_same_outputs(name, app):
    source = app(weights=None, input_shape=SHAPE, classifier_activation=None)
    target = kerascnn.create_model(name, input_shape=SHAPE, classifier_activation=None)
    copied = port_weights(source, target)
    assert copied == len(source.weights)
    x = _x()
    np.testing.assert_allclose(_run(target, x), _run(source, x), atol=1e-5)


@pytest.fixture(scope="module")
def small_pair():
    keras.utils.set_random_seed(0)
    source = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=7)
    return source


@pytest.mark.slow
def test_port_by_order_and_its_count_check(small_pair):
    target = kerascnn.create_model("mobilenet_v2", alpha=0.35, input_shape=(32, 32, 3), classes=7)
    port_weights(small_pair, target, by="order")
    x = np.ones((1, 32, 32, 3), "float32")
    np.testing.assert_allclose(_run(target, x), _run(small_pair, x), atol=1e-5)
    headless = kerascnn.create_model("mobilenet_v2", alpha=0.35, input_shape=(32, 32, 3), include_top=False)
    with pytest.raises(WeightsMismatchError, match="has 105 layers with weights, target model 'mobilenet_v2' has 104"):
        port_weights(small_pair, headless, by="order")


@pytest.mark.slow
def test_port_mismatches_name_the_layer(small_pair):
    headless = kerascnn.create_model("mobilenet_v2", alpha=0.35, input_shape=(32, 32, 3), include_top=False)
    with pytest.raises(WeightsMismatchError, match="layer 'predictions' of source model .* has weights but target"):
        port_weights(small_pair, headless)
    other_classes = kerascnn.create_model("mobilenet_v2", alpha=0.35, input_shape=(32, 32, 3), classes=5)
    with pytest.raises(WeightsMismatchError, match=r"layer 'predictions' of target .* \[\(1280, 5\), \(5,\)\].* \[\(1280, 7\), \(7,\)\]"):
        port_weights(small_pair, other_classes)
    with pytest.raises(ValueError, match="by must be 'name' or 'order', got 'shape'"):
        port_weights(small_pair, other_classes, by="shape")


@pytest.mark.slow
def test_weights_file_round_trip_and_mismatch(tmp_path):
    model = kerascnn.create_model("resnet18", input_shape=(32, 32, 3), classes=4)
    path = tmp_path / "resnet18.weights.h5"
    model.save_weights(path)
    again = kerascnn.create_model("resnet18", input_shape=(32, 32, 3), classes=4, weights=str(path))
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(_run(again, x), _run(model, x), atol=1e-6)
    with pytest.raises(WeightsMismatchError, match=f"weights file '{path}' does not fit model 'resnet34'"):
        kerascnn.create_model("resnet34", input_shape=(32, 32, 3), classes=4, weights=str(path))


def test_imagenet_offline_says_how_to_pass_a_file():
    def offline_app(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- no network")

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)], name="tiny")
    with pytest.raises(WeightsUnavailableError, match="could not be fetched .* pass weights='path/to/file.weights.h5'"):
        load_model_weights(model, "imagenet", keras_app=offline_app, include_top=True, input_shape=(8,))
