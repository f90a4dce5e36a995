"""DenseNet-BC (Huang et al. 2017) from one table: keras.applications DenseNet121/169/201 exactly.

Example:
    >>> from kerascnn.models.densenet import densenet121
    >>> model = densenet121(input_shape=(64, 64, 3), classes=10)
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from kerascnn.blocks import BN_EPSILON, conv_bn_act, dense_block, transition
from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

GROWTH_RATE = 32
STEM_CHANNELS = 64
COMPRESSION = 0.5  # channels kept by each transition
STAGE_NAMES = ("conv2", "conv3", "conv4", "conv5")

# name: (layers per dense block, keras.applications counterpart)
ARCHS: dict[str, tuple[tuple[int, ...], str]] = {
    "densenet121": ((6, 12, 24, 16), "DenseNet121"),
    "densenet169": ((6, 12, 32, 32), "DenseNet169"),
    "densenet201": ((6, 12, 48, 32), "DenseNet201"),
}


def feature_info(arch: str) -> list[dict]:
    """The stem (/2), each dense block's output (/4 ... /16) and the final ``relu`` (/32)."""
    info = [{"name": "conv1_relu", "channels": STEM_CHANNELS, "reduction": 2}]
    channels, reduction = STEM_CHANNELS, 4
    for i, (stage, blocks) in enumerate(zip(STAGE_NAMES, ARCHS[arch][0])):
        channels += blocks * GROWTH_RATE
        info.append({"name": f"{stage}_block{blocks}_concat", "channels": channels, "reduction": reduction})
        if i < len(STAGE_NAMES) - 1:
            channels, reduction = int(channels * COMPRESSION), reduction * 2
    info[-1]["name"] = "relu"
    return info


def _body(arch: str):
    def body(x) -> list:
        x = layers.ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad")(x)
        x = conv_bn_act(x, STEM_CHANNELS, 7, 2, padding="valid", name="conv1")
        features = [x]
        x = layers.ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
        for i, (stage, blocks) in enumerate(zip(STAGE_NAMES, ARCHS[arch][0])):
            x = dense_block(x, blocks, GROWTH_RATE, name=stage)
            features.append(x)
            if i < len(STAGE_NAMES) - 1:
                x = transition(x, COMPRESSION, name=f"pool{i + 2}")
        x = layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, name="bn")(x)
        features[-1] = layers.Activation("relu", name="relu")(x)
        return features

    return body


def _create(arch: str, **kwargs: Any) -> keras.Model:
    keras_app = getattr(keras.applications, ARCHS[arch][1])
    return build_model(name=kwargs.pop("name", arch), body=_body(arch), keras_app=keras_app, **kwargs)


def _register(arch: str):
    return register_model(
        arch,
        feature_info=feature_info(arch),
        reference=f"Huang et al. 2017, Densely Connected Convolutional Networks; keras.applications.{ARCHS[arch][1]}",
        preprocessing="torch",
    )


@_register("densenet121")
def densenet121(**kwargs: Any) -> keras.Model:
    """DenseNet-121, keras.applications.DenseNet121 layer for layer.

    Args:
        **kwargs: :func:`kerascnn.models.base.build_model`'s keras.applications-style arguments
            (``include_top``, ``weights``, ``input_shape``, ``input_tensor``, ``pooling``,
            ``classes``, ``classifier_activation``, ``features_only``).

    Returns:
        The ``keras.Model``.
    """
    return _create("densenet121", **kwargs)


@_register("densenet169")
def densenet169(**kwargs: Any) -> keras.Model:
    """DenseNet-169, keras.applications.DenseNet169 layer for layer (arguments: :func:`densenet121`)."""
    return _create("densenet169", **kwargs)


@_register("densenet201")
def densenet201(**kwargs: Any) -> keras.Model:
    """DenseNet-201, keras.applications.DenseNet201 layer for layer (arguments: :func:`densenet121`)."""
    return _create("densenet201", **kwargs)
