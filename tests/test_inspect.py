"""kerascnn.inspect against the textbook formulas, real Keras layers and TensorFlow's profiler."""

from __future__ import annotations

import re

import keras
import pytest
from keras import layers

from kerascnn.errors import InputShapeError
from kerascnn.inspect import conv_output_size, conv_params, layer_table, summary


def test_conv_output_size_matches_keras():
    cases = [(32, 3, 0, 1, 1), (32, 3, 1, 1, 1), (31, 5, 2, 2, 1), (224, 7, 3, 2, 1), (17, 3, 0, 2, 1),
             (20, 3, 2, 1, 2), (9, 1, 0, 3, 1)]
    for n, f, p, s, d in cases:
        inputs = keras.Input((n, n, 2))
        x = layers.ZeroPadding2D(p)(inputs) if p else inputs
        out = layers.Conv2D(3, f, strides=s, dilation_rate=d)(x)
        expected = (n + 2 * p - d * (f - 1) - 1) // s + 1  # floor((n + 2p - f) / s) + 1 when d == 1
        assert conv_output_size(n, f, p, s, d) == expected == out.shape[1]
        assert layer_table(keras.Model(inputs, out)).rows[-1].output_shape == (None, expected, expected, 3)


def test_conv_output_size_rejects_too_small_input():
    with pytest.raises(InputShapeError, match=r"input 2 with padding 0 is smaller than the kernel's extent 5"):
        conv_output_size(2, 3, 0, 1, d=2)


def test_conv_params_matches_keras_and_table():
    for f, c_in, c_out, bias in [(3, 3, 16, True), (5, 8, 4, False), (1, 64, 256, True), ((1, 7), 128, 192, False)]:
        inputs = keras.Input((9, 9, c_in))
        out = layers.Conv2D(c_out, f, use_bias=bias, name="c")(inputs)
        model = keras.Model(inputs, out)
        area = f * f if isinstance(f, int) else f[0] * f[1]
        expected = (area * c_in + bias) * c_out  # (f^2 c_in + 1) c_out
        assert conv_params(f, c_in, c_out, bias) == expected == model.get_layer("c").count_params()
        table = layer_table(model)
        assert table.rows[-1].params == table.total_params == model.count_params()


def test_three_stacked_3x3_convs_see_7x7_and_strides_multiply():
    inputs = keras.Input((64, 64, 1))
    x = inputs
    for i in range(3):
        x = layers.Conv2D(4, 3, padding="same", name=f"c{i}")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)  # rf 7 + (2-1)*1 = 8, jump 2
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="s2")(x)  # rf 8 + 2*2 = 12, jump 4
    x = layers.Conv2D(4, 3, dilation_rate=2, padding="same", name="dil")(x)  # rf 12 + 2*2*4 = 28
    rows = {r.name: r for r in layer_table(keras.Model(inputs, x)).rows}
    assert [rows[f"c{i}"].receptive_field for i in range(3)] == [(3, 3), (5, 5), (7, 7)]
    assert rows["c2"].jump == (1, 1)
    assert rows["pool"].receptive_field == (8, 8) and rows["pool"].jump == (2, 2)
    assert rows["s2"].receptive_field == (12, 12) and rows["s2"].jump == (4, 4)
    assert rows["dil"].receptive_field == (28, 28) and rows["dil"].jump == (4, 4)


def test_branches_take_the_maximum_and_asymmetric_kernels_per_axis():
    inputs = keras.Input((16, 16, 2))
    a = layers.Conv2D(2, 1, name="a")(inputs)
    b = layers.Conv2D(2, (1, 7), padding="same", name="b")(inputs)
    b = layers.Conv2D(2, (3, 1), strides=(2, 1), padding="same", name="b2")(b)
    a = layers.MaxPooling2D((2, 1), name="apool")(a)
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    rows = {r.name: r for r in layer_table(keras.Model(inputs, x)).rows}
    assert rows["b"].receptive_field == (1, 7)
    assert rows["b2"].receptive_field == (3, 7) and rows["b2"].jump == (2, 1)
    assert rows["cat"].receptive_field == (3, 7)
    assert rows["gap"].receptive_field is None and "all" in layer_table(keras.Model(inputs, x)).to_text()


def _tf_flops_per_op(model, input_shape):
    """FLOPs of each op of the model's inference graph, by TensorFlow's registered statistics."""
    import tensorflow as tf
    from tensorflow.python.framework import ops as tf_ops

    spec = tf.TensorSpec((1, *input_shape), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    flops = []
    for op in graph.get_operations():
        try:
            value = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except ValueError:  # op without registered statistics
            continue
        if value:
            flops.append((op.name, int(value)))
    return flops, graph


def test_flops_match_tensorflow_per_layer():
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Add(name="add")([x, y])
    x = layers.MaxPooling2D(2, name="maxpool")(x)
    x = layers.AveragePooling2D(2, name="avgpool")(x)
    x = layers.SeparableConv2D(4, 3, name="sep")(x)
    x = layers.Conv2DTranspose(4, 2, strides=2, name="tconv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(5, name="dense")(x)
    model = keras.Model(inputs, x)
    tf_flops, _ = _tf_flops_per_op(model, (32, 32, 3))
    table = layer_table(model)
    for row in table.rows:
        expected = sum(v for name, v in tf_flops if re.search(rf"/{row.name}(_\d+)?/", name))
        # BN's per-channel terms (rsqrt of the variance...) are left out: 1.2% here
        assert row.flops == pytest.approx(expected, rel=0.02), row.name
    assert table.rows[0].flops == 2 * 3 * 3 * 3 * 8 * 16 * 16 + 8 * 16 * 16  # 2 k^2 c_in c_out HW + bias


def test_grouped_conv_flops_divide_by_groups():
    # TensorFlow runs a grouped conv inside a nested function its profiler cannot see: formula only
    inputs = keras.Input((10, 10, 8))
    x = layers.Conv2D(6, 3, groups=2, use_bias=False, name="grouped")(inputs)
    row = layer_table(keras.Model(inputs, x)).rows[0]
    assert row.flops == 2 * 3 * 3 * (8 // 2) * 6 * 8 * 8
    assert row.params == conv_params(3, 8 // 2, 6, bias=False)


@pytest.mark.slow
def test_resnet50_flops_match_profiler_and_receptive_field():
    import tensorflow as tf

    model = keras.applications.ResNet50(weights=None)
    _, graph = _tf_flops_per_op(model, (224, 224, 3))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(
        graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    table = layer_table(model)
    assert table.total_flops == pytest.approx(profile.total_float_ops, rel=0.02)
    assert 7.5e9 < table.total_flops < 8.0e9  # the familiar "3.9 GMACs" of ResNet50
    assert table.total_params == model.count_params()
    rows = {r.name: r for r in table.rows}
    assert rows["conv1_conv"].receptive_field == (7, 7) and rows["conv1_conv"].jump == (2, 2)
    assert rows["pool1_pool"].receptive_field == (11, 11) and rows["pool1_pool"].jump == (4, 4)
    assert rows["conv5_block3_out"].jump == (32, 32)
    # the well-known figure for ResNet50's last layer (Araujo et al. 2019, Distill): 483
    assert rows["conv5_block3_out"].receptive_field == (483, 483)


def test_input_shape_argument_and_unknown_sizes():
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, strides=2, name="c")(inputs)
    model = keras.Model(inputs, x)
    with pytest.raises(InputShapeError, match=r"unknown sizes; pass input_shape"):
        layer_table(model)
    table = layer_table(model, input_shape=(15, 15, 3))
    assert table.rows[-1].output_shape == (None, 7, 7, 4)
    assert table.total_flops == 2 * 9 * 3 * 4 * 49 + 4 * 49


def test_nested_model_is_expanded_and_params_counted_once():
    inner_in = keras.Input((8, 8, 3))
    inner = keras.Model(inner_in, layers.Conv2D(4, 3, padding="same", name="c")(inner_in), name="inner")
    inputs = keras.Input((8, 8, 3))
    x = inner(inputs)
    x = layers.Conv2D(2, 3, name="outer_c")(x)
    model = keras.Model(inputs, x)
    table = layer_table(model)
    names = [r.name for r in table.rows]
    assert names == ["inner/c", "outer_c"]
    assert table.rows[1].receptive_field == (5, 5)
    assert table.total_params == model.count_params()


def test_non_functional_model_is_rejected():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional or Sequential keras.Model, got Net"):
        layer_table(Net())


def test_summary_prints_the_table():
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, layers.Conv2D(2, 3, name="conv_a")(inputs))
    printed = []
    table = summary(model, print_fn=printed.append)
    assert printed == [table.to_text()]
    assert "conv_a" in printed[0] and "Conv2D" in printed[0] and "total params: 20" in printed[0]
