"""GoogLeNet against Table 1 of Szegedy et al. 2014, layer by layer; the inception blocks; LRN."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kerascnn import blocks
from kerascnn.errors import ModelArgumentError
from kerascnn.layers import LocalResponseNormalization
from kerascnn.models.googlenet import googlenet

# Table 1 of the paper, typed in: type, output size, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
# pool proj, params (K, weights only). ``None`` for the empty cells.
TABLE_1 = [
    ("conv1", (112, 112, 64), None, None, None, None, None, None, 2.7),
    ("pool1", (56, 56, 64), None, None, None, None, None, None, 0),
    ("conv2", (56, 56, 192), None, 64, 192, None, None, None, 112),
    ("pool2", (28, 28, 192), None, None, None, None, None, None, 0),
    ("inception_3a", (28, 28, 256), 64, 96, 128, 16, 32, 32, 159),
    ("inception_3b", (28, 28, 480), 128, 128, 192, 32, 96, 64, 380),
    ("pool3", (14, 14, 480), None, None, None, None, None, None, 0),
    ("inception_4a", (14, 14, 512), 192, 96, 208, 16, 48, 64, 364),
    ("inception_4b", (14, 14, 512), 160, 112, 224, 24, 64, 64, 437),
    ("inception_4c", (14, 14, 512), 128, 128, 256, 24, 64, 64, 463),
    ("inception_4d", (14, 14, 528), 112, 144, 288, 32, 64, 64, 580),
    ("inception_4e", (14, 14, 832), 256, 160, 320, 32, 128, 128, 840),
    ("pool4", (7, 7, 832), None, None, None, None, None, None, 0),
    ("inception_5a", (7, 7, 832), 256, 160, 320, 32, 128, 128, 1072),
    ("inception_5b", (7, 7, 1024), 384, 192, 384, 48, 128, 128, 1388),
    ("avg_pool", (1024,), None, None, None, None, None, None, 0),
    ("dropout", (1024,), None, None, None, None, None, None, 0),
    ("predictions", (1000,), None, None, None, None, None, None, 1000),
]
# Rows whose printed figure does not follow from the table's own widths (paper errata): conv1's
# 7x7x3x64 kernel has 9.2K weights, 4c's widths give 497.5K, 5a's give 1018K.
ERRATA = {"conv1", "inception_4c", "inception_5a"}


def _expected_weights(row, c_in: int) -> int:
    """Weights (no biases) of a Table 1 row from its widths, as the paper counts them."""
    name, out, f1, r3, f3, r5, f5, proj, _ = row
    if name == "conv1":
        return 7 * 7 * c_in * out[-1]
    if name == "conv2":
        return c_in * r3 + 3 * 3 * r3 * f3
    if name == "predictions":
        return c_in * out[-1]
    if name.startswith("inception"):
        return c_in * f1 + c_in * r3 + 9 * r3 * f3 + c_in * r5 + 25 * r5 * f5 + c_in * proj
    return 0


def _row_layers(model, name):
    return [layer for layer in model.layers if layer.name == name or layer.name.startswith(name + "_")]


@pytest.fixture(scope="module")
def paper_model():
    return googlenet()


def test_table_1_output_sizes_and_params_layer_by_layer(paper_model):
    c_in = 3
    total_weights = 0
    for row in TABLE_1:
        name, out, *_, paper_k = row
        row_layers = _row_layers(paper_model, name)
        assert row_layers, name
        last = {"conv1": "conv1_relu", "conv2": "conv2_relu"}.get(name, name)
        last = paper_model.get_layer(last if last in [la.name for la in row_layers] else f"{name}_concat")
        assert tuple(last.output.shape[1:]) == out, name
        variables = [w for layer in row_layers for w in layer.weights]
        weights = sum(math.prod(w.shape) for w in variables if w.name == "kernel")
        biases = sum(math.prod(w.shape) for w in variables if w.name == "bias")
        assert weights == _expected_weights(row, c_in), name
        assert sum(layer.count_params() for layer in row_layers) == weights + biases, name
        if name not in ERRATA:
            assert weights / 1024 == pytest.approx(paper_k, rel=0.02, abs=1), name
        c_in = out[-1]
        total_weights += weights
    assert total_weights == 6_990_272
    assert paper_model.count_params() == pytest.approx(6.8e6, rel=0.03)  # "about 6.8M"


def test_depth_two_convs_per_inception_module(paper_model):
    # Table 1's "depth" column: each inception module is two convs deep (reduce -> 3x3/5x5)
    layer = paper_model.get_layer("inception_4a_3x3_conv")
    assert layer.input.name == paper_model.get_layer("inception_4a_3x3_reduce_relu").output.name


def test_aux_classifiers_shapes_and_params():
    main = googlenet(input_shape=(224, 224, 3), classes=10, lrn=False)
    aux = googlenet(input_shape=(224, 224, 3), classes=10, lrn=False, aux_logits=True)
    assert [tuple(o.shape) for o in aux.outputs] == [(None, 10)] * 3
    # each head: 1x1 conv 128, FC 1024 on 4x4x128, linear to the classes (paper section 5)
    head = lambda c: (c * 128 + 128) + (4 * 4 * 128 * 1024 + 1024) + (1024 * 10 + 10)  # noqa: E731
    assert aux.count_params() - main.count_params() == head(512) + head(528)
    y = aux(np.random.rand(1, 224, 224, 3).astype("float32"))
    assert all(np.allclose(np.sum(o, axis=-1), 1.0, atol=1e-5) for o in y)


def test_aux_classifiers_need_the_top():
    with pytest.raises(ValueError, match="aux_logits=True needs include_top=True.*got include_top=False"):
        googlenet(include_top=False, aux_logits=True)
    with pytest.raises(ModelArgumentError, match="aux_logits=True .* needs classes >= 1, got classes=0"):
        googlenet(input_shape=(96, 96, 3), classes=0, aux_logits=True)


def test_small_grey_input_and_options():
    model = googlenet(input_shape=(64, 64, 1), classes=3, batch_norm=True, lrn=False)
    names = [layer.name for layer in model.layers]
    assert "conv1_bn" in names and "pool1_norm" not in names
    y = model(np.random.rand(2, 64, 64, 1).astype("float32"))
    assert y.shape == (2, 3) and np.allclose(np.sum(y, axis=-1), 1.0, atol=1e-5)


def test_naive_and_reduced_inception_modules():
    inputs = keras.Input((8, 8, 20))
    naive = blocks.inception_module(inputs, 4, 6, 2, name="naive")
    assert naive.shape == (None, 8, 8, 4 + 6 + 2 + 20)  # the pool branch passes the 20 channels
    reduced = blocks.inception_module(inputs, 4, 6, 2, reduce_3x3=3, reduce_5x5=1, pool_proj=5, name="red")
    assert reduced.shape == (None, 8, 8, 4 + 6 + 2 + 5)
    model = keras.Model(inputs, [naive, reduced])
    count = lambda prefix: sum(la.count_params() for la in model.layers if la.name.startswith(prefix))  # noqa: E731
    assert count("naive_") == (20 + 1) * 4 + (9 * 20 + 1) * 6 + (25 * 20 + 1) * 2
    assert count("red_") == (
        (20 + 1) * 4 + (20 + 1) * 3 + (9 * 3 + 1) * 6 + (20 + 1) * 1 + (25 * 1 + 1) * 2 + (20 + 1) * 5
    )


@pytest.mark.tensorflow_only  # the reference is tf.nn.local_response_normalization
def test_lrn_matches_tensorflow_and_round_trips():
    import tensorflow as tf

    x = np.random.rand(2, 3, 3, 11).astype("float32") * 10
    layer = LocalResponseNormalization(size=5, alpha=1e-2, beta=0.75, bias=2.0)
    expected = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-2 / 5, beta=0.75)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5)
    clone = LocalResponseNormalization.from_config(layer.get_config())
    np.testing.assert_allclose(clone(x), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="size must be a positive odd number, got 4"):
        LocalResponseNormalization(size=4)
