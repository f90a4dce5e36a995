"""VGG (Simonyan & Zisserman 2014) configurations A, B, D, E from one table.

``vgg16`` and ``vgg19`` are keras.applications ``VGG16``/``VGG19`` layer for layer.

Example:
    >>> from kerascnn.models.vgg import vgg11
    >>> model = vgg11(input_shape=(32, 32, 3), include_top=False, pooling="avg")
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

WIDTHS = (64, 128, 256, 512, 512)  # channels of the five blocks
FC_UNITS = 4096

# name: (3x3 convs per block, keras.applications counterpart)
ARCHS: dict[str, tuple[tuple[int, ...], str | None]] = {
    "vgg11": ((1, 1, 2, 2, 2), None),
    "vgg13": ((2, 2, 2, 2, 2), None),
    "vgg16": ((2, 2, 3, 3, 3), "VGG16"),
    "vgg19": ((2, 2, 4, 4, 4), "VGG19"),
}


def feature_info(arch: str) -> list[dict]:
    """The max pool ending each block: ``block{i}_pool`` at /2 ... /32."""
    return [{"name": f"block{i}_pool", "channels": width, "reduction": 2**i} for i, width in enumerate(WIDTHS, 1)]


def fc_top(x, classes: int, classifier_activation: str | None, units: int = FC_UNITS, dropout: float = 0.0,
           prefix: str = "fc", first: int = 1):
    """Flatten, two ReLU ``Dense(units)`` (optional dropout after each), then the classifier.

    Layer names: ``flatten``, ``{prefix}{first}``, ``{prefix}{first + 1}`` (dropout
    ``{prefix}{n}_dropout``), ``predictions``. Shared with AlexNet.
    """
    x = layers.Flatten(name="flatten")(x)
    for n in (first, first + 1):
        x = layers.Dense(units, activation="relu", name=f"{prefix}{n}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{prefix}{n}_dropout")(x)
    return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)


def _create(arch: str, **kwargs: Any) -> keras.Model:
    convs, keras_name = ARCHS[arch]

    def body(x) -> list:
        features = []
        for block, (n, width) in enumerate(zip(convs, WIDTHS), 1):
            for i in range(1, n + 1):
                x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"block{block}_conv{i}")(x)
            x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
            features.append(x)
        return features

    keras_app = getattr(keras.applications, keras_name) if keras_name else None
    return build_model(name=kwargs.pop("name", arch), body=body, top=fc_top, keras_app=keras_app, **kwargs)


def _register(arch: str):
    keras_name = ARCHS[arch][1]
    paper = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks"
    return register_model(
        arch, feature_info=feature_info(arch), preprocessing="caffe",
        reference=f"{paper}; keras.applications.{keras_name}" if keras_name else paper,
    )


@_register("vgg11")
def vgg11(**kwargs: Any) -> keras.Model:
    """VGG-11 (configuration A: 8 convs + 3 fully connected layers).

    Args:
        **kwargs: :func:`kerascnn.models.base.build_model`'s keras.applications-style arguments
            (``include_top``, ``weights``, ``input_shape``, ``input_tensor``, ``pooling``,
            ``classes``, ``classifier_activation``, ``features_only``). With the top, the
            flattened size depends on the input (224x224 gives 7x7x512).

    Returns:
        The ``keras.Model``.
    """
    return _create("vgg11", **kwargs)


@_register("vgg13")
def vgg13(**kwargs: Any) -> keras.Model:
    """VGG-13 (configuration B; arguments: :func:`vgg11`)."""
    return _create("vgg13", **kwargs)


@_register("vgg16")
def vgg16(**kwargs: Any) -> keras.Model:
    """VGG-16 (configuration D), keras.applications.VGG16 layer for layer (arguments: :func:`vgg11`)."""
    return _create("vgg16", **kwargs)


@_register("vgg19")
def vgg19(**kwargs: Any) -> keras.Model:
    """VGG-19 (configuration E), keras.applications.VGG19 layer for layer (arguments: :func:`vgg11`)."""
    return _create("vgg19", **kwargs)
