"""Moving weights into kerascnn models: from keras.applications models, and from files.

Example:
    >>> import keras
    >>> from kerascnn import port_weights
    >>> from kerascnn.models.resnet import resnet50
    >>> source = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), include_top=False)
    >>> target = resnet50(input_shape=(64, 64, 3), include_top=False)
    >>> port_weights(source, target)
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import keras

from kerascnn.errors import InputShapeError, WeightsMismatchError, WeightsUnavailableError


def _weighted_layers(model: keras.Model) -> list:
    """The layers of ``model`` that own weights, in graph order (nested models flattened)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_weighted_layers(layer))
        elif layer.weights:
            found.append(layer)
    return found


def _pairs_by_name(source_layers: list, target_layers: list, source: str, target: str) -> list:
    by_name = {layer.name: layer for layer in target_layers}
    for layer in source_layers:
        if layer.name not in by_name:
            raise WeightsMismatchError(
                f"layer {layer.name!r} of {source} has weights but {target} has no layer of that name"
            )
    source_names = {layer.name for layer in source_layers}
    for layer in target_layers:
        if layer.name not in source_names:
            raise WeightsMismatchError(
                f"layer {layer.name!r} of {target} has weights but {source} has no layer of that name"
            )
    return [(layer, by_name[layer.name]) for layer in source_layers]


def _pairs_by_order(source_layers: list, target_layers: list, source: str, target: str) -> list:
    if len(source_layers) != len(target_layers):
        first = min(len(source_layers), len(target_layers))
        extra = (source_layers if len(source_layers) > first else target_layers)[first]
        raise WeightsMismatchError(
            f"{source} has {len(source_layers)} layers with weights, {target} has "
            f"{len(target_layers)}; the first unmatched is {extra.name!r}"
        )
    return list(zip(source_layers, target_layers))


def port_weights(source: keras.Model, target: keras.Model, by: str = "name") -> int:
    """Copy every weight of ``source`` (e.g. a keras.applications model) into ``target``.

    Layers are matched by name (``by="name"``: both must have the same set of layers with
    weights) or by the order of their layers with weights (``by="order"``, for models whose
    names differ); every weight's shape is checked before anything is copied.

    Args:
        source: the model to copy from.
        target: the model to copy into (modified in place).
        by: ``"name"`` or ``"order"``.

    Returns:
        The number of weight arrays copied.

    Raises:
        WeightsMismatchError: a layer with weights missing on either side, or a shape that
            differs; the message names the first such layer and the shapes.
        ValueError: ``by`` is neither ``"name"`` nor ``"order"``.
    """
    pairing = {"name": _pairs_by_name, "order": _pairs_by_order}
    if by not in pairing:
        raise ValueError(f"port_weights: by must be 'name' or 'order', got {by!r}")
    src, dst = f"source model {source.name!r}", f"target model {target.name!r}"
    pairs = pairing[by](_weighted_layers(source), _weighted_layers(target), src, dst)
    for s, t in pairs:
        s_shapes = [tuple(w.shape) for w in s.weights]
        t_shapes = [tuple(w.shape) for w in t.weights]
        if s_shapes != t_shapes:
            raise WeightsMismatchError(
                f"layer {t.name!r} of {dst} has weight shapes {t_shapes}, but layer {s.name!r} of "
                f"{src} has {s_shapes}"
            )
    for s, t in pairs:
        t.set_weights(s.get_weights())
    return sum(len(s.weights) for s, _ in pairs)


def load_model_weights(
    model: keras.Model,
    weights: str,
    keras_app: Callable[..., keras.Model] | None,
    include_top: bool,
    input_shape: Sequence[int | None],
) -> None:
    """Load ``weights`` into ``model`` (called by :func:`kerascnn.models.base.build_model`).

    ``"imagenet"`` builds ``keras_app(weights="imagenet", include_top=..., input_shape=...)``
    (Keras downloads and caches the file) and ports it: by name when both models have the same
    layer names, else by order. Any other value is a local ``.weights.h5`` or ``.keras`` file
    loaded with ``model.load_weights``.

    Args:
        model: the freshly built model.
        weights: ``"imagenet"`` or the path of a weights file.
        keras_app: the keras.applications builder (needed for ``"imagenet"``).
        include_top: whether ``model`` has its classifier.
        input_shape: ``model``'s input shape without the batch axis.

    Raises:
        WeightsUnavailableError: the ImageNet weights cannot be downloaded (offline).
        InputShapeError: keras.applications refuses the input shape with ImageNet weights.
        WeightsMismatchError: the weights do not fit the model.
    """
    if weights != "imagenet":
        try:
            model.load_weights(weights)
        except Exception as err:  # Keras raises ValueError, KeyError, OSError... on a bad file
            raise WeightsMismatchError(
                f"weights file {os.fspath(weights)!r} does not fit model {model.name!r}: {err}"
            ) from err
        return
    app_name = getattr(keras_app, "__name__", None) or getattr(getattr(keras_app, "func", None), "__name__", "")
    try:
        source = keras_app(weights="imagenet", include_top=include_top, input_shape=tuple(input_shape))
    except ValueError as err:
        raise InputShapeError(
            f"{model.name}: keras.applications.{app_name} refuses input_shape={tuple(input_shape)} "
            f"with include_top={include_top} and ImageNet weights: {err}"
        ) from err
    except Exception as err:  # get_file raises a bare Exception on network failures
        raise WeightsUnavailableError(
            f"{model.name}: the ImageNet weights of keras.applications.{app_name} could not be "
            f"fetched ({err}). Without network access, download them once elsewhere (they are "
            "cached in ~/.keras/models) or pass weights='path/to/file.weights.h5'."
        ) from err
    names = {layer.name for layer in _weighted_layers(source)}
    same_names = names == {layer.name for layer in _weighted_layers(model)}
    port_weights(source, model, by="name" if same_names else "order")
