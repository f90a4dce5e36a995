"""Test-time augmentation (flip and 10-crop averaging) and ensembles of models.

- :func:`flip_predict`: average of the predictions on the images and on their mirrors.
- :func:`ten_crops` / :func:`ten_crop_predict`: the 4 corner crops and the centre crop, and
  their mirrors (Krizhevsky et al. 2012), predictions averaged.
- :func:`ensemble_predict`: average of several models' predictions (probabilities);
  :func:`ensemble_model` builds the same as one Keras model (``keras.layers.Average``).

Example:
    >>> probs = ten_crop_predict(model, images_256)          # model takes 224x224 crops
    >>> probs = ensemble_predict([model_a, model_b], images)
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from kerascnn.errors import InputShapeError


def _as_batch(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
        raise InputShapeError(f"expected a batch of images (n, height, width, channels), got shape {images.shape}")
    return images


def flip_predict(model: keras.Model, images, batch_size: int = 32) -> np.ndarray:
    """Average of ``model``'s predictions on ``images`` and on their left-right mirrors.

    Args:
        model: a model taking ``images`` as they are.
        images: ``(n, h, w, c)`` batch.
        batch_size: prediction batch size.

    Returns:
        ``(n, ...)`` averaged predictions.

    Raises:
        InputShapeError: ``images`` is not a 4-D batch.
    """
    images = _as_batch(images)
    both = np.concatenate([images, images[:, :, ::-1]])
    out = model.predict(both, batch_size=batch_size, verbose=0)
    return (out[: len(images)] + out[len(images):]) / 2


def ten_crops(images, crop_size: int | tuple[int, int]) -> np.ndarray:
    """The 10 crops of each image: top-left, top-right, bottom-left, bottom-right, centre, then
    the left-right mirrors of these five in the same order.

    Args:
        images: ``(n, h, w, c)`` batch.
        crop_size: ``(crop_h, crop_w)`` (or one int), at most the image size.

    Returns:
        ``(n, 10, crop_h, crop_w, c)`` array.

    Raises:
        InputShapeError: not a 4-D batch, or crops larger than the images.
    """
    images = _as_batch(images)
    ch, cw = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    h, w = images.shape[1:3]
    if ch > h or cw > w or ch < 1 or cw < 1:
        raise InputShapeError(f"crop size {ch}x{cw} must be between 1x1 and the image size {h}x{w}")
    top, left = (h - ch) // 2, (w - cw) // 2
    corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), (top, left)]
    crops = [images[:, y:y + ch, x:x + cw] for y, x in corners]
    crops += [c[:, :, ::-1] for c in crops]
    return np.stack(crops, axis=1)


def ten_crop_predict(model: keras.Model, images, crop_size: int | tuple[int, int] | None = None, batch_size: int = 32) -> np.ndarray:
    """Average of ``model``'s predictions on the 10 crops of each image.

    Args:
        model: the model.
        images: ``(n, h, w, c)`` batch, larger than the crops (e.g. 256 for 224 crops).
        crop_size: crop size; default the model's input size.
        batch_size: prediction batch size.

    Returns:
        ``(n, ...)`` averaged predictions.

    Raises:
        InputShapeError: bad images or crop size, or no crop size and a model of unknown
            input size.
    """
    if crop_size is None:
        crop_size = tuple(model.input_shape[1:3])
        if None in crop_size:
            raise InputShapeError(f"model {model.name} has no fixed input size {model.input_shape}: pass crop_size")
    crops = ten_crops(images, crop_size)
    n = crops.shape[0]
    out = model.predict(crops.reshape((n * 10,) + crops.shape[2:]), batch_size=batch_size, verbose=0)
    return out.reshape((n, 10) + out.shape[1:]).mean(axis=1)


def ensemble_predict(models: Sequence[keras.Model], images, batch_size: int = 32) -> np.ndarray:
    """Average of several models' predictions (e.g. softmax probabilities) on ``images``.

    Raises:
        ValueError: no model, or models whose outputs differ in shape.
    """
    if not models:
        raise ValueError("ensemble_predict needs at least one model, got none")
    outs = [m.predict(images, batch_size=batch_size, verbose=0) for m in models]
    shapes = {o.shape for o in outs}
    if len(shapes) != 1:
        raise ValueError(f"the models' predictions must have one shape to be averaged, got {sorted(shapes)}")
    return np.mean(outs, axis=0)


def ensemble_model(models: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One Keras model that averages the outputs of ``models`` on a shared input.

    Args:
        models: models with the same input and output shapes (and distinct names).
        name: name of the ensemble model.

    Returns:
        A functional ``keras.Model`` (saved and loaded like any other).

    Raises:
        ValueError: no model, or different input shapes.
    """
    if not models:
        raise ValueError("ensemble_model needs at least one model, got none")
    shapes = {tuple(m.input_shape[1:]) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"the models must share one input shape, got {sorted(shapes)}")
    inputs = keras.Input(shapes.pop(), name=f"{name}_input")
    outputs = [m(inputs) for m in models]
    average = outputs[0] if len(outputs) == 1 else keras.layers.Average(name=f"{name}_average")(outputs)
    return keras.Model(inputs, average, name=name)
