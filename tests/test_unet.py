"""U-Net: the paper's 572 -> 388 with unpadded convs, same-size output with padded ones."""

from __future__ import annotations

import numpy as np
import pytest

from kerascnn.errors import InputShapeError
from kerascnn.inspect import conv_params
from kerascnn.models.unet import unet, valid_sizes


def _paper_params(depth=4, base=64, in_channels=1, classes=2) -> int:
    """Parameters of the paper's network from its figure 1, with the textbook conv formula."""
    total, c = 0, in_channels
    for i in range(depth + 1):  # contracting path and bottom: two 3x3 convs per level
        f = base * 2**i
        total += conv_params(3, c, f) + conv_params(3, f, f)
        c = f
    for i in range(depth - 1, -1, -1):  # expanding path: 2x2 up-conv halving, concat, two 3x3
        f = base * 2**i
        total += conv_params(2, c, f) + conv_params(3, 2 * f, f) + conv_params(3, f, f)
        c = f
    return total + conv_params(1, c, classes)


def test_paper_unet_572_in_388_out():
    model = unet()  # the paper's defaults: 572x572x1, valid padding, depth 4, 64 filters, 2 classes
    assert model.input.shape == (None, 572, 572, 1)
    assert model.output.shape == (None, 388, 388, 2)
    assert model.count_params() == _paper_params() == 31_030_658
    # the crops of the paper's figure 1: 568 -> 392, 280 -> 200, 136 -> 104, 64 -> 56
    crops = [model.get_layer(f"up{i}_crop").output.shape[1] for i in (1, 2, 3, 4)]
    assert crops == [392, 200, 104, 56]
    assert [model.get_layer(f"down{i}_2_relu").output.shape[1] for i in (1, 2, 3, 4)] == [568, 280, 136, 64]


def test_valid_unet_runs_and_crops_the_center():
    model = unet(input_shape=(188, 188, 1), base_filters=2, classifier_activation=None)
    x = np.random.rand(1, 188, 188, 1).astype("float32")
    assert model(x).shape == (1, 4, 4, 2)
    # the crop keeps the center of the contracting map: 184 -> 8 at level 1 is rows 88..95
    import keras

    probe = keras.Model(model.input, [model.get_layer("down1_2_relu").output, model.get_layer("up1_crop").output])
    full, cropped = probe(x)
    np.testing.assert_allclose(cropped, full[:, 88:96, 88:96, :], rtol=1e-6)


def test_same_padding_keeps_the_size_and_takes_any_multiple():
    model = unet(input_shape=(None, None, 3), classes=5, padding="same", depth=3, base_filters=4)
    for h, w in ((32, 48), (16, 8)):
        y = model(np.random.rand(2, h, w, 3).astype("float32"))
        assert y.shape == (2, h, w, 5)
        np.testing.assert_allclose(np.sum(y, axis=-1), 1.0, atol=1e-5)  # per-pixel softmax


def test_features_only_top_and_pooling():
    kwargs = dict(input_shape=(32, 32, 1), padding="same", depth=3, base_filters=4)
    features = unet(features_only=True, **kwargs)
    assert [tuple(o.shape) for o in features.outputs] == [
        (None, 32, 32, 4), (None, 16, 16, 8), (None, 8, 8, 16), (None, 4, 4, 32)
    ]
    assert not any(layer.name.startswith("up") for layer in features.layers)  # encoder only
    assert unet(include_top=False, **kwargs).output.shape == (None, 32, 32, 4)
    assert unet(include_top=False, pooling="avg", **kwargs).output.shape == (None, 4)
    assert unet(include_top=False, pooling="max", **kwargs).output.shape == (None, 4)


def test_valid_sizes():
    assert valid_sizes(4) == (188, 16)  # 572 = 188 + 24 * 16
    assert valid_sizes(1) == (18, 2)


def test_bad_sizes_name_the_rule_and_a_fix():
    with pytest.raises(InputShapeError, match=r"must be 188 \+ 16k .* got 570; try 556 or 572"):
        unet(input_shape=(570, 570, 1))
    with pytest.raises(InputShapeError, match=r"must be 188 \+ 16k .* got 100; try 188"):
        unet(input_shape=(100, 100, 1))
    with pytest.raises(InputShapeError, match="padding='valid' needs a fixed input height and width"):
        unet(input_shape=(None, None, 1))
    with pytest.raises(InputShapeError, match="multiple of 8, got 36"):
        unet(input_shape=(36, 32, 1), padding="same", depth=3)
    with pytest.raises(ValueError, match="padding must be one of"):
        unet(padding="full")
