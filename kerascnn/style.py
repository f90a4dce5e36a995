"""Neural style transfer (Gatys, Ecker and Bethge 2016) on a registry VGG.

An image is optimised so that its deep features match a content image's (content loss) and its
feature correlations, the Gram matrices, match a style image's at several depths (style loss).

Losses, per layer ``l`` with ``M_l`` positions and ``N_l`` channels:

- Gram matrix ``G_l = F_l^T F_l / M_l`` (``F_l`` the ``M_l x N_l`` features);
- style loss: the mean over layers of ``mean((G_l(x) - G_l(style))^2)`` (the paper's
  ``E_l`` times 4, since it divides by ``4 N_l^2 M_l^2`` with an unnormalised Gram);
- content loss: ``mean((F(x) - F(content))^2)`` at the content layer.

Example:
    >>> from kerascnn import style
    >>> image, history = style.style_transfer(content, style_image, steps=300, path="styled.png")
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerascnn.errors import ImageSizeMismatchError, InputShapeError

STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
"""Gatys et al.'s style layers (conv1_1 ... conv5_1) in the registry VGG's names."""

CONTENT_LAYER = "block4_conv2"
"""Gatys et al.'s content layer (conv4_2)."""


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Channel correlations of feature maps, averaged over positions.

    Args:
        features: ``(batch, h, w, channels)``.

    Returns:
        ``(batch, channels, channels)``: ``G[b, c, d] = sum_ij F[b, i, j, c] F[b, i, j, d] / (h w)``.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], tf.float32)
    return tf.einsum("bijc,bijd->bcd", features, features) / positions


def caffe_preprocess(images: tf.Tensor) -> tf.Tensor:
    """[0, 1] RGB to the input of the original VGG weights (0-255 BGR, ImageNet mean removed)."""
    return keras.applications.vgg16.preprocess_input(tf.convert_to_tensor(images, tf.float32) * 255.0)


def _as_unit_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise InputShapeError(f"the {name} image must be RGB (h, w, 3), got shape {image.shape}")
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)


class StyleTransfer:
    """The losses of one content/style pair on a feature extractor, and their optimisation.

    Args:
        content: RGB content image ``(h, w, 3)``, ``uint8`` or float in [0, 1].
        style: RGB style image of the same size (resize it first, e.g. with ``cv2.resize``).
        model: a registry name (``"vgg16"``, ``"vgg19"``) built with ``include_top=False`` at the
            content's size, or a functional ``keras.Model`` that has the named layers.
        weights: weights of a registry model: ``"imagenet"``, a file, or ``None`` (random).
        content_layer: layer of the content loss.
        style_layers: layers of the style loss.
        content_weight: weight of the content loss (the paper's alpha).
        style_weight: weight of the style loss (the paper's beta). The balance depends on the
            weights' activation scales: the default was chosen on random-weight VGG features
            (the tests); with ImageNet weights, try a few values.
        preprocess: function from a [0, 1] RGB batch to the model's input; default
            :func:`caffe_preprocess` for a registry model, identity for a given model.

    Raises:
        ImageSizeMismatchError: the style image has another size than the content image.
        InputShapeError: an image is not ``(h, w, 3)``.
        LayerNotFoundError: a layer name the model does not have (the message lists them).
    """

    def __init__(self, content: np.ndarray, style: np.ndarray, model: str | keras.Model = "vgg19",
                 weights: str | None = "imagenet", content_layer: str = CONTENT_LAYER,
                 style_layers: Sequence[str] = STYLE_LAYERS, content_weight: float = 1.0,
                 style_weight: float = 1e-3, preprocess: Callable | None = None):
        from kerascnn.visualize import get_layer

        self.content = _as_unit_image(content, "content")
        self.style = _as_unit_image(style, "style")
        if self.style.shape != self.content.shape:
            raise ImageSizeMismatchError(
                f"the style image is {self.style.shape[:2]} (h, w) but the content image is "
                f"{self.content.shape[:2]}; resize the style image to the content's size first, "
                "e.g. cv2.resize(style, (w, h))"
            )
        if isinstance(model, str):
            from kerascnn.models.registry import create_model

            model = create_model(model, include_top=False, weights=weights, input_shape=self.content.shape)
            preprocess = preprocess or caffe_preprocess
        self.preprocess = preprocess or (lambda x: x)
        self.style_layers = list(style_layers)
        outputs = [get_layer(model, name).output for name in [content_layer, *self.style_layers]]
        self.extractor = keras.Model(model.input, outputs)
        self.content_weight, self.style_weight = float(content_weight), float(style_weight)
        self._content_target = self._features(self.content[None])[0]
        self._style_targets = [gram_matrix(f) for f in self._features(self.style[None])[1:]]

    def _features(self, images) -> list[tf.Tensor]:
        return [tf.cast(f, tf.float32) for f in self.extractor(self.preprocess(images), training=False)]

    def _losses(self, images) -> tuple[tf.Tensor, tf.Tensor]:
        features = self._features(images)
        content = tf.reduce_mean(tf.square(features[0] - self._content_target))
        style = tf.add_n([tf.reduce_mean(tf.square(gram_matrix(f) - target))
                          for f, target in zip(features[1:], self._style_targets)]) / len(self._style_targets)
        return content, style

    def losses(self, image: np.ndarray) -> dict[str, float]:
        """``{"content", "style", "total"}`` losses of one ``(h, w, 3)`` image in [0, 1]."""
        content, style = self._losses(_as_unit_image(image, "input")[None])
        return {"content": float(content), "style": float(style),
                "total": self.content_weight * float(content) + self.style_weight * float(style)}

    def run(self, steps: int = 300, learning_rate: float = 0.02, init: str = "content",
            path: str | os.PathLike | None = None, seed: int = 0) -> tuple[np.ndarray, dict[str, list[float]]]:
        """Optimise the image with Adam, keeping its pixels in [0, 1].

        Args:
            steps: Adam steps.
            learning_rate: Adam's step, in pixel units.
            init: start from the ``"content"`` image or from ``"noise"``.
            path: optional PNG of the result.
            seed: the noise start.

        Returns:
            ``(image, history)``: the ``(h, w, 3)`` float32 result in [0, 1] and
            ``{"content": [...], "style": [...], "total": [...]}``, before each step and at the end
            (``steps + 1`` values).
        """
        if init not in ("content", "noise"):
            raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
        start = self.content if init == "content" else \
            np.random.default_rng(seed).uniform(0, 1, self.content.shape).astype(np.float32)
        x = tf.Variable(start[None])
        optimizer = keras.optimizers.Adam(learning_rate)
        history: dict[str, list[float]] = {"content": [], "style": [], "total": []}

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                content, style = self._losses(x)
                total = self.content_weight * content + self.style_weight * style
            optimizer.apply_gradients([(tape.gradient(total, x), x)])
            x.assign(tf.clip_by_value(x, 0.0, 1.0))
            return content, style, total

        for _ in range(steps):
            for key, value in zip(("content", "style", "total"), step()):
                history[key].append(float(value))
        image = x.numpy()[0]
        for key, value in self.losses(image).items():
            history[key].append(value)
        if path is not None:
            from kerascnn.visualize import save_png

            save_png((image * 255).round().astype(np.uint8), path)
        return image, history


def style_transfer(content: np.ndarray, style: np.ndarray, model: str | keras.Model = "vgg19",
                   weights: str | None = "imagenet", steps: int = 300, learning_rate: float = 0.02,
                   content_weight: float = 1.0, style_weight: float = 1e-3, init: str = "content",
                   path: str | os.PathLike | None = None, **kwargs) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Neural style transfer in one call: ``StyleTransfer(...).run(...)``.

    Args:
        content: RGB content image ``(h, w, 3)``.
        style: RGB style image of the same size.
        model: ``"vgg16"``, ``"vgg19"`` or a feature model (see :class:`StyleTransfer`).
        weights: the registry model's weights.
        steps: optimisation steps.
        learning_rate: Adam's step in pixel units.
        content_weight: alpha.
        style_weight: beta.
        init: ``"content"`` or ``"noise"``.
        path: optional PNG of the result.
        **kwargs: ``content_layer``, ``style_layers``, ``preprocess``.

    Returns:
        ``(image, history)`` as :meth:`StyleTransfer.run`.
    """
    transfer = StyleTransfer(content, style, model, weights, content_weight=content_weight,
                             style_weight=style_weight, **kwargs)
    return transfer.run(steps, learning_rate, init, path)
