"""inception_v3 is keras.applications' InceptionV3: parameter counts and ported outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascnn import blocks, port_weights
from kerascnn.errors import InputShapeError
from kerascnn.models.inception import inception_v3


@pytest.mark.parametrize("include_top, expected", [(True, 23_851_784), (False, 21_802_784)])
@pytest.mark.slow
def test_param_counts_match_keras_applications(include_top, expected):
    # REFERENCE.md: keras.applications.InceptionV3(weights=None), 299x299x3, 1000 classes
    assert inception_v3(include_top=include_top).count_params() == expected


def _randomize(model, rng):
    for layer in model.layers:
        if layer.weights:
            values = [rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path
                      else rng.normal(0, 0.1, w.shape).astype("float32") for w in layer.weights]
            layer.set_weights(values)


@pytest.mark.slow
def test_ported_weights_give_identical_outputs():
    rng = np.random.default_rng(0)
    theirs = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3), classes=7)
    _randomize(theirs, rng)  # moving statistics too, so a misplaced BN would show
    ours = inception_v3(input_shape=(75, 75, 3), classes=7)
    assert port_weights(theirs, ours, by="order") == len(theirs.weights) == 378
    x = rng.uniform(-1, 1, (2, 75, 75, 3)).astype("float32")
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), atol=1e-5)


def test_min_input_size_is_75():
    with pytest.raises(InputShapeError, match="input 74x74 is too small.*at least 75x75"):
        inception_v3(input_shape=(74, 74, 3))


def test_features_only_stages():
    model = inception_v3(input_shape=(75, 75, 1), features_only=True)
    assert [o.shape[-1] for o in model.outputs] == [64, 192, 288, 768, 2048]
    assert [o.shape[1] for o in model.outputs] == [35, 15, 7, 3, 1]


def test_factorised_modules_shapes_and_names():
    inputs = keras.Input((9, 9, 16))
    a = blocks.inception_a(inputs, pool_proj=8, filters_1x1=4, filters_5x5=(2, 4), filters_3x3dbl=(2, 4, 4), name="a")
    b = blocks.inception_b(a, filters_nxn=3, n=3, filters_out=5, name="b")
    c = blocks.inception_c(b, filters_1x1=2, filters_3x3=3, filters_3x3dbl=(4, 3), pool_proj=2, name="c")
    ra = blocks.reduction_a(c, filters_3x3=6, filters_3x3dbl=(2, 3, 4), name="ra")
    rb = blocks.reduction_b(c, filters_3x3=(2, 3), filters_nxn=4, n=3, name="rb")
    assert a.shape == (None, 9, 9, 4 + 4 + 4 + 8)
    assert b.shape == (None, 9, 9, 4 * 5)
    assert c.shape == (None, 9, 9, 2 + 2 * 3 + 2 * 3 + 2)
    assert ra.shape == (None, 4, 4, 6 + 4 + 16)  # the max pool passes c's 16 channels
    assert rb.shape == (None, 4, 4, 3 + 4 + 16)
    model = keras.Model(inputs, [ra, rb])
    # module B's factorised n x n convs are 1xn then nx1: kernel shapes (1, 3) and (3, 1)
    assert model.get_layer("b_nxn_2_conv").kernel.shape[:2] == (1, 3)
    assert model.get_layer("b_nxn_3_conv").kernel.shape[:2] == (3, 1)
    assert model.get_layer("c_3x3_1x3_conv").kernel.shape[:2] == (1, 3)
    # InceptionV3's conv + BN: no bias, BN without scale
    assert not model.get_layer("a_1x1_conv").use_bias and not model.get_layer("a_1x1_bn").scale
