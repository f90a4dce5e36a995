"""Functional-API building blocks: tensor in, tensor out.

Every block takes a ``name`` and derives its layers' names from it hierarchically
(``name + "_conv"``, ``name + "_bn"``, ``name + "_relu"`` ...), so that two models built the
same way have the same layer names and weights port between them by name.

Example:
    >>> import keras
    >>> from kerascnn import blocks
    >>> x = keras.Input((32, 32, 3))
    >>> y = blocks.conv_bn_act(x, 16, 3, name="stem")
    >>> y = blocks.residual_block(y, 16, name="stage1_block1")
"""

from __future__ import annotations

from typing import Sequence

from keras import layers

BN_EPSILON = 1.001e-5  # keras.applications' ResNet/DenseNet value


def conv_bn_act(
    x,
    filters: int,
    kernel_size: int | Sequence[int] = 3,
    strides: int | Sequence[int] = 1,
    padding: str = "same",
    dilation_rate: int = 1,
    groups: int = 1,
    use_bias: bool | None = None,
    batch_norm: bool = True,
    bn_scale: bool = True,
    bn_epsilon: float = BN_EPSILON,
    bn_momentum: float = 0.99,
    activation: str | None = "relu",
    kernel_initializer: str = "glorot_uniform",
    name: str = "conv",
):
    """Convolution, then optional batch normalisation, then optional activation.

    Layer names: ``{name}_conv``, ``{name}_bn``, ``{name}_{activation}``.

    Args:
        x: input tensor ``(batch, height, width, channels)``.
        filters: output channels.
        kernel_size: kernel size.
        strides: stride.
        padding: ``"same"`` or ``"valid"``.
        dilation_rate: dilation (atrous convolution).
        groups: grouped convolution (``channels`` and ``filters`` divisible by it).
        use_bias: add a bias; by default only when there is no batch norm after the conv.
        batch_norm: add ``BatchNormalization``.
        bn_scale: learn the BN scale (gamma); InceptionV3 turns it off before ReLU.
        bn_epsilon: BN epsilon.
        bn_momentum: BN momentum.
        activation: activation name, or ``None``.
        kernel_initializer: initializer of the kernel.
        name: prefix of the layer names.

    Returns:
        The output tensor.
    """
    if use_bias is None:
        use_bias = not batch_norm
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        groups=groups,
        use_bias=use_bias,
        kernel_initializer=kernel_initializer,
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(
            axis=-1, epsilon=bn_epsilon, momentum=bn_momentum, scale=bn_scale, name=f"{name}_bn"
        )(x)
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x
