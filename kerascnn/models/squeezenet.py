"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016), from a table of fire modules.

Layer for layer torchvision's ``squeezenet1_0`` / ``squeezenet1_1`` (same convolutions, same
parameter counts: 1,248,424 and 1,235,496 with the 1000-class head). Version 1.1 (from the
authors' repository) starts with a 3x3 conv of 64 filters and pools earlier, for 2.4x less
computation at the same accuracy.

Example:
    >>> from kerascnn.models.squeezenet import squeezenet1_1
    >>> model = squeezenet1_1(input_shape=(64, 64, 3), classes=10)
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from kerascnn.blocks import conv_bn_act, fire_module
from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

# name: (stem (filters, kernel), then per stage the fire modules as (squeeze, expand) with
# expand the channels of each of the 1x1 and 3x3 expand convs); a 3x3/2 max pool sits before
# every stage. Fire modules are numbered from 2 as in the paper (conv1 is the stem).
ARCHS: dict[str, tuple[tuple[int, int], tuple[tuple[tuple[int, int], ...], ...]]] = {
    "squeezenet1_0": ((96, 7), (((16, 64), (16, 64), (32, 128)), ((32, 128), (48, 192), (48, 192), (64, 256)),
                                ((64, 256),))),
    "squeezenet1_1": ((64, 3), (((16, 64), (16, 64)), ((32, 128), (32, 128)),
                                ((48, 192), (48, 192), (64, 256), (64, 256)))),
}


def feature_info(arch: str) -> list[dict]:
    """The stem's ReLU (/2), then the last fire module before each pool and the last one."""
    (stem, _), stages = ARCHS[arch]
    info = [{"name": "conv1_relu", "channels": stem, "reduction": 2}]
    fire = 1
    for i, stage in enumerate(stages):
        fire += len(stage)
        info.append({"name": f"fire{fire}_concat", "channels": 2 * stage[-1][1], "reduction": 2 ** (i + 2)})
    return info


def _ceil_max_pool(x, name: str):
    """torchvision's ``MaxPool2d(3, 2, ceil_mode=True)``: an even side gets one more window,
    reaching one pixel past the edge. Its inputs follow a ReLU (>= 0), so a zero pad on the
    bottom/right there gives the same maxima (unknown sizes pool with floor, as ``valid``)."""
    pad = [(0, 1 if size is not None and size % 2 == 0 else 0) for size in x.shape[1:3]]
    if any(p for _, p in pad):
        x = layers.ZeroPadding2D(tuple(pad), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name=name)(x)


def _top(x, classes: int, classifier_activation: str | None, dropout: float = 0.5):
    """torchvision's classifier: dropout, 1x1 conv to the classes + ReLU, global average pool.

    Initialisation as torchvision: He uniform for the features, normal (std 0.01) for conv10.
    A class score is the average over positions of a non-negative map, so ``classifier_activation``
    (softmax by default, as keras.applications) is applied after the pooling; ``None`` gives
    torchvision's outputs.
    """
    x = layers.Dropout(dropout, name="drop9")(x)
    x = conv_bn_act(x, classes, 1, batch_norm=False, name="conv10",
                    kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))  # torchvision's
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if classifier_activation is None:
        return x
    return layers.Activation(classifier_activation, name="predictions")(x)


def _create(arch: str, dropout: float = 0.5, **kwargs: Any) -> keras.Model:
    (stem, kernel), stages = ARCHS[arch]

    def body(x) -> list:
        x = conv_bn_act(x, stem, kernel, 2, padding="valid", batch_norm=False, kernel_initializer="he_uniform",
                        name="conv1")
        features, fire = [x], 1
        for i, stage in enumerate(stages):
            x = _ceil_max_pool(x, f"pool{i + 1}")
            for squeeze, expand in stage:
                fire += 1
                x = fire_module(x, squeeze, expand, expand, name=f"fire{fire}")
            features.append(x)
        return features

    def top(x, classes, classifier_activation):
        return _top(x, classes, classifier_activation, dropout)

    return build_model(name=kwargs.pop("name", arch), body=body, top=top, **kwargs)


_REFERENCE = "Iandola et al. 2016, SqueezeNet: AlexNet-level accuracy with 50x fewer parameters; torchvision"


@register_model("squeezenet1_0", feature_info=feature_info("squeezenet1_0"), reference=_REFERENCE,
                preprocessing="torch")
def squeezenet1_0(dropout: float = 0.5, **kwargs: Any) -> keras.Model:
    """SqueezeNet 1.0: 7x7/2 stem of 96 filters, fire2-fire9, torchvision's ``squeezenet1_0``.

    Args:
        dropout: dropout rate before conv10 (0.5 in the paper).
        **kwargs: :func:`kerascnn.models.base.build_model`'s keras.applications-style arguments:
            ``include_top``, ``weights`` (``None`` or a file), ``input_shape``, ``input_tensor``,
            ``pooling``, ``classes``, ``classifier_activation``, ``features_only``.

    Returns:
        The ``keras.Model``.
    """
    return _create("squeezenet1_0", dropout, **kwargs)


@register_model("squeezenet1_1", feature_info=feature_info("squeezenet1_1"), reference=_REFERENCE,
                preprocessing="torch")
def squeezenet1_1(dropout: float = 0.5, **kwargs: Any) -> keras.Model:
    """SqueezeNet 1.1: 3x3/2 stem of 64 filters, earlier pools, torchvision's ``squeezenet1_1``.

    Args:
        dropout: dropout rate before conv10.
        **kwargs: as :func:`squeezenet1_0`.

    Returns:
        The ``keras.Model``.
    """
    return _create("squeezenet1_1", dropout, **kwargs)
