"""The building blocks: shapes, parameter counts by formula, keras.applications layer names and
weights, numerical identities, and a .keras round trip in safe mode."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from kerascnn import blocks


def _model(fn, shape=(8, 8, 8), **kwargs):
    x = keras.Input(shape)
    return keras.Model(x, fn(x, **kwargs))


def _signature(model):
    """``(layer name, weight shapes)`` of every layer with weights, in graph order."""
    return [(l.name, [tuple(w.shape) for w in l.weights]) for l in model.layers if l.weights]


def test_bottleneck_1x1_counts_and_shape():
    m = _model(blocks.bottleneck_1x1, filters=4, name="b")
    assert m.output.shape == (None, 8, 8, 4)
    assert m.count_params() == 8 * 4 + 4 * 4  # kernel, then BN gamma/beta/mean/var
    assert [l.name for l in m.layers[1:]] == ["b_conv", "b_bn", "b_relu"]
    plain = _model(blocks.bottleneck_1x1, filters=4, batch_norm=False, activation=None, name="p")
    assert plain.count_params() == (8 + 1) * 4


def test_residual_basic_identity_and_projection():
    identity = _model(blocks.residual_block, filters=8, name="r")
    assert identity.output.shape == (None, 8, 8, 8)
    assert "r_0_conv" not in [l.name for l in identity.layers]
    assert identity.count_params() == 2 * (9 * 8 * 8 + 4 * 8)  # two bias-free convs + BN
    strided = _model(blocks.residual_block, filters=16, strides=2, name="s")
    assert strided.output.shape == (None, 4, 4, 16)
    assert strided.get_layer("s_0_conv").kernel.shape == (1, 1, 8, 16)
    forced = _model(blocks.residual_block, filters=8, shortcut="projection", name="f")
    assert forced.get_layer("f_0_conv").kernel.shape == (1, 1, 8, 8)


def test_residual_bottleneck_preact_stride_subsamples_identity():
    m = _model(blocks.residual_block, shape=(8, 8, 16), filters=4, kind="bottleneck", strides=2, preact=True, name="v2")
    assert m.output.shape == (None, 4, 4, 16)
    names = [l.name for l in m.layers]
    assert "v2_0_pool" in names and "v2_0_conv" not in names
    assert m.get_layer("v2_2_conv").strides == (2, 2)  # the stride sits in the 3x3 conv


def test_residual_block_errors_name_what_was_seen():
    x = keras.Input((8, 8, 8))
    with pytest.raises(ValueError, match="identity shortcut needs as many input as output channels, got 8 in and 16 out"):
        blocks.residual_block(x, 16, shortcut="identity", name="e")
    with pytest.raises(ValueError, match="kind must be 'basic' or 'bottleneck', got 'wide'"):
        blocks.residual_block(x, 8, kind="wide")
    with pytest.raises(ValueError, match="shortcut must be .* got 'skip'"):
        blocks.residual_block(x, 8, shortcut="skip")


def test_pool_pad_shortcut_is_option_a():
    """He et al.'s option A, as dlib has it: zero residual -> relu(avg-pooled input, zero channels);
    a 3x3/2 unpadded conv on 8x8 gives 3x3, the pooled shortcut 4x4, the sum 4x4."""
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    m = _model(blocks.residual_block, (8, 8, 4), filters=6, strides=2, shortcut="pool_pad", norm="affine",
               strided_padding="valid", use_bias=True, name="a")
    assert m.get_layer("a_1_conv").output.shape[1:3] == (3, 3) and m.output.shape[1:] == (4, 4, 6)
    assert m.get_layer("a_1_affine").count_params() == 12  # scale + shift per channel, no statistics
    _zero_kernels(m)
    pooled = x.reshape(2, 4, 2, 4, 2, 4).mean(axis=(2, 4))
    expected = np.concatenate([np.maximum(pooled, 0), np.zeros((2, 4, 4, 2), np.float32)], axis=-1)
    np.testing.assert_allclose(m.predict(x, verbose=0), expected, atol=1e-6)
    with pytest.raises(ValueError, match="pool_pad shortcut pads channels with zeros and cannot drop any, got 4 in and 2 out"):
        blocks.residual_block(keras.Input((8, 8, 4)), 2, shortcut="pool_pad", name="p")
    with pytest.raises(ValueError, match="strided_padding must be 'symmetric' or 'valid', got 'same'"):
        blocks.residual_block(keras.Input((8, 8, 4)), 4, strided_padding="same")
    with pytest.raises(ValueError, match="norm must be one of"):
        blocks.conv_bn_act(keras.Input((8, 8, 4)), 4, norm="group")


def test_zero_pad_add_aligns_top_left_and_pads_channels():
    from kerascnn.layers import ZeroPadAdd

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 3, 4)).astype("float32"), rng.normal(size=(2, 4, 4, 2)).astype("float32")
    expected = np.zeros((2, 4, 4, 4), np.float32)
    expected[:, :3, :3, :4] += a
    expected[:, :4, :4, :2] += b
    np.testing.assert_allclose(np.asarray(ZeroPadAdd()([a, b])), expected, atol=1e-6)
    assert ZeroPadAdd().compute_output_shape([(None, 3, 3, 4), (None, 4, 4, 2)]) == (None, 4, 4, 4)


def _zero_kernels(model):
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])


def test_residual_with_zero_residual_is_its_shortcut():
    """Zero convs: v1 gives relu(x) (BN of zeros is beta = 0); pre-activation gives x exactly."""
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype("float32")
    for preact, expected in ((False, np.maximum(x, 0)), (True, x)):
        m = _model(blocks.residual_block, filters=2, kind="bottleneck", expansion=4, preact=preact, name="z")
        _zero_kernels(m)
        np.testing.assert_allclose(m.predict(x, verbose=0), expected, atol=1e-6)


# keras.applications' own block functions, to compare layer names and weight shapes with ours
KERAS_BLOCKS = [
    ("resnet", "residual_block_v1", dict(filters=16, name="conv2_block1"),
     dict(filters=16, kind="bottleneck", use_bias=True, name="conv2_block1")),
    ("resnet", "residual_block_v2", dict(filters=16, conv_shortcut=True, name="conv2_block1"),
     dict(filters=16, kind="bottleneck", preact=True, name="conv2_block1")),
    ("resnet", "residual_block_v2", dict(filters=4, stride=2, name="conv3_block4"),
     dict(filters=4, kind="bottleneck", strides=2, preact=True, name="conv3_block4")),
    ("densenet", "dense_block", dict(blocks=3, name="conv2"), dict(blocks=3, name="conv2")),
    ("densenet", "transition_block", dict(reduction=0.5, name="pool2"), dict(reduction=0.5, name="pool2")),
    ("mobilenet", "_depthwise_conv_block", dict(pointwise_conv_filters=16, alpha=1.0, strides=(2, 2), block_id=4),
     dict(filters=16, strides=2, name="conv", block_id=4)),
    ("mobilenet_v2", "_inverted_res_block", dict(expansion=6, stride=2, alpha=1.0, filters=24, block_id=3),
     dict(filters=24, strides=2, name="block_3")),
]
OURS = {"residual_block_v1": "residual_block", "residual_block_v2": "residual_block", "dense_block": "dense_block",
        "transition_block": "transition", "_depthwise_conv_block": "separable_conv",
        "_inverted_res_block": "inverted_residual"}


@pytest.mark.parametrize("module,fn,theirs,ours", KERAS_BLOCKS, ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.slow
def test_blocks_match_keras_applications(module, fn, theirs, ours):
    import importlib

    keras_fn = getattr(importlib.import_module(f"keras.src.applications.{module}"), fn)
    reference = _model(keras_fn, shape=(9, 9, 16), **theirs)
    mine = _model(getattr(blocks, OURS[fn]), shape=(9, 9, 16), **ours)
    assert _signature(mine) == _signature(reference)
    assert mine.output.shape == reference.output.shape
    for a, b in zip(reference.layers, mine.layers):
        if a.weights:
            mine.get_layer(a.name).set_weights(a.get_weights())
    x = np.random.default_rng(1).normal(size=(2, 9, 9, 16)).astype("float32")
    np.testing.assert_allclose(mine.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-5)


def test_dense_block_and_transition_shapes():
    m = _model(lambda x: blocks.transition(blocks.dense_block(x, 3, growth_rate=4, name="d"), 0.5, name="t"))
    assert m.output.shape == (None, 4, 4, (8 + 3 * 4) // 2)
    assert m.get_layer("d_block3_concat").output.shape[-1] == 8 + 3 * 4


def test_separable_conv_parameters():
    m = _model(blocks.separable_conv, filters=12, depth_multiplier=2, name="s")
    dw = 9 * 8 * 2 + 4 * 16  # depthwise kernel + BN on 16 channels
    pw = 16 * 12 + 4 * 12
    assert m.count_params() == dw + pw
    assert m.output.shape == (None, 8, 8, 12)
    assert _model(blocks.separable_conv, filters=4, strides=2).output.shape == (None, 4, 4, 4)


def test_inverted_residual_adds_only_when_shapes_match():
    same = _model(blocks.inverted_residual, filters=8, name="b")
    assert "b_add" in [l.name for l in same.layers]
    assert same.get_layer("b_expand").kernel.shape == (1, 1, 8, 48)
    other = _model(blocks.inverted_residual, filters=16, expansion=1, name="c")
    names = [l.name for l in other.layers]
    assert "c_add" not in names and "c_expand" not in names
    assert _model(blocks.inverted_residual, filters=8, strides=2).output.shape == (None, 4, 4, 8)


def test_squeeze_excite_against_numpy():
    m = _model(blocks.squeeze_excite, ratio=0.25, name="se")
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 8)).astype("float32")
    w1, b1 = m.get_layer("se_reduce").get_weights()
    w2, b2 = m.get_layer("se_expand").get_weights()
    squeezed = x.mean(axis=(1, 2))
    gate = 1 / (1 + np.exp(-(np.maximum(squeezed @ w1[0, 0] + b1, 0) @ w2[0, 0] + b2)))
    np.testing.assert_allclose(m.predict(x, verbose=0), x * gate[:, None, None, :], rtol=1e-5, atol=1e-6)
    assert w1.shape == (1, 1, 8, 2)


def test_fire_module_against_numpy():
    """torchvision's Fire(96, 16, 64, 64): 11,920 parameters; outputs from the definition."""
    m = _model(blocks.fire_module, shape=(6, 6, 96), squeeze=16, expand_1x1=64, expand_3x3=64, name="fire2")
    assert m.count_params() == (96 + 1) * 16 + (16 + 1) * 64 + (9 * 16 + 1) * 64 == 11_920
    assert m.output.shape == (None, 6, 6, 128)
    assert [l.name for l in m.layers[1:]] == [
        "fire2_squeeze_conv", "fire2_squeeze_relu", "fire2_expand1x1_conv", "fire2_expand3x3_conv",
        "fire2_expand1x1_relu", "fire2_expand3x3_relu", "fire2_concat"]
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 96)).astype("float32")
    ws, bs = m.get_layer("fire2_squeeze_conv").get_weights()
    w1, b1 = m.get_layer("fire2_expand1x1_conv").get_weights()
    w3, b3 = m.get_layer("fire2_expand3x3_conv").get_weights()
    s = np.maximum(x @ ws[0, 0] + bs, 0)
    padded = np.pad(s, ((0, 0), (1, 1), (1, 1), (0, 0)))
    e3 = sum(padded[:, i:i + 6, j:j + 6] @ w3[i, j] for i in range(3) for j in range(3)) + b3
    expected = np.concatenate([np.maximum(s @ w1[0, 0] + b1, 0), np.maximum(e3, 0)], axis=-1)
    np.testing.assert_allclose(m.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_residual_stride_in_3x3_and_se_before_the_sum():
    """SE-ResNet as timm builds it: stride on the 3x3 conv, SE on the residual before the sum."""
    m = _model(blocks.residual_block, shape=(8, 8, 32), filters=16, kind="bottleneck", strides=2,
               se_ratio=1 / 16, stride_in_3x3=True, name="b")
    assert m.get_layer("b_1_conv").strides == (1, 1) and m.get_layer("b_2_conv").strides == (2, 2)
    assert m.get_layer("b_se_reduce").kernel.shape == (1, 1, 64, 4)
    add_inputs = {t._keras_history[0].name for t in keras.tree.flatten(m.get_layer("b_add").input)}
    assert add_inputs == {"b_0_bn", "b_se_excite"}
    default = _model(blocks.residual_block, shape=(8, 8, 32), filters=16, kind="bottleneck", strides=2, name="b")
    assert default.get_layer("b_1_conv").strides == (2, 2)  # keras.applications' place


def test_highway_gates_carry_and_transform():
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 8)).astype("float32")
    carry = _model(blocks.highway_block, gate_bias=-50.0, name="h")
    np.testing.assert_allclose(carry.predict(x, verbose=0), x, atol=1e-5)  # T ~ 0: y = x
    transform = _model(blocks.highway_block, gate_bias=50.0, name="h")  # T ~ 1: y = H(x)
    h = keras.Model(transform.inputs, transform.get_layer("h_h").output).predict(x, verbose=0)
    np.testing.assert_allclose(transform.predict(x, verbose=0), h, atol=1e-5)
    assert transform.count_params() == 2 * (9 * 8 * 8 + 8)


@pytest.mark.slow
def test_blocks_round_trip_through_keras_file(tmp_path):
    def all_blocks(x):
        x = blocks.residual_block(x, 8, name="r1")
        x = blocks.residual_block(x, 4, kind="bottleneck", strides=2, preact=True, se_ratio=0.5, name="r2")
        x = blocks.dense_block(x, 2, growth_rate=4, name="d")
        x = blocks.transition(x, name="t")
        x = blocks.separable_conv(x, 8, name="s")
        x = blocks.inverted_residual(x, 8, name="i")
        return blocks.highway_block(x, name="h")

    m = _model(all_blocks, shape=(16, 16, 8))
    x = np.random.default_rng(4).normal(size=(2, 16, 16, 8)).astype("float32")
    m.save(tmp_path / "blocks.keras")
    loaded = keras.saving.load_model(tmp_path / "blocks.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)


def test_inception_resnet_block_is_input_plus_scaled_up_projection():
    """x + scale * up(concat(branches)): with the branches' output fixed, the block is that sum."""
    m = _model(blocks.inception_resnet_block, shape=(5, 5, 16), kind="block17", scale=0.1,
               widths=((4,), (4, 4, 6)), name="b")
    assert m.output.shape == (None, 5, 5, 16) and m.layers[-1].name == "b_out"
    assert m.get_layer("b_branch1_2_conv").kernel.shape == (1, 7, 4, 4)
    assert m.get_layer("b_branch1_3_conv").kernel.shape == (7, 1, 4, 6)
    assert not m.get_layer("b_branch0_1_bn").scale and m.get_layer("b_branch0_1_bn").epsilon == 1e-3
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 16)).astype("float32")
    mixed = keras.Model(m.input, m.get_layer("b_concat").output)(x)
    up = m.get_layer("b_up_conv")
    to_numpy = keras.ops.convert_to_numpy
    expected = np.maximum(x + 0.1 * (to_numpy(mixed) @ to_numpy(up.kernel)[0, 0] + to_numpy(up.bias)), 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(m(x)), expected, atol=1e-5)
    linear = _model(blocks.inception_resnet_block, shape=(3, 3, 8), kind="block8", scale=1.0, activation=None,
                    batch_norm=False, name="c")
    assert "c_add" not in [l.name for l in linear.layers] and linear.layers[-1].name == "c_out"
    assert linear.get_layer("c_branch1_1_conv").use_bias and "c_branch1_1_bn" not in [l.name for l in linear.layers]
    with pytest.raises(ValueError, match=r"kind must be one of \('block35', 'block17', 'block8'\), got 'block9'"):
        _model(blocks.inception_resnet_block, kind="block9", scale=1.0)
    with pytest.raises(ValueError, match=r"block35 has branches of \[1, 2, 3\] convs"):
        _model(blocks.inception_resnet_block, kind="block35", scale=1.0, widths=((4,), (4,)))


def test_reduction_block_branches_and_sizes():
    """Inception-ResNet-v1's reduction B: three conv branches ending 3x3/2 valid, and a max pool."""
    m = _model(blocks.reduction_block, shape=(9, 9, 8), widths=((4, 6), (4, 5), (4, 4, 3)), name="r")
    assert m.output.shape == (None, 4, 4, 6 + 5 + 3 + 8)
    kernels = {l.name: l.kernel.shape[:2] for l in m.layers if isinstance(l, layers.Conv2D)}
    assert kernels == {"r_branch0_1_conv": (1, 1), "r_branch0_2_conv": (3, 3), "r_branch1_1_conv": (1, 1),
                       "r_branch1_2_conv": (3, 3), "r_branch2_1_conv": (1, 1), "r_branch2_2_conv": (3, 3),
                       "r_branch2_3_conv": (3, 3)}
    assert [m.get_layer(n).strides[0] for n in ("r_branch0_2_conv", "r_branch2_2_conv", "r_branch2_3_conv")] == [2, 1, 2]
    single = _model(blocks.reduction_block, shape=(9, 9, 8), widths=((4,),), name="s")
    assert single.get_layer("s_branch0_1_conv").kernel.shape == (3, 3, 8, 4) and single.output.shape[1] == 4
    with pytest.raises(ValueError, match="every reduction branch has 1 to 3 convs"):
        _model(blocks.reduction_block, widths=((1, 2, 3, 4),))


def test_per_image_standardization_is_facenets_prewhiten(tmp_path):
    """FaceNet's prewhiten (NumPy, population std, floored at 1/sqrt(n)), image by image."""
    from kerascnn.layers import PerImageStandardization

    x = np.random.default_rng(0).uniform(0, 255, size=(3, 6, 5, 3)).astype("float32")
    x[2] = 7.0  # a flat image: std 0, floored
    expected = [(im - im.mean()) / max(im.std(), 1 / np.sqrt(im.size)) for im in x.astype(np.float64)]
    inputs = keras.Input((6, 5, 3))
    model = keras.Model(inputs, PerImageStandardization(name="p")(inputs))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), np.stack(expected), atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=0)
