"""LeNet-5 (LeCun et al. 1998) from a table of its layers: 61,706 parameters.

32x32 grey input, C1 6@5x5, S2 2x2 average pool, C3 16@5x5 (fully connected to S2's maps, as
most re-implementations), S4, C5 120@5x5, F6 84, 10 outputs; tanh activations.

Example:
    >>> from kerascnn.models.lenet import lenet5
    >>> model = lenet5()  # (32, 32, 1) -> 10 classes
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from kerascnn.models.base import build_model
from kerascnn.models.registry import register_model

# (name, filters of the 5x5 valid conv, 2x2 average pool after)
CONVS = (("c1", 6, True), ("c3", 16, True), ("c5", 120, False))
F6_UNITS = 84


def feature_info() -> list[dict]:
    """The output of S2, S4 and C5 (nominal reductions: strides only, ``valid`` convs shrink more)."""
    info, reduction = [], 1
    for name, filters, pool in CONVS:
        reduction *= 2 if pool else 1
        info.append({"name": f"s{int(name[1:]) + 1}" if pool else name, "channels": filters, "reduction": reduction})
    return info


def _top(x, classes: int, classifier_activation: str | None):
    """F6 (84 tanh units) then the classifier."""
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(F6_UNITS, activation="tanh", name="f6")(x)
    return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)


@register_model(
    "lenet5",
    default_input_shape=(32, 32, 1),
    min_input_size=32,
    feature_info=feature_info(),
    reference="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition",
    preprocessing="tf",
)
def lenet5(classes: int = 10, **kwargs: Any) -> keras.Model:
    """LeNet-5.

    Args:
        classes: number of classes (10 digits in the paper).
        **kwargs: :func:`kerascnn.models.base.build_model`'s keras.applications-style arguments
            (``include_top``, ``weights`` (a file), ``input_shape`` (default 32x32x1),
            ``input_tensor``, ``pooling``, ``classifier_activation``, ``features_only``).

    Returns:
        The ``keras.Model``.

    Raises:
        InputShapeError: an input smaller than 32x32.
    """

    def body(x) -> list:
        features = []
        for name, filters, pool in CONVS:
            x = layers.Conv2D(filters, 5, activation="tanh", name=name)(x)
            if pool:
                x = layers.AveragePooling2D(2, name=f"s{int(name[1:]) + 1}")(x)
            features.append(x)
        return features

    return build_model(name=kwargs.pop("name", "lenet5"), body=body, top=_top, classes=classes,
                       default_input_shape=(32, 32, 1), min_input_size=32, **kwargs)
