"""ResNet (He et al. 2015) and ResNetV2 (He et al. 2016, pre-activation), from one table.

``se_resnet50`` (Hu et al. 2018) is ResNet-50 with squeeze-and-excitation (ratio 1/16) on the
residual of every bottleneck, before the addition, the stride in the 3x3 convs and no conv
biases: timm's ``seresnet50`` layout, 28,088,024 parameters in PyTorch's count.
``resnet50``/``101``/``152`` are keras.applications ``ResNet50``/``101``/``152`` layer for layer
(same names, same parameter counts) and ``resnet*_v2`` are ``ResNet50V2``..., so ImageNet
weights port by name. ``resnet18``/``34`` use basic blocks without conv biases (as torchvision).

Example:
    >>> from kerascnn.models.resnet import resnet50
    >>> model = resnet50(input_shape=(64, 64, 3), classes=10)
    >>> maps = resnet50(input_shape=(64, 64, 3), features_only=True).outputs  # /2 ... /32
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from kerascnn.blocks import conv_bn_act, residual_block
from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

WIDTHS = (64, 128, 256, 512)  # inner width of the stages conv2..conv5
STAGE_NAMES = ("conv2", "conv3", "conv4", "conv5")
STEM_REDUCTION = 4  # 7x7/2 conv then 3x3/2 max pool

# name: (block kind, blocks per stage, pre-activation, keras.applications counterpart)
ARCHS: dict[str, tuple[str, tuple[int, ...], bool, str | None]] = {
    "resnet18": ("basic", (2, 2, 2, 2), False, None),
    "resnet34": ("basic", (3, 4, 6, 3), False, None),
    "resnet50": ("bottleneck", (3, 4, 6, 3), False, "ResNet50"),
    "resnet101": ("bottleneck", (3, 4, 23, 3), False, "ResNet101"),
    "resnet152": ("bottleneck", (3, 8, 36, 3), False, "ResNet152"),
    "resnet50_v2": ("bottleneck", (3, 4, 6, 3), True, "ResNet50V2"),
    "resnet101_v2": ("bottleneck", (3, 4, 23, 3), True, "ResNet101V2"),
    "resnet152_v2": ("bottleneck", (3, 8, 36, 3), True, "ResNet152V2"),
    "se_resnet50": ("bottleneck", (3, 4, 6, 3), False, None),
}
# squeeze-and-excitation ratio of the SE-ResNets (timm's SEModule: reduced channels = channels // 16,
# here always a multiple of its divisor 8, fc1 and fc2 with biases, ReLU, sigmoid gate)
SE_RATIOS = {"se_resnet50": 1 / 16}


def block_plan(arch: str) -> list[list[tuple[str, int, int]]]:
    """Per stage, the ``(block name, width, stride)`` of each block.

    ResNet v1 strides in the first block of conv3..conv5; keras ResNetV2 in the last block of
    conv2..conv4 (so its stage outputs are at /8, /16, /32, /32).
    """
    _, depths, preact, _ = ARCHS[arch]
    plan = []
    for i, (stage, width, depth) in enumerate(zip(STAGE_NAMES, WIDTHS, depths)):
        if preact:
            strided = depth if i < len(depths) - 1 else 0
        else:
            strided = 1 if i > 0 else 0
        plan.append([(f"{stage}_block{b}", width, 2 if b == strided else 1) for b in range(1, depth + 1)])
    return plan


def feature_info(arch: str) -> list[dict]:
    """Per stage of ``features_only=True``: output layer name, channels, reduction (from the table)."""
    kind, _, preact, _ = ARCHS[arch]
    expansion = 4 if kind == "bottleneck" else 1
    info = [{"name": "conv1_conv" if preact else "conv1_relu", "channels": 64, "reduction": 2}]
    reduction = STEM_REDUCTION
    for stage in block_plan(arch):
        for _, width, stride in stage:
            reduction *= stride
        info.append({"name": f"{stage[-1][0]}_out", "channels": width * expansion, "reduction": reduction})
    if preact:
        info[-1]["name"] = "post_relu"
    return info


def _body(arch: str):
    kind, _, preact, keras_name = ARCHS[arch]
    use_bias = True if keras_name and not preact else None  # keras' v1 keeps biases before BN
    se_ratio = SE_RATIOS.get(arch)
    se = {"se_ratio": se_ratio, "stride_in_3x3": True} if se_ratio else {}

    def body(x) -> list:
        x = layers.ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad")(x)
        x = conv_bn_act(x, 64, 7, 2, padding="valid", use_bias=use_bias, batch_norm=not preact,
                        activation=None if preact else "relu", name="conv1")
        features = [x]
        x = layers.ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
        for stage in block_plan(arch):
            for block_name, width, stride in stage:
                x = residual_block(x, width, kind, stride, preact=preact, use_bias=use_bias, name=block_name, **se)
            features.append(x)
        if preact:
            x = layers.BatchNormalization(axis=-1, epsilon=1.001e-5, name="post_bn")(x)
            features[-1] = layers.Activation("relu", name="post_relu")(x)
        return features

    return body


def _create(arch: str, **kwargs: Any) -> keras.Model:
    keras_name = ARCHS[arch][3]
    keras_app = getattr(keras.applications, keras_name) if keras_name else None
    return build_model(name=kwargs.pop("name", arch), body=_body(arch), keras_app=keras_app, **kwargs)


def _register(arch: str):
    preact, keras_name = ARCHS[arch][2], ARCHS[arch][3]
    paper = "He et al. 2016, Identity Mappings in Deep Residual Networks" if preact else (
        "He et al. 2015, Deep Residual Learning for Image Recognition")
    preprocessing = "tf" if preact else "caffe"
    if arch in SE_RATIOS:
        paper, preprocessing = f"Hu et al. 2018, Squeeze-and-Excitation Networks; timm {arch.replace('_', '')}", "torch"
    return register_model(
        arch,
        feature_info=feature_info(arch),
        reference=f"{paper}; keras.applications.{keras_name}" if keras_name else paper,
        preprocessing=preprocessing,
    )


_DOC = """{title}.

    Args:
        **kwargs: :func:`kerascnn.models.base.build_model`'s keras.applications-style arguments:
            ``include_top``, ``weights`` (``None``, ``"imagenet"``{imagenet} or a file),
            ``input_shape``, ``input_tensor``, ``pooling``, ``classes``,
            ``classifier_activation``, ``features_only``.

    Returns:
        The ``keras.Model``.

    Raises:
        InputShapeError: an input smaller than 32x32, or not 3 channels with ImageNet weights.
    """


@_register("resnet18")
def resnet18(**kwargs: Any) -> keras.Model:
    return _create("resnet18", **kwargs)


@_register("resnet34")
def resnet34(**kwargs: Any) -> keras.Model:
    return _create("resnet34", **kwargs)


@_register("resnet50")
def resnet50(**kwargs: Any) -> keras.Model:
    return _create("resnet50", **kwargs)


@_register("resnet101")
def resnet101(**kwargs: Any) -> keras.Model:
    return _create("resnet101", **kwargs)


@_register("resnet152")
def resnet152(**kwargs: Any) -> keras.Model:
    return _create("resnet152", **kwargs)


@_register("resnet50_v2")
def resnet50_v2(**kwargs: Any) -> keras.Model:
    return _create("resnet50_v2", **kwargs)


@_register("resnet101_v2")
def resnet101_v2(**kwargs: Any) -> keras.Model:
    return _create("resnet101_v2", **kwargs)


@_register("resnet152_v2")
def resnet152_v2(**kwargs: Any) -> keras.Model:
    return _create("resnet152_v2", **kwargs)


@_register("se_resnet50")
def se_resnet50(**kwargs: Any) -> keras.Model:
    return _create("se_resnet50", **kwargs)


for _fn in (resnet18, resnet34, resnet50, resnet101, resnet152, resnet50_v2, resnet101_v2, resnet152_v2,
            se_resnet50):
    _kind, _depths, _preact, _keras = ARCHS[_fn.__name__]
    _fn.__doc__ = _DOC.format(
        title=("SE-" if _fn.__name__ in SE_RATIOS else "")
        + f"ResNet-{sum(_depths) * (3 if _kind == 'bottleneck' else 2) + 2}"
        + (" v2 (pre-activation)" if _preact else "")
        + (f", keras.applications.{_keras} layer for layer" if _keras else f" ({_kind} blocks)")
        + (", timm's seresnet50 layout" if _fn.__name__ in SE_RATIOS else ""),
        imagenet=f" (keras.applications.{_keras}'s)" if _keras else " (not available)",
    )
