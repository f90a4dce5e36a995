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

import keras
from keras import layers

from kerascnn.layers import Affine, ZeroPadAdd

BN_EPSILON = 1.001e-5  # keras.applications' ResNet/DenseNet value
NORMS = ("batch", "affine")
SHORTCUTS = (None, "identity", "projection", "pool_pad")


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
    norm: str = "batch",
    bn_scale: bool = True,
    bn_epsilon: float = BN_EPSILON,
    bn_momentum: float = 0.99,
    activation: str | None = "relu",
    kernel_initializer: str = "glorot_uniform",
    name: str = "conv",
):
    """Convolution, then optional batch normalisation, then optional activation.

    Layer names: ``{name}_conv``, ``{name}_bn`` (or ``{name}_affine``), ``{name}_{activation}``.

    Args:
        x: input tensor ``(batch, height, width, channels)``.
        filters: output channels.
        kernel_size: kernel size.
        strides: stride.
        padding: ``"same"`` or ``"valid"``.
        dilation_rate: dilation (atrous convolution).
        groups: grouped convolution (``channels`` and ``filters`` divisible by it).
        use_bias: add a bias; by default only when there is no batch norm after the conv.
        batch_norm: add a normalisation layer after the conv.
        norm: which one: ``"batch"`` (``BatchNormalization``) or ``"affine"``
            (:class:`kerascnn.layers.Affine`, a per-channel scale and shift: batch norm folded for
            inference, as dlib's networks ship).
        bn_scale: learn the BN scale (gamma); InceptionV3 turns it off before ReLU.
        bn_epsilon: BN epsilon.
        bn_momentum: BN momentum.
        activation: activation name, or ``None``.
        kernel_initializer: initializer of the kernel.
        name: prefix of the layer names.

    Returns:
        The output tensor.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
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
    if batch_norm and norm == "affine":
        x = Affine(name=f"{name}_affine")(x)
    elif batch_norm:
        x = layers.BatchNormalization(
            axis=-1, epsilon=bn_epsilon, momentum=bn_momentum, scale=bn_scale, name=f"{name}_bn"
        )(x)
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def bottleneck_1x1(x, filters: int, activation: str | None = "relu", name: str = "bottleneck", **kwargs):
    """A 1x1 convolution (+ BN + activation) that changes the channel count cheaply.

    Network-in-Network / GoogLeNet's dimension reduction: ``filters`` mixes of the input
    channels at every pixel, ``(c_in + 1) * filters`` weights. Layer names as
    :func:`conv_bn_act` (``{name}_conv``, ``{name}_bn``, ``{name}_{activation}``).

    Args:
        x: input tensor.
        filters: output channels.
        activation: activation name, or ``None``.
        name: prefix of the layer names.
        **kwargs: any other argument of :func:`conv_bn_act` (``strides``, ``batch_norm`` ...).

    Returns:
        The output tensor.
    """
    return conv_bn_act(x, filters, 1, activation=activation, name=name, **kwargs)


# --- residual, dense, separable and gated blocks (models-A) -------------------------------------


def _activation(x, activation: str, name: str):
    """``activation`` named ``{name}_{activation}``; ReLU6 is keras.applications' ``ReLU(6.0)``
    named ``{name}_relu``."""
    if activation == "relu6":
        return layers.ReLU(6.0, name=f"{name}_relu")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x)


def _bn_act(x, name: str, activation: str = "relu", bn_epsilon: float = BN_EPSILON):
    """Batch norm then activation (the pre-activation order): ``{name}_bn``, ``{name}_relu``."""
    x = layers.BatchNormalization(axis=-1, epsilon=bn_epsilon, name=f"{name}_bn")(x)
    return _activation(x, activation, name)


def _pad_conv_bn_act(x, filters, kernel_size, strides, explicit_pad, name, strided_padding="symmetric", **kwargs):
    """A ``kernel_size`` conv with symmetric zero padding (``{name}_pad``) or ``same`` padding;
    a strided one without any padding when ``strided_padding="valid"``."""
    if strides != 1 and strided_padding == "valid":
        return conv_bn_act(x, filters, kernel_size, strides, padding="valid", name=name, **kwargs)
    if explicit_pad:
        pad = kernel_size // 2
        x = layers.ZeroPadding2D(((pad, pad), (pad, pad)), name=f"{name}_pad")(x)
        return conv_bn_act(x, filters, kernel_size, strides, padding="valid", name=name, **kwargs)
    return conv_bn_act(x, filters, kernel_size, strides, padding="same", name=name, **kwargs)


def residual_block(
    x,
    filters: int,
    kind: str = "basic",
    strides: int = 1,
    shortcut: str | None = None,
    preact: bool = False,
    expansion: int | None = None,
    use_bias: bool | None = None,
    se_ratio: float | None = None,
    norm: str = "batch",
    strided_padding: str = "symmetric",
    stride_in_3x3: bool | None = None,
    name: str = "block",
):
    """A residual block (He et al. 2015) in the original or the pre-activation order (2016).

    ``kind="basic"``: two 3x3 convs (ResNet-18/34). ``kind="bottleneck"``: 1x1 reduce to
    ``filters``, 3x3, 1x1 expand to ``expansion * filters`` (ResNet-50 and deeper). The output
    is ``shortcut + residual``. Original order (``preact=False``, keras.applications ResNet):
    every conv is conv + BN + ReLU, the last without ReLU, and ReLU follows the sum. The stride
    sits in the first conv (the 1x1 of a bottleneck, as in Caffe/Keras ResNet50). Pre-activation
    order (``preact=True``, ResNetV2): BN + ReLU of the input feeds the convs and the
    projection, the sum is the output, and the stride sits in the 3x3 conv.

    The shortcut is the identity unless the shape changes: a projection (1x1 conv, + BN in the
    original order) when the channels change, or the stride does in the original order; with
    ``preact=True`` a stride alone subsamples the identity (1x1 max pool), as keras ResNetV2 does.
    ``shortcut="projection"`` / ``"identity"`` forces either (identity needs equal channels).
    ``shortcut="pool_pad"`` is the parameter-free "option A" of He et al. (2015) as dlib's face
    recognition network has it: the shortcut is the ``strides`` x ``strides`` average pool of
    the block input, and the sum (:class:`kerascnn.layers.ZeroPadAdd`) pads the shortcut's
    missing channels, and either side's missing rows and columns, with zeros.

    ``strided_padding`` says how a strided conv is padded: ``"symmetric"`` (``kernel // 2`` zeros
    on every side, as PyTorch and keras ResNetV2) or ``"valid"`` (none: dlib, where the output
    of a 3x3/2 conv on 8x8 is 3x3, not 4x4).

    Layer names (keras.applications' ResNet/ResNetV2, so their weights port by name):
    ``{name}_preact_bn``, ``{name}_0_conv``/``{name}_0_bn`` (projection), ``{name}_1_conv``,
    ``{name}_1_bn``, ``{name}_1_relu``, ``{name}_2_...``, ``{name}_3_...`` (bottleneck),
    ``{name}_se_*`` (squeeze-and-excitation), ``{name}_0_pool`` (pooled shortcut), ``{name}_add``
    and ``{name}_out``; with ``norm="affine"``, ``{name}_1_affine``... in place of ``_bn``.

    Args:
        x: input tensor.
        filters: width of the block (bottleneck: of its inner convs).
        kind: ``"basic"`` or ``"bottleneck"``.
        strides: stride of the block (2 halves the grid).
        shortcut: ``None`` (automatic), ``"identity"``, ``"projection"`` or ``"pool_pad"``.
        preact: pre-activation (ResNetV2) order.
        expansion: output channels / ``filters``; default 1 for basic, 4 for bottleneck.
        use_bias: biases on the convs; ``None``: only on convs no BN follows (ResNetV2);
            ``True``: on every conv (keras.applications ResNet v1 keeps them).
        se_ratio: add squeeze-and-excitation on the residual with this ratio (SE-ResNet).
        norm: ``"batch"`` (``BatchNormalization``) or ``"affine"`` (:class:`kerascnn.layers.Affine`).
        strided_padding: ``"symmetric"`` or ``"valid"``, the padding of strided convs.
        stride_in_3x3: put a bottleneck's stride in its 3x3 conv ("ResNet v1.5", torchvision's
            and timm's layout) rather than its first 1x1; default: only with ``preact``.
        name: prefix of the layer names.

    Returns:
        The output tensor, ``expansion * filters`` channels.

    Raises:
        ValueError: unknown ``kind``, ``shortcut``, ``norm`` or ``strided_padding``, or a
            shortcut that cannot fit.
    """
    if kind not in ("basic", "bottleneck"):
        raise ValueError(f"residual_block kind must be 'basic' or 'bottleneck', got {kind!r}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"residual_block shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    if strided_padding not in ("symmetric", "valid"):
        raise ValueError(f"residual_block strided_padding must be 'symmetric' or 'valid', got {strided_padding!r}")
    if expansion is None:
        expansion = 4 if kind == "bottleneck" else 1
    channels_in, channels_out = x.shape[-1], expansion * filters
    if shortcut is None:
        changes = channels_in != channels_out or (strides != 1 and not preact)
        shortcut = "projection" if changes else "identity"
    if shortcut == "identity" and channels_in != channels_out:
        raise ValueError(
            f"{name}: an identity shortcut needs as many input as output channels, got "
            f"{channels_in} in and {channels_out} out"
        )
    if shortcut == "pool_pad" and channels_in > channels_out:
        raise ValueError(
            f"{name}: a pool_pad shortcut pads channels with zeros and cannot drop any, got "
            f"{channels_in} in and {channels_out} out"
        )
    conv = {"use_bias": use_bias, "norm": norm}
    inputs = x
    if preact:
        x = _bn_act(x, f"{name}_preact")
    if shortcut == "projection":
        short = conv_bn_act(
            x, channels_out, 1, strides, batch_norm=not preact, activation=None, name=f"{name}_0", **conv
        )
    elif shortcut == "pool_pad" and strides != 1:
        short = layers.AveragePooling2D(strides, strides=strides, name=f"{name}_0_pool")(inputs)
    elif strides != 1:
        short = layers.MaxPooling2D(1, strides=strides, name=f"{name}_0_pool")(inputs)
    else:
        short = inputs
    if kind == "bottleneck":
        if stride_in_3x3 is None:
            stride_in_3x3 = preact
        stride_1x1, stride_3x3 = (1, strides) if stride_in_3x3 else (strides, 1)
        x = conv_bn_act(x, filters, 1, stride_1x1, name=f"{name}_1", **conv)
        x = _pad_conv_bn_act(x, filters, 3, stride_3x3, preact or stride_3x3 != 1, f"{name}_2",
                             strided_padding, **conv)
        last = f"{name}_3"
    else:
        x = _pad_conv_bn_act(x, filters, 3, strides, preact or strides != 1, f"{name}_1", strided_padding, **conv)
        last = f"{name}_2"
    x = conv_bn_act(x, channels_out, 1 if kind == "bottleneck" else 3, batch_norm=not preact,
                    activation=None, name=last, **conv)
    if se_ratio:
        x = squeeze_excite(x, se_ratio, name=f"{name}_se")
    add = ZeroPadAdd if shortcut == "pool_pad" else layers.Add
    if preact:
        return add(name=f"{name}_out")([short, x])
    x = add(name=f"{name}_add")([short, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def dense_block(x, blocks: int, growth_rate: int = 32, bottleneck_width: int = 4, name: str = "dense"):
    """A DenseNet dense block (Huang et al. 2017): each layer's output is concatenated to its input.

    Each of the ``blocks`` layers is BN-ReLU-1x1 conv (``bottleneck_width * growth_rate``
    channels) - BN-ReLU-3x3 conv (``growth_rate`` channels), concatenated to what came before,
    so the block adds ``blocks * growth_rate`` channels.

    Layer names (keras.applications DenseNet): ``{name}_block{i}_0_bn``, ``_0_relu``,
    ``_1_conv``, ``_1_bn``, ``_1_relu``, ``_2_conv``, ``_concat`` for ``i`` from 1.

    Args:
        x: input tensor.
        blocks: number of layers.
        growth_rate: channels each layer adds.
        bottleneck_width: width of the 1x1 bottleneck, in multiples of ``growth_rate``.
        name: prefix of the layer names.

    Returns:
        The output tensor, ``channels + blocks * growth_rate`` channels.
    """
    for i in range(1, blocks + 1):
        prefix = f"{name}_block{i}"
        y = _bn_act(x, f"{prefix}_0")
        y = conv_bn_act(y, bottleneck_width * growth_rate, 1, name=f"{prefix}_1")
        y = conv_bn_act(y, growth_rate, 3, use_bias=False, batch_norm=False, activation=None, name=f"{prefix}_2")
        x = layers.Concatenate(axis=-1, name=f"{prefix}_concat")([x, y])
    return x


def transition(x, reduction: float = 0.5, name: str = "transition"):
    """A DenseNet transition: BN-ReLU-1x1 conv to ``reduction`` of the channels, 2x2 average pool.

    Layer names (keras.applications DenseNet): ``{name}_bn``, ``{name}_relu``, ``{name}_conv``,
    ``{name}_pool``.

    Args:
        x: input tensor.
        reduction: compression factor of the channels (0.5 in DenseNet-BC).
        name: prefix of the layer names.

    Returns:
        The output tensor: half the grid, ``int(channels * reduction)`` channels.
    """
    x = _bn_act(x, name)
    x = conv_bn_act(x, int(x.shape[-1] * reduction), 1, use_bias=False, batch_norm=False, activation=None, name=name)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def separable_conv(
    x,
    filters: int,
    strides: int = 1,
    depth_multiplier: int = 1,
    activation: str = "relu6",
    bn_epsilon: float = 1e-3,
    bn_momentum: float = 0.99,
    name: str = "conv",
    block_id: int | None = None,
):
    """A depthwise separable convolution as in MobileNet (Howard et al. 2017).

    A 3x3 depthwise conv (one filter per input channel, ``depth_multiplier`` outputs each) + BN +
    activation, then a 1x1 pointwise conv to ``filters`` + BN + activation: about
    ``1/filters + 1/9`` of the multiply-adds of a full 3x3 conv. A stride of 2 pads the bottom
    and right by one then uses ``valid`` padding, as keras.applications MobileNet does.

    Layer names (keras.applications MobileNet with ``name="conv"`` and ``block_id=i``):
    ``conv_pad_i``, ``conv_dw_i``, ``conv_dw_i_bn``, ``conv_dw_i_relu``, ``conv_pw_i``,
    ``conv_pw_i_bn``, ``conv_pw_i_relu``; without ``block_id``: ``{name}_dw``, ``{name}_dw_bn`` ...

    Args:
        x: input tensor.
        filters: output channels of the pointwise conv.
        strides: stride of the depthwise conv.
        depth_multiplier: depthwise outputs per input channel.
        activation: activation after each BN (``"relu6"`` in MobileNet).
        bn_epsilon: BN epsilon.
        bn_momentum: BN momentum.
        name: prefix of the layer names.
        block_id: optional number appended to each part's name.

    Returns:
        The output tensor.
    """
    suffix = "" if block_id is None else f"_{block_id}"
    dw, pw = f"{name}_dw{suffix}", f"{name}_pw{suffix}"
    bn = {"axis": -1, "epsilon": bn_epsilon, "momentum": bn_momentum}
    if strides != 1:
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad{suffix}")(x)
    x = layers.DepthwiseConv2D(
        3, strides=strides, padding="same" if strides == 1 else "valid",
        depth_multiplier=depth_multiplier, use_bias=False, name=dw,
    )(x)
    x = _activation(layers.BatchNormalization(**bn, name=f"{dw}_bn")(x), activation, dw)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=pw)(x)
    return _activation(layers.BatchNormalization(**bn, name=f"{pw}_bn")(x), activation, pw)


def _correct_pad(size: int | None, kernel_size: int = 3):
    """Zero padding that makes a stride-2 ``valid`` conv centre like TF's ``same`` (keras)."""
    adjust = 1 if size is None else 1 - size % 2
    half = kernel_size // 2
    return ((half - adjust, half), (half - adjust, half))


def inverted_residual(
    x,
    filters: int,
    expansion: int = 6,
    strides: int = 1,
    activation: str = "relu6",
    bn_epsilon: float = 1e-3,
    bn_momentum: float = 0.999,
    name: str = "block",
):
    """MobileNetV2's inverted residual with linear bottleneck (Sandler et al. 2018).

    1x1 expansion to ``expansion * channels`` + BN + ReLU6 (skipped when ``expansion == 1``),
    3x3 depthwise + BN + ReLU6, 1x1 linear projection to ``filters`` + BN; the input is added
    when the stride is 1 and the channels match.

    Layer names (keras.applications MobileNetV2 with ``name="block_3"``): ``{name}_expand``,
    ``{name}_expand_BN``, ``{name}_expand_relu``, ``{name}_pad``, ``{name}_depthwise``,
    ``{name}_depthwise_BN``, ``{name}_depthwise_relu``, ``{name}_project``,
    ``{name}_project_BN``, ``{name}_add``.

    Args:
        x: input tensor.
        filters: output channels.
        expansion: expansion factor of the hidden layer.
        strides: stride of the depthwise conv.
        activation: activation of the expansion and depthwise parts.
        bn_epsilon: BN epsilon.
        bn_momentum: BN momentum.
        name: prefix of the layer names.

    Returns:
        The output tensor.
    """
    inputs = x
    channels_in = x.shape[-1]
    bn = {"axis": -1, "epsilon": bn_epsilon, "momentum": bn_momentum}
    if expansion != 1:
        x = layers.Conv2D(expansion * channels_in, 1, padding="same", use_bias=False, name=f"{name}_expand")(x)
        x = _activation(layers.BatchNormalization(**bn, name=f"{name}_expand_BN")(x), activation, f"{name}_expand")
    if strides != 1:
        x = layers.ZeroPadding2D(_correct_pad(x.shape[1]), name=f"{name}_pad")(x)
    x = layers.DepthwiseConv2D(
        3, strides=strides, padding="same" if strides == 1 else "valid", use_bias=False, name=f"{name}_depthwise"
    )(x)
    x = _activation(layers.BatchNormalization(**bn, name=f"{name}_depthwise_BN")(x), activation, f"{name}_depthwise")
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_project")(x)
    x = layers.BatchNormalization(**bn, name=f"{name}_project_BN")(x)
    if strides == 1 and channels_in == filters:
        return layers.Add(name=f"{name}_add")([inputs, x])
    return x


def squeeze_excite(x, ratio: float = 0.25, name: str = "se"):
    """Squeeze-and-excitation (Hu et al. 2018): reweight channels by a gate from global context.

    Global average pool, 1x1 conv to ``max(1, int(channels * ratio))`` + ReLU, 1x1 conv back
    to ``channels`` + sigmoid, multiplied into the input.

    Layer names (keras.applications EfficientNet's): ``{name}_squeeze``, ``{name}_reduce``,
    ``{name}_expand``, ``{name}_excite``.

    Args:
        x: input tensor.
        ratio: bottleneck width as a fraction of the channels (1/16 in the paper).
        name: prefix of the layer names.

    Returns:
        The reweighted tensor, same shape as ``x``.
    """
    channels = x.shape[-1]
    se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    se = layers.Conv2D(max(1, int(channels * ratio)), 1, activation="relu", name=f"{name}_reduce")(se)
    se = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(se)
    return layers.Multiply(name=f"{name}_excite")([x, se])


def fire_module(
    x,
    squeeze: int,
    expand_1x1: int,
    expand_3x3: int | None = None,
    kernel_initializer: str = "he_uniform",
    name: str = "fire",
):
    """SqueezeNet's fire module (Iandola et al. 2016): squeeze with 1x1, expand with 1x1 and 3x3.

    A 1x1 conv + ReLU squeezes the input to ``squeeze`` channels; a 1x1 conv and a 3x3 conv
    (``same`` padding), each + ReLU, expand it side by side; their outputs are concatenated.
    Convs have biases and no batch norm, as in the paper and torchvision.

    Layer names: ``{name}_squeeze_conv``, ``{name}_squeeze_relu``, ``{name}_expand1x1_conv``,
    ``{name}_expand1x1_relu``, ``{name}_expand3x3_conv``, ``{name}_expand3x3_relu``,
    ``{name}_concat``.

    Args:
        x: input tensor.
        squeeze: channels of the squeeze 1x1 conv (s1x1 in the paper).
        expand_1x1: channels of the expand 1x1 conv (e1x1).
        expand_3x3: channels of the expand 3x3 conv (e3x3); default ``expand_1x1``.
        kernel_initializer: initializer of the convs; He's (torchvision's), since without
            batch norm Glorot's halves the signal's variance at every ReLU.
        name: prefix of the layer names.

    Returns:
        The output tensor, ``expand_1x1 + expand_3x3`` channels.
    """
    if expand_3x3 is None:
        expand_3x3 = expand_1x1
    conv = {"batch_norm": False, "kernel_initializer": kernel_initializer}
    x = conv_bn_act(x, squeeze, 1, name=f"{name}_squeeze", **conv)
    left = conv_bn_act(x, expand_1x1, 1, name=f"{name}_expand1x1", **conv)
    right = conv_bn_act(x, expand_3x3, 3, name=f"{name}_expand3x3", **conv)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([left, right])


def highway_block(
    x, kernel_size: int = 3, activation: str = "relu", gate_bias: float = -1.0, name: str = "highway"
):
    """A convolutional highway layer (Srivastava et al. 2015): ``y = H(x) T(x) + x (1 - T(x))``.

    ``H`` is a ``kernel_size`` conv + ``activation``; the transform gate ``T`` is a conv +
    sigmoid whose bias starts at ``gate_bias`` (negative: the block starts by carrying its
    input, as the paper recommends). Computed as ``x + T (H - x)``, with no custom layer.

    Layer names: ``{name}_h``, ``{name}_t``, ``{name}_diff``, ``{name}_gated``, ``{name}_out``.

    Args:
        x: input tensor; the output has its shape.
        kernel_size: kernel of the two convs.
        activation: activation of ``H``.
        gate_bias: initial bias of the transform gate.
        name: prefix of the layer names.

    Returns:
        The output tensor.
    """
    channels = x.shape[-1]
    h = layers.Conv2D(channels, kernel_size, padding="same", activation=activation, name=f"{name}_h")(x)
    t = layers.Conv2D(
        channels, kernel_size, padding="same", activation="sigmoid",
        bias_initializer=keras.initializers.Constant(gate_bias), name=f"{name}_t",
    )(x)
    diff = layers.Subtract(name=f"{name}_diff")([h, x])
    gated = layers.Multiply(name=f"{name}_gated")([t, diff])
    return layers.Add(name=f"{name}_out")([x, gated])


# --- inception modules (GoogLeNet, InceptionV3) -------------------------------------------------
# InceptionV3's conv + BN: no bias, BN without scale (ReLU follows), epsilon 1e-3 (Keras default).
_V3_CONV = {"bn_scale": False, "bn_epsilon": 1e-3}


def inception_module(
    x,
    filters_1x1: int,
    filters_3x3: int,
    filters_5x5: int,
    reduce_3x3: int | None = None,
    reduce_5x5: int | None = None,
    pool_proj: int | None = None,
    batch_norm: bool = False,
    name: str = "inception",
):
    """GoogLeNet's inception module: parallel 1x1, 3x3, 5x5 convs and a 3x3 max pool, concatenated.

    With ``reduce_3x3``, ``reduce_5x5`` and ``pool_proj`` all ``None`` it is the *naive* module
    (Szegedy et al. 2014, figure 2a): the pool branch passes the input channels through, so the
    output has ``filters_1x1 + filters_3x3 + filters_5x5 + channels`` channels. With them it is
    the module with dimension reductions (figure 2b): 1x1 convs shrink the channels before the
    3x3 and 5x5 convs and project the pooled branch. Every conv uses ``same`` padding and ReLU.

    Layer names: ``{name}_1x1``, ``{name}_3x3_reduce``, ``{name}_3x3``, ``{name}_5x5_reduce``,
    ``{name}_5x5``, ``{name}_pool``, ``{name}_pool_proj`` (each conv as in :func:`conv_bn_act`,
    e.g. ``{name}_1x1_conv``), and ``{name}_concat``.

    Args:
        x: input tensor ``(batch, height, width, channels)``.
        filters_1x1: channels of the 1x1 branch.
        filters_3x3: channels of the 3x3 branch.
        filters_5x5: channels of the 5x5 branch.
        reduce_3x3: channels of the 1x1 conv before the 3x3 (``None``: no reduction).
        reduce_5x5: channels of the 1x1 conv before the 5x5 (``None``: no reduction).
        pool_proj: channels of the 1x1 conv after the pool (``None``: no projection).
        batch_norm: add batch normalisation after every conv (the paper has none).
        name: prefix of the layer names.

    Returns:
        The concatenated output tensor.
    """
    conv = {"batch_norm": batch_norm}
    branch1 = conv_bn_act(x, filters_1x1, 1, name=f"{name}_1x1", **conv)
    branch3 = x
    if reduce_3x3 is not None:
        branch3 = conv_bn_act(x, reduce_3x3, 1, name=f"{name}_3x3_reduce", **conv)
    branch3 = conv_bn_act(branch3, filters_3x3, 3, name=f"{name}_3x3", **conv)
    branch5 = x
    if reduce_5x5 is not None:
        branch5 = conv_bn_act(x, reduce_5x5, 1, name=f"{name}_5x5_reduce", **conv)
    branch5 = conv_bn_act(branch5, filters_5x5, 5, name=f"{name}_5x5", **conv)
    pool = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    if pool_proj is not None:
        pool = conv_bn_act(pool, pool_proj, 1, name=f"{name}_pool_proj", **conv)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([branch1, branch3, branch5, pool])


def _v3_pool_branch(x, filters: int, name: str):
    x = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    return conv_bn_act(x, filters, 1, name=f"{name}_pool_proj", **_V3_CONV)


def inception_a(
    x,
    pool_proj: int,
    filters_1x1: int = 64,
    filters_5x5: Sequence[int] = (48, 64),
    filters_3x3dbl: Sequence[int] = (64, 96, 96),
    name: str = "mixed",
):
    """InceptionV3 module A (35x35 grid): the 5x5 factorised as two stacked 3x3 convs.

    Branches (keras.applications / TF-slim's version, which also keeps a 5x5 branch): 1x1;
    1x1 -> 5x5; 1x1 -> 3x3 -> 3x3 (the factorised 5x5); 3x3 average pool -> 1x1. Convs are
    conv + BN (no scale, epsilon 1e-3) + ReLU, ``same`` padding.

    Layer names: ``{name}_1x1``, ``{name}_5x5_1``, ``{name}_5x5_2``, ``{name}_3x3dbl_1..3``,
    ``{name}_pool``, ``{name}_pool_proj``; the concatenation is ``{name}``.

    Args:
        x: input tensor.
        pool_proj: channels of the pool branch's 1x1 conv (32 in mixed0, 64 in mixed1-2).
        filters_1x1: channels of the 1x1 branch.
        filters_5x5: (reduction, output) channels of the 5x5 branch.
        filters_3x3dbl: (reduction, middle, output) channels of the double-3x3 branch.
        name: prefix of the layer names.

    Returns:
        The concatenated output tensor.
    """
    branch1 = conv_bn_act(x, filters_1x1, 1, name=f"{name}_1x1", **_V3_CONV)
    branch5 = conv_bn_act(x, filters_5x5[0], 1, name=f"{name}_5x5_1", **_V3_CONV)
    branch5 = conv_bn_act(branch5, filters_5x5[1], 5, name=f"{name}_5x5_2", **_V3_CONV)
    branch3 = x
    for i, filters in enumerate(filters_3x3dbl):
        branch3 = conv_bn_act(branch3, filters, 1 if i == 0 else 3, name=f"{name}_3x3dbl_{i + 1}", **_V3_CONV)
    pool = _v3_pool_branch(x, pool_proj, name)
    return layers.Concatenate(axis=-1, name=name)([branch1, branch5, branch3, pool])


def inception_b(
    x,
    filters_nxn: int,
    n: int = 7,
    filters_out: int = 192,
    name: str = "mixed",
):
    """InceptionV3 module B (17x17 grid): an n x n conv factorised as 1xn then nx1.

    Branches: 1x1; 1x1 -> 1xn -> nx1; 1x1 -> nx1 -> 1xn -> nx1 -> 1xn; 3x3 average pool -> 1x1.

    Layer names: ``{name}_1x1``, ``{name}_nxn_1..3``, ``{name}_nxndbl_1..5``, ``{name}_pool``,
    ``{name}_pool_proj``; the concatenation is ``{name}``.

    Args:
        x: input tensor.
        filters_nxn: channels inside the factorised branches (128, 160, 160, 192 in mixed4-7).
        n: kernel size of the factorised convs (7 in the paper).
        filters_out: channels of every branch's output.
        name: prefix of the layer names.

    Returns:
        The concatenated output tensor (``4 * filters_out`` channels).
    """
    c = filters_nxn
    branch1 = conv_bn_act(x, filters_out, 1, name=f"{name}_1x1", **_V3_CONV)
    branch7 = x
    for i, (filters, kernel) in enumerate([(c, 1), (c, (1, n)), (filters_out, (n, 1))]):
        branch7 = conv_bn_act(branch7, filters, kernel, name=f"{name}_nxn_{i + 1}", **_V3_CONV)
    branch7dbl = x
    steps = [(c, 1), (c, (n, 1)), (c, (1, n)), (c, (n, 1)), (filters_out, (1, n))]
    for i, (filters, kernel) in enumerate(steps):
        branch7dbl = conv_bn_act(branch7dbl, filters, kernel, name=f"{name}_nxndbl_{i + 1}", **_V3_CONV)
    pool = _v3_pool_branch(x, filters_out, name)
    return layers.Concatenate(axis=-1, name=name)([branch1, branch7, branch7dbl, pool])


def _expanded(x, filters: int, name: str):
    """The 1x3 and 3x1 convs side by side on the same input, concatenated (module C)."""
    left = conv_bn_act(x, filters, (1, 3), name=f"{name}_1x3", **_V3_CONV)
    right = conv_bn_act(x, filters, (3, 1), name=f"{name}_3x1", **_V3_CONV)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([left, right])


def inception_c(
    x,
    filters_1x1: int = 320,
    filters_3x3: int = 384,
    filters_3x3dbl: Sequence[int] = (448, 384),
    pool_proj: int = 192,
    name: str = "mixed",
):
    """InceptionV3 module C (8x8 grid): expanded filter banks, 1x3 and 3x1 in parallel.

    Branches: 1x1; 1x1 -> [1x3, 3x1]; 1x1 -> 3x3 -> [1x3, 3x1]; 3x3 average pool -> 1x1.

    Layer names: ``{name}_1x1``, ``{name}_3x3`` (then ``{name}_3x3_1x3``, ``{name}_3x3_3x1``,
    ``{name}_3x3_concat``), ``{name}_3x3dbl_1``, ``{name}_3x3dbl_2`` (then ``..._1x3``,
    ``..._3x1``, ``..._concat``), ``{name}_pool``, ``{name}_pool_proj``; the concatenation is
    ``{name}``.

    Args:
        x: input tensor.
        filters_1x1: channels of the 1x1 branch.
        filters_3x3: channels of the 1x1 reduction and of each of the 1x3 / 3x1 convs.
        filters_3x3dbl: (reduction, 3x3 and each of 1x3 / 3x1) channels of the deeper branch.
        pool_proj: channels of the pool branch's 1x1 conv.
        name: prefix of the layer names.

    Returns:
        The concatenated output tensor.
    """
    branch1 = conv_bn_act(x, filters_1x1, 1, name=f"{name}_1x1", **_V3_CONV)
    branch3 = conv_bn_act(x, filters_3x3, 1, name=f"{name}_3x3", **_V3_CONV)
    branch3 = _expanded(branch3, filters_3x3, f"{name}_3x3")
    branch3dbl = conv_bn_act(x, filters_3x3dbl[0], 1, name=f"{name}_3x3dbl_1", **_V3_CONV)
    branch3dbl = conv_bn_act(branch3dbl, filters_3x3dbl[1], 3, name=f"{name}_3x3dbl_2", **_V3_CONV)
    branch3dbl = _expanded(branch3dbl, filters_3x3dbl[1], f"{name}_3x3dbl_2")
    pool = _v3_pool_branch(x, pool_proj, name)
    return layers.Concatenate(axis=-1, name=name)([branch1, branch3, branch3dbl, pool])


def reduction_a(
    x,
    filters_3x3: int = 384,
    filters_3x3dbl: Sequence[int] = (64, 96, 96),
    name: str = "mixed",
):
    """InceptionV3 grid-size reduction 35x35 -> 17x17 (stride-2 convs beside a stride-2 max pool).

    Branches: 3x3/2; 1x1 -> 3x3 -> 3x3/2; 3x3/2 max pool (``valid`` padding for the strided ops).

    Layer names: ``{name}_3x3``, ``{name}_3x3dbl_1..3``, ``{name}_pool``; concatenation ``{name}``.

    Args:
        x: input tensor.
        filters_3x3: channels of the single strided 3x3 branch.
        filters_3x3dbl: channels of the 1x1, 3x3 and strided 3x3 convs of the other branch.
        name: prefix of the layer names.

    Returns:
        The concatenated output tensor (half the grid size).
    """
    branch3 = conv_bn_act(x, filters_3x3, 3, strides=2, padding="valid", name=f"{name}_3x3", **_V3_CONV)
    a, b, c = filters_3x3dbl
    branch3dbl = conv_bn_act(x, a, 1, name=f"{name}_3x3dbl_1", **_V3_CONV)
    branch3dbl = conv_bn_act(branch3dbl, b, 3, name=f"{name}_3x3dbl_2", **_V3_CONV)
    branch3dbl = conv_bn_act(
        branch3dbl, c, 3, strides=2, padding="valid", name=f"{name}_3x3dbl_3", **_V3_CONV
    )
    pool = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    return layers.Concatenate(axis=-1, name=name)([branch3, branch3dbl, pool])


def reduction_b(
    x,
    filters_3x3: Sequence[int] = (192, 320),
    filters_nxn: int = 192,
    n: int = 7,
    name: str = "mixed",
):
    """InceptionV3 grid-size reduction 17x17 -> 8x8.

    Branches: 1x1 -> 3x3/2; 1x1 -> 1xn -> nx1 -> 3x3/2; 3x3/2 max pool.

    Layer names: ``{name}_3x3_1..2``, ``{name}_nxn_1..4``, ``{name}_pool``; concatenation
    ``{name}``.

    Args:
        x: input tensor.
        filters_3x3: (reduction, output) channels of the 3x3 branch.
        filters_nxn: channels of every conv of the factorised branch.
        n: kernel size of the factorised convs.
        name: prefix of the layer names.

    Returns:
        The concatenated output tensor (half the grid size).
    """
    branch3 = conv_bn_act(x, filters_3x3[0], 1, name=f"{name}_3x3_1", **_V3_CONV)
    branch3 = conv_bn_act(
        branch3, filters_3x3[1], 3, strides=2, padding="valid", name=f"{name}_3x3_2", **_V3_CONV
    )
    branch7 = x
    for i, kernel in enumerate([1, (1, n), (n, 1)]):
        branch7 = conv_bn_act(branch7, filters_nxn, kernel, name=f"{name}_nxn_{i + 1}", **_V3_CONV)
    branch7 = conv_bn_act(
        branch7, filters_nxn, 3, strides=2, padding="valid", name=f"{name}_nxn_4", **_V3_CONV
    )
    pool = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    return layers.Concatenate(axis=-1, name=name)([branch3, branch7, pool])


# --- inception-resnet modules (Szegedy et al. 2016, Inception-ResNet; FaceNet) -------------------
# TF-slim's conv + BN of Inception-ResNet: no bias, BN without scale, epsilon 1e-3 (as InceptionV3's)
INCEPTION_RESNET_CONV = _V3_CONV
# kind: kernels of each branch (the first conv of every branch is 1x1) and Inception-ResNet-v1's widths
INCEPTION_RESNET_KINDS = {
    "block35": (((1,), (1, 3), (1, 3, 3)), ((32,), (32, 32), (32, 32, 32))),
    "block17": (((1,), (1, (1, 7), (7, 1))), ((128,), (128, 128, 128))),
    "block8": (((1,), (1, (1, 3), (3, 1))), ((192,), (192, 192, 192))),
}


def _branches(x, kernels, widths, name: str, strided_last: bool = False, **conv) -> list:
    """Parallel chains of conv + BN + ReLU named ``{name}_branch{i}_{j}`` (``i`` and ``j`` from 0 and 1);
    with ``strided_last`` the last conv of every chain is a 3x3/2 without padding."""
    outputs = []
    for i, (branch_kernels, branch_widths) in enumerate(zip(kernels, widths)):
        y = x
        for j, (kernel, filters) in enumerate(zip(branch_kernels, branch_widths)):
            last = strided_last and j == len(branch_kernels) - 1
            y = conv_bn_act(y, filters, kernel, strides=2 if last else 1, padding="valid" if last else "same",
                            name=f"{name}_branch{i}_{j + 1}", **conv)
        outputs.append(y)
    return outputs


def inception_resnet_block(
    x,
    kind: str,
    scale: float,
    widths: Sequence[Sequence[int]] | None = None,
    activation: str | None = "relu",
    name: str = "block",
    **conv,
):
    """An Inception-ResNet module (Szegedy et al. 2016): ``x + scale * up(concat(branches(x)))``.

    ``kind`` names the grid it works on in the paper: ``"block35"`` (Inception-ResNet-A: 1x1;
    1x1 -> 3x3; 1x1 -> 3x3 -> 3x3), ``"block17"`` (B: 1x1; 1x1 -> 1x7 -> 7x1) or ``"block8"``
    (C: 1x1; 1x1 -> 1x3 -> 3x1). The branches are conv + BN + ReLU with ``same`` padding;
    ``up`` is a 1x1 conv back to the input's channels, with a bias and no normalisation, scaled by
    ``scale`` (residual scaling) before the sum; ``activation`` follows the sum (FaceNet's last
    block has none). TF-slim's ``block35``, ``block17`` and ``block8``.

    Layer names: ``{name}_branch{i}_{j}`` (conv ``i`` of branch ``j``, as :func:`conv_bn_act`:
    ``..._conv``, ``..._bn``, ``..._relu``), ``{name}_concat``, ``{name}_up_conv``,
    ``{name}_scale``; the output is ``{name}_out`` (the activation, after ``{name}_add``, or the
    sum itself without activation).

    Args:
        x: input tensor.
        kind: ``"block35"``, ``"block17"`` or ``"block8"``.
        scale: residual scale (0.17, 0.10 and 0.20 in Inception-ResNet-v1).
        widths: channels of each branch's convs; default Inception-ResNet-v1's
            (:data:`INCEPTION_RESNET_KINDS`).
        activation: activation after the sum, or ``None``.
        name: prefix of the layer names.
        **conv: options of the branch convs (:func:`conv_bn_act`); default TF-slim's
            (:data:`INCEPTION_RESNET_CONV`); ``batch_norm=False`` gives convs with biases (batch
            norm folded, as frozen graphs ship).

    Returns:
        The output tensor, shaped as ``x``.

    Raises:
        ValueError: unknown ``kind``, or ``widths`` that do not fit its branches.
    """
    if kind not in INCEPTION_RESNET_KINDS:
        raise ValueError(f"inception_resnet_block kind must be one of {tuple(INCEPTION_RESNET_KINDS)}, got {kind!r}")
    kernels, default_widths = INCEPTION_RESNET_KINDS[kind]
    widths = default_widths if widths is None else widths
    if [len(w) for w in widths] != [len(k) for k in kernels]:
        raise ValueError(f"{name}: {kind} has branches of {[len(k) for k in kernels]} convs, got widths {widths}")
    conv = {**INCEPTION_RESNET_CONV, **conv}
    mixed = layers.Concatenate(axis=-1, name=f"{name}_concat")(_branches(x, kernels, widths, name, **conv))
    up = layers.Conv2D(x.shape[-1], 1, padding="same", name=f"{name}_up_conv")(mixed)
    up = layers.Rescaling(scale, name=f"{name}_scale")(up)
    if activation is None:
        return layers.Add(name=f"{name}_out")([x, up])
    x = layers.Add(name=f"{name}_add")([x, up])
    return layers.Activation(activation, name=f"{name}_out")(x)


def reduction_block(x, widths: Sequence[Sequence[int]], name: str = "reduction", **conv):
    """A grid reduction of Inception-v4 / Inception-ResNet: conv branches ending in a 3x3/2 conv,
    beside a 3x3/2 max pool, concatenated (no padding on the strided ops).

    A branch of one width is a 3x3/2 conv; of two, 1x1 -> 3x3/2; of three, 1x1 -> 3x3 -> 3x3/2.
    Inception-ResNet-v1's reduction A is ``((384,), (192, 192, 256))`` (TF-slim's
    ``reduction_a(net, 192, 192, 256, 384)``), its reduction B ``((256, 384), (256, 256),
    (256, 256, 256))``.

    Layer names: ``{name}_branch{i}_{j}`` (as :func:`conv_bn_act`), ``{name}_pool``, ``{name}_concat``.

    Args:
        x: input tensor.
        widths: channels of each conv branch's convs (1 to 3 each).
        name: prefix of the layer names.
        **conv: options of the convs (:func:`conv_bn_act`); default TF-slim's
            (:data:`INCEPTION_RESNET_CONV`).

    Returns:
        The concatenated output tensor: ``(size - 3) // 2 + 1`` on each side,
        ``channels + sum(branch[-1])`` channels.

    Raises:
        ValueError: a branch of no or more than three convs.
    """
    if not widths or any(not 1 <= len(w) <= 3 for w in widths):
        raise ValueError(f"{name}: every reduction branch has 1 to 3 convs, got widths {widths}")
    kernels = [((3,), (1, 3), (1, 3, 3))[len(w) - 1] for w in widths]
    outputs = _branches(x, kernels, widths, name, strided_last=True, **{**INCEPTION_RESNET_CONV, **conv})
    pool = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([*outputs, pool])
