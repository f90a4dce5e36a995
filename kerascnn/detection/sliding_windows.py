"""The convolutional implementation of sliding windows (Sermanet et al. 2014, OverFeat).

A classifier ``conv body -> Flatten -> Dense -> ... -> Dense`` trained on ``h x w`` crops is
rewritten as a fully convolutional network: the first Dense, which sees an ``fh x fw x c``
feature map, becomes an ``fh x fw`` convolution with the same weights reshaped, and each later
Dense a 1x1 convolution. One pass over a larger image then gives the classifier's output for
every window position at once, the windows ``stride`` pixels apart (the product of the body's
strides), sharing the convolutions of their overlap instead of recomputing them per crop.

The outputs equal those of classifying each crop exactly when the body's convolutions and
pools use ``valid`` padding; with ``same`` padding a crop is zero-padded at its edges where
the larger image has real pixels, so border activations differ.

Example:
    >>> conv_model = dense_head_to_conv(classifier)
    >>> scores = conv_model(big_images)   # (batch, rows, cols, classes), one per window
"""

from __future__ import annotations

import keras
from keras import layers

from kerascnn._keras_compat import call_count


def dense_head_to_conv(model: keras.Model, name: str | None = None) -> keras.Model:
    """A fully convolutional copy of a chain classifier with a Flatten + Dense head.

    Args:
        model: a single-input chain (``Sequential`` or a functional model without branches):
            layers that work at any spatial size (convolutions, pools, activations, batch norm,
            dropout), one ``Flatten``, then ``Dense`` layers (and activations or dropout).
        name: the new model's name (default ``{model.name}_conv``).

    Returns:
        A ``keras.Model`` taking ``(batch, H, W, channels)`` with ``H, W`` at least the
        classifier's input size and returning ``(batch, rows, cols, units)``; it shares the
        body's layers (and weights) with ``model``.

    Raises:
        ValueError: the model has no ``Flatten`` followed by ``Dense``, branches, or other
            layers after the ``Flatten``.
    """
    chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for layer in chain:
        if call_count(layer) != 1 or len(keras.tree.flatten(layer.input)) != 1:
            raise ValueError(f"dense_head_to_conv needs a chain of single-input layers; {layer.name!r} is not")
    flat = [i for i, layer in enumerate(chain) if isinstance(layer, layers.Flatten)]
    if len(flat) != 1 or not any(isinstance(layer, layers.Dense) for layer in chain[flat[0] + 1:]):
        raise ValueError(
            f"dense_head_to_conv needs one Flatten followed by Dense layers; {model.name!r} has "
            f"{len(flat)} Flatten layers: {[layer.__class__.__name__ for layer in chain]}"
        )
    head_allowed = (layers.Dense, layers.Activation, layers.Dropout, layers.ReLU, layers.Softmax)
    head = chain[flat[0] + 1:]
    for layer in head:
        if not isinstance(layer, head_allowed):
            raise ValueError(f"dense_head_to_conv: {layer.name!r} ({layer.__class__.__name__}) after the "
                             "Flatten has no convolutional equivalent here; expected Dense, activations, dropout")
    feature_shape = tuple(chain[flat[0]].input.shape[1:])
    if None in feature_shape:
        raise ValueError(f"dense_head_to_conv needs the classifier's fixed input size; its Flatten sees {feature_shape}")
    inputs = keras.Input((None, None, model.inputs[0].shape[-1]), name="input")
    x = inputs
    for layer in chain[: flat[0]]:
        x = layer(x)
    convs = []
    for layer in head:
        if isinstance(layer, layers.Dense):
            kernel = feature_shape[:2] if not convs else (1, 1)
            conv = layers.Conv2D(layer.units, kernel, activation=layer.activation, use_bias=layer.use_bias,
                                 name=f"{layer.name}_conv")
            x = conv(x)
            convs.append((conv, layer))
        else:
            x = layer(x)
    for conv, dense in convs:
        weights = dense.get_weights()
        weights[0] = weights[0].reshape(conv.kernel.shape)  # Flatten's (h, w, c) order is the kernel's
        conv.set_weights(weights)
    return keras.Model(inputs, x, name=name or f"{model.name}_conv")
