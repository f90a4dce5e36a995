"""Seeing inside convolutional networks: filters, feature maps, saliency, Grad-CAM and more.

Every function returns NumPy arrays (so results can be tested and reused) and, where a person
would rather look than read, can also write a PNG (``path=...``). Plots use matplotlib's
non-interactive Agg backend, so they work on a machine with no screen.

Example:
    >>> from kerascnn import visualize
    >>> heat = visualize.grad_cam(model, image)                # (h, w) in [0, 1]
    >>> overlay = visualize.overlay_heatmap(image, heat, path="cam.png")
"""

from __future__ import annotations

import os
from typing import Sequence

import cv2
import keras
import numpy as np
import tensorflow as tf

from kerascnn.errors import LayerNotFoundError

# --- helpers ---------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(image: np.ndarray, path: str | os.PathLike) -> str:
    """Write an RGB (or grey) image to a PNG file.

    Args:
        image: ``uint8`` array ``(h, w)``, ``(h, w, 1)`` or ``(h, w, 3)`` RGB; floats in [0, 1]
            are scaled to 0-255.
        path: destination file.

    Returns:
        The path written, as a string.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image * 255.0 if image.max() <= 1.0 else image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, image):
        raise OSError(f"cannot write PNG file {path}")
    return path


def normalize01(array: np.ndarray) -> np.ndarray:
    """Scale an array linearly to [0, 1] (a constant array becomes zeros)."""
    array = np.asarray(array, dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    if high - low < 1e-12:
        return np.zeros_like(array)
    return (array - low) / (high - low)


def tile_images(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Arrange ``(n, h, w[, c])`` images into one grid image, with ``pad`` pixels between them.

    Args:
        images: the images (same size).
        columns: grid columns; default about sqrt(n).
        pad: separating pixels (filled with zeros).

    Returns:
        The grid ``(rows*(h+pad)-pad, columns*(w+pad)-pad[, c])``, same dtype.
    """
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros((rows * (h + pad) - pad, columns * (w + pad) - pad) + images.shape[3:], images.dtype)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = image
    return grid


def get_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    """``model.get_layer(name)`` with an error that lists the candidates.

    Raises:
        LayerNotFoundError: the model has no layer of that name; the message lists close
            names and the model's layers.
    """
    names = [layer.name for layer in model.layers]
    if name in names:
        return model.get_layer(name)
    import difflib

    close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
    listed = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
    hint = f"; did you mean {close}?" if close else ""
    raise LayerNotFoundError(f"model {model.name!r} has no layer named {name!r}{hint} Its layers: {listed}")


def _batch(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4:
        raise ValueError(f"expected an image (h, w, c) or a batch (n, h, w, c), got shape {image.shape}")
    return image


# --- filters and feature maps ----------------------------------------------------------------


def _all_layers(model: keras.Model):
    """Every layer of ``model``, nested models' layers included (depth first, in order)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def first_conv_layer(model: keras.Model) -> keras.layers.Layer:
    """The first ``Conv2D`` layer of a model (searching nested models too)."""
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            return layer
    raise ValueError(f"model {model.name!r} has no Conv2D layer")


def filter_tiles(model_or_layer, path: str | os.PathLike | None = None, columns: int | None = None) -> np.ndarray:
    """The kernels of a convolution layer as image tiles (first layer by default).

    Each filter ``(k, k, c_in)`` is scaled to [0, 1] on its own; 3-channel inputs give RGB tiles,
    others show the mean over input channels in grey.

    Args:
        model_or_layer: a model (its first Conv2D) or a Conv2D layer.
        path: optional PNG to write (tiles enlarged 8x, nearest neighbour).
        columns: grid columns.

    Returns:
        ``(filters, k, k, 3 or 1)`` float32 tiles in [0, 1].
    """
    layer = model_or_layer if isinstance(model_or_layer, keras.layers.Conv2D) else first_conv_layer(model_or_layer)
    kernel = np.asarray(layer.kernel.numpy(), dtype=np.float32)  # (k, k, c_in, c_out)
    if kernel.shape[2] != 3:
        kernel = kernel.mean(axis=2, keepdims=True)
    tiles = np.stack([normalize01(kernel[..., i]) for i in range(kernel.shape[-1])])
    if path is not None:
        big = np.stack([cv2.resize(t, None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST).reshape(
            t.shape[0] * 8, t.shape[1] * 8, -1) for t in tiles])
        grid = tile_images(big, columns, pad=2)
        save_png(grid[..., 0] if grid.shape[-1] == 1 else grid, path)
    return tiles


def feature_maps(model: keras.Model, layer_name: str, image: np.ndarray) -> np.ndarray:
    """The activations of one layer for one input image.

    Args:
        model: a functional model.
        layer_name: the layer whose output to return.
        image: ``(h, w, c)`` image, already preprocessed as the model expects.

    Returns:
        ``(h', w', channels)`` float32 activations.
    """
    layer = get_layer(model, layer_name)
    probe = keras.Model(model.input, layer.output)
    return np.asarray(probe(_batch(image), training=False))[0]


def plot_feature_maps(maps: np.ndarray, path: str | os.PathLike, max_maps: int = 64, columns: int | None = None) -> str:
    """Write the first ``max_maps`` channels of ``(h, w, c)`` activations as a grid PNG."""
    maps = np.moveaxis(np.asarray(maps)[..., :max_maps], -1, 0)
    tiles = np.stack([normalize01(m) for m in maps])
    scale = max(1, 64 // tiles.shape[1])
    tiles = np.stack([cv2.resize(t, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for t in tiles])
    return save_png(tile_images(tiles, columns, pad=2), path)


# --- classic fixed kernels, as Conv2D layers -------------------------------------------------

CLASSIC_KERNELS: dict[str, np.ndarray] = {
    "vertical_edge": np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float32),
    "horizontal_edge": np.array([[1, 1, 1], [0, 0, 0], [-1, -1, -1]], np.float32),
    "sobel_x": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32),
    "sobel_y": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32),
    "scharr_x": np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]], np.float32),
    "scharr_y": np.array([[3, 10, 3], [0, 0, 0], [-3, -10, -3]], np.float32),
    "blur": np.full((3, 3), 1.0 / 9.0, np.float32),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
}
"""The textbook 3x3 kernels (cross-correlation, as Conv2D computes)."""


def classic_kernel_layer(names: Sequence[str] | None = None) -> keras.layers.Conv2D:
    """A frozen ``Conv2D`` whose filters are the named classic kernels, for 1-channel input.

    Args:
        names: kernel names from :data:`CLASSIC_KERNELS`; default all, in that order.

    Returns:
        A built, non-trainable ``Conv2D(len(names), 3, padding="same", use_bias=False)``.
    """
    names = list(names or CLASSIC_KERNELS)
    unknown = [n for n in names if n not in CLASSIC_KERNELS]
    if unknown:
        raise KeyError(f"unknown kernels {unknown}; known: {sorted(CLASSIC_KERNELS)}")
    layer = keras.layers.Conv2D(len(names), 3, padding="same", use_bias=False, trainable=False, name="classic_kernels")
    layer.build((None, None, None, 1))
    layer.set_weights([np.stack([CLASSIC_KERNELS[n] for n in names], axis=-1)[:, :, None, :]])
    return layer


def apply_classic_kernels(image: np.ndarray, names: Sequence[str] | None = None,
                          path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Apply the classic kernels to an image through a Conv2D layer (teaching example).

    Args:
        image: ``uint8`` or float image ``(h, w)``, ``(h, w, 1)`` or RGB ``(h, w, 3)``; colour is
            converted to grey first.
        names: kernel names (default all).
        path: optional PNG: the grey input and each response side by side, labelled.

    Returns:
        ``{name: (h, w) float32 response}`` on the 0-1 grey image.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image.astype(np.uint8) if image.dtype != np.uint8 else image, cv2.COLOR_RGB2GRAY)
    grey = image.reshape(image.shape[0], image.shape[1]).astype(np.float32)
    if grey.max() > 1.0:
        grey /= 255.0
    names = list(names or CLASSIC_KERNELS)
    out = np.asarray(classic_kernel_layer(names)(grey[None, :, :, None]))[0]
    responses = {n: out[..., i] for i, n in enumerate(names)}
    if path is not None:
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(names) + 1, figsize=(2.2 * (len(names) + 1), 2.6))
        axes[0].imshow(grey, cmap="gray")
        axes[0].set_title("input")
        for ax, n in zip(axes[1:], names):
            ax.imshow(responses[n], cmap="gray")
            ax.set_title(n, fontsize=8)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=80)
        plt.close(fig)
    return responses


# --- attribution: saliency, Grad-CAM, occlusion ----------------------------------------------


def _class_index(predictions: np.ndarray, class_index: int | None) -> int:
    return int(np.argmax(predictions[0])) if class_index is None else int(class_index)


def saliency_map(model: keras.Model, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Vanilla gradient saliency (Simonyan et al. 2014): |d score / d input|, max over channels.

    Args:
        model: a classifier.
        image: ``(h, w, c)`` preprocessed input.
        class_index: the class whose score to explain; default the predicted class.

    Returns:
        ``(h, w)`` float32 map in [0, 1].
    """
    x = tf.convert_to_tensor(_batch(image))
    with tf.GradientTape() as tape:
        tape.watch(x)
        predictions = model(x, training=False)
        index = _class_index(np.asarray(predictions), class_index)
        score = predictions[:, index]
    gradient = tape.gradient(score, x)
    return normalize01(np.abs(np.asarray(gradient)[0]).max(axis=-1))


def last_conv_layer_name(model: keras.Model) -> str:
    """The name of the last layer with a 4-D output (the usual Grad-CAM target)."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        if shape is not None and len(layer.output.shape) == 4 and not isinstance(layer, keras.layers.InputLayer):
            return layer.name
    raise ValueError(f"model {model.name!r} has no layer with a 4-D (feature map) output")


def grad_cam(model: keras.Model, image: np.ndarray, class_index: int | None = None,
             layer_name: str | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): feature maps weighted by their mean gradient, ReLU.

    The score explained is the class logit: when the model ends in a softmax ``Dense``, its
    pre-activation is recomputed (a confident softmax's gradient vanishes).

    Args:
        model: a functional classifier.
        image: ``(h, w, c)`` preprocessed input.
        class_index: class to explain; default the predicted one.
        layer_name: the convolutional layer to use; default the last layer with a 4-D output.

    Returns:
        ``(h, w)`` float32 heatmap in [0, 1], resized to the input size.
    """
    x = _batch(image)
    layer_name = layer_name or last_conv_layer_name(model)
    last = model.layers[-1]
    softmax_dense = isinstance(last, keras.layers.Dense) and getattr(last.activation, "__name__", "") == "softmax"
    # explain the class logit, as the paper does: a confident softmax has vanishing gradients
    head = last.input if softmax_dense else model.outputs[0]
    probe = keras.Model(model.input, [get_layer(model, layer_name).output, head])
    with tf.GradientTape() as tape:
        maps, features = probe(x, training=False)
        scores = tf.matmul(features, last.kernel) + last.bias if softmax_dense else features
        index = _class_index(np.asarray(scores), class_index)
        score = scores[:, index]
    gradients = np.asarray(tape.gradient(score, maps))[0]
    maps = np.asarray(maps)[0]
    weights = gradients.mean(axis=(0, 1))
    cam = np.maximum((maps * weights).sum(axis=-1), 0.0)
    cam = cv2.resize(cam.astype(np.float32), (x.shape[2], x.shape[1]), interpolation=cv2.INTER_LINEAR)
    return normalize01(cam)


def occlusion_sensitivity(model: keras.Model, image: np.ndarray, class_index: int | None = None,
                          patch: int = 8, stride: int | None = None, fill: float = 0.0,
                          batch_size: int = 64) -> np.ndarray:
    """Occlusion sensitivity (Zeiler and Fergus 2014): the drop of the class probability when a
    ``patch`` x ``patch`` square is covered, at every position.

    Args:
        model: a classifier.
        image: ``(h, w, c)`` preprocessed input.
        class_index: class to explain; default the predicted one.
        patch: side of the occluding square.
        stride: step between positions (default ``patch // 2``).
        fill: value painted into the square.
        batch_size: occluded images scored per call.

    Returns:
        ``(h, w)`` float32 map: the mean score drop of the squares covering each pixel.
    """
    x = _batch(image)[0]
    h, w = x.shape[:2]
    stride = stride or max(1, patch // 2)
    base = np.asarray(model(x[None], training=False))
    index = _class_index(base, class_index)
    positions = [(r, c) for r in range(0, max(h - patch, 0) + 1, stride) for c in range(0, max(w - patch, 0) + 1, stride)]
    drops = np.zeros((h, w), np.float32)
    counts = np.zeros((h, w), np.float32)
    for start in range(0, len(positions), batch_size):
        chunk = positions[start:start + batch_size]
        batch = np.repeat(x[None], len(chunk), axis=0)
        for i, (r, c) in enumerate(chunk):
            batch[i, r:r + patch, c:c + patch] = fill
        scores = np.asarray(model(batch, training=False))[:, index]
        for (r, c), score in zip(chunk, scores):
            drops[r:r + patch, c:c + patch] += base[0, index] - score
            counts[r:r + patch, c:c + patch] += 1
    return drops / np.maximum(counts, 1)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45,
                    path: str | os.PathLike | None = None) -> np.ndarray:
    """Blend a [0, 1] heatmap (jet colours) over an image.

    Args:
        image: ``uint8`` RGB or grey image, or float in [0, 1].
        heatmap: ``(h, w)`` map (resized to the image).
        alpha: weight of the heatmap.
        path: optional PNG to write.

    Returns:
        ``uint8`` RGB overlay.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (normalize01(image) * 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    heat = cv2.resize(normalize01(heatmap), (image.shape[1], image.shape[0]))
    colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = cv2.addWeighted(image, 1.0 - alpha, colour, alpha, 0.0)
    if path is not None:
        save_png(blended, path)
    return blended


# --- activation maximisation -----------------------------------------------------------------


def activation_maximization(model: keras.Model, layer_name: str | None = None, unit: int = 0,
                            steps: int = 100, learning_rate: float = 0.1, l2: float = 1e-3,
                            blur_every: int = 4, blur_sigma: float = 0.5, input_shape: Sequence[int] | None = None,
                            seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Synthesise an input that maximises one unit (a channel's mean activation, or a class score)
    by gradient ascent (Adam) with L2 decay and periodic Gaussian blur (Yosinski et al. 2015).

    When the target is a softmax/sigmoid output, its logarithm is ascended (a saturated
    probability has a vanishing gradient); the history still records the probability.

    Args:
        model: a functional model.
        layer_name: layer whose unit to maximise; default the model output (class score).
        unit: channel (conv layer: mean over positions) or output index.
        steps: gradient-ascent steps.
        learning_rate: Adam's step size.
        l2: L2 penalty on the input.
        blur_every: blur the input every this many steps (0: never).
        blur_sigma: Gaussian blur sigma in pixels.
        input_shape: ``(h, w, c)``; default the model's.
        seed: random start.

    Returns:
        ``(image, objective_history)``: the ``(h, w, c)`` float32 input and the objective per step.
    """
    shape = tuple(input_shape or model.inputs[0].shape[1:])
    if any(s is None for s in shape):
        raise ValueError(f"give input_shape: the model's input {shape} has unknown dimensions")
    target = model if layer_name is None else keras.Model(model.input, get_layer(model, layer_name).output)
    last = target.layers[-1]
    probabilities = getattr(getattr(last, "activation", None), "__name__", "") in ("softmax", "sigmoid")
    rng = np.random.default_rng(seed)
    x = tf.Variable(rng.normal(0.0, 0.1, (1,) + shape).astype(np.float32))
    optimizer = keras.optimizers.Adam(learning_rate)
    history = []
    for step in range(steps):
        with tf.GradientTape() as tape:
            out = target(x, training=False)
            objective = tf.reduce_mean(out[..., unit])
            # a probability saturates: ascend its log, whose gradient does not vanish
            ascent = tf.math.log(objective + 1e-9) if probabilities else objective
            loss = -ascent + l2 * tf.reduce_sum(tf.square(x))
        optimizer.apply_gradients([(tape.gradient(loss, x), x)])
        if blur_every and (step + 1) % blur_every == 0:
            blurred = np.stack([cv2.GaussianBlur(c, (0, 0), blur_sigma) for c in np.moveaxis(x.numpy()[0], -1, 0)], -1)
            x.assign(blurred.reshape((1,) + shape))
        history.append(float(objective))
    return x.numpy()[0], history


# --- ReLU backward rules: guided backpropagation, deconvnet, Guided Grad-CAM -----------------


@tf.custom_gradient
def _guided_relu(x):
    def backward(dy):  # Springenberg et al. 2015: pass where the input and the gradient are positive
        return dy * tf.cast(x > 0, dy.dtype) * tf.cast(dy > 0, dy.dtype)

    return tf.nn.relu(x), backward


@tf.custom_gradient
def _deconvnet_relu(x):
    def backward(dy):  # Zeiler and Fergus 2014: rectify the signal going back, whatever the input
        return tf.nn.relu(dy)

    return tf.nn.relu(x), backward


_RELU_RULES = {"guided": _guided_relu, "deconvnet": _deconvnet_relu}


def _activation_name(layer) -> str:
    return getattr(getattr(layer, "activation", None), "__name__", "")


def _with_relu_rule(model: keras.Model, rule: str) -> keras.Model:
    """A copy of ``model`` (same weights, the original untouched) whose ReLUs back-propagate by
    ``rule`` and whose final softmax is dropped, so that its outputs are the class logits."""
    last = model.layers[-1]
    while isinstance(last, keras.Model):  # a nested model's own last layer ends the network
        last = last.layers[-1]

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.ReLU) and config.get("max_value") is None \
                and not config.get("negative_slope") and not config.get("threshold"):
            return keras.layers.Activation(_RELU_RULES[rule], name=layer.name)
        copy = layer.__class__.from_config(config)
        if _activation_name(layer) == "relu":
            copy.activation = _RELU_RULES[rule]
        elif layer is last and _activation_name(layer) == "softmax":
            copy.activation = keras.activations.linear
        return copy

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _input_gradient(model: keras.Model, image: np.ndarray, class_index: int | None) -> np.ndarray:
    x = tf.convert_to_tensor(_batch(image))
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = model(x, training=False)
        score = scores[:, _class_index(np.asarray(scores), class_index)]
    return np.asarray(tape.gradient(score, x))[0]


def guided_backprop(model: keras.Model, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Guided backpropagation (Springenberg et al. 2015): the gradient of the class logit with
    respect to the input, where each ReLU passes back only positive gradients at positive inputs.

    The rule is applied on a clone of the model (``ReLU`` layers and ``activation="relu"``,
    nested models included); the model itself is not changed. Capped or leaky ReLUs (``ReLU6``,
    ``LeakyReLU``) keep their plain gradient. A final softmax is dropped (the logit is explained).

    Args:
        model: a functional classifier.
        image: ``(h, w, c)`` preprocessed input.
        class_index: class to explain; default the predicted one.

    Returns:
        ``(h, w, c)`` float32 signed gradient (show it with :func:`normalize01`).
    """
    return _input_gradient(_with_relu_rule(model, "guided"), image, class_index)


def deconvnet_saliency(model: keras.Model, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Deconvnet reconstruction (Zeiler and Fergus 2014): like :func:`guided_backprop`, but each
    ReLU passes back the rectified gradient whatever the sign of its forward input.

    Returns:
        ``(h, w, c)`` float32 signed signal at the input.
    """
    return _input_gradient(_with_relu_rule(model, "deconvnet"), image, class_index)


def guided_grad_cam(model: keras.Model, image: np.ndarray, class_index: int | None = None,
                    layer_name: str | None = None) -> np.ndarray:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the Grad-CAM map
    upsampled to the input, pixel by pixel.

    Args:
        model: a functional classifier.
        image: ``(h, w, c)`` preprocessed input.
        class_index: class to explain; default the predicted one.
        layer_name: Grad-CAM's layer (default the last layer with a 4-D output).

    Returns:
        ``(h, w, c)`` float32 map.
    """
    if class_index is None:
        class_index = int(np.argmax(np.asarray(model(_batch(image), training=False))[0]))
    cam = grad_cam(model, image, class_index, layer_name)
    return guided_backprop(model, image, class_index) * cam[..., None]


# --- DeepDream ---------------------------------------------------------------------------------


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(h, w, c)`` to ``size = (h', w')``, keeping the channel axis."""
    out = cv2.resize(np.asarray(image, np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return out.reshape(size[0], size[1], image.shape[-1])


def deep_dream(model: keras.Model, layer_names: str | Sequence[str], image: np.ndarray, octaves: int = 3,
               octave_scale: float = 1.4, steps: int = 20, step_size: float = 0.01, jitter: int = 8,
               clip: tuple[float, float] | None = None, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """DeepDream (Mordvintsev et al. 2015): gradient ascent of the input on the mean activation
    of some layers, from a coarse scale (octave) to the full size, with random jitter.

    Each step rolls the image by a random shift of up to ``jitter`` pixels, ascends the
    normalised gradient (divided by its mean absolute value) and rolls back. Between octaves the
    image is upscaled and the detail that the downscaling lost is added back.

    Args:
        model: a functional model that takes inputs of any size (``Input((None, None, c))``).
        layer_names: one layer or several (their mean activations are summed).
        image: ``(h, w, c)`` preprocessed start image.
        octaves: number of scales.
        octave_scale: size ratio between consecutive scales.
        steps: ascent steps per octave.
        step_size: step on the normalised gradient.
        jitter: largest random shift in pixels (0: none).
        clip: optional ``(low, high)`` range the image is kept in.
        seed: jitter's random generator.

    Returns:
        ``(image, objective_history)``: the dreamed ``(h, w, c)`` float32 image and the objective
        before each step (all octaves, in order).

    Raises:
        LayerNotFoundError: a layer name the model does not have.
    """
    names = [layer_names] if isinstance(layer_names, str) else list(layer_names)
    probe = keras.Model(model.input, [get_layer(model, n).output for n in names])
    rng = np.random.default_rng(seed)
    base = _batch(image)[0]
    h, w = base.shape[:2]
    sizes = [(max(1, round(h / octave_scale**i)), max(1, round(w / octave_scale**i))) for i in reversed(range(octaves))]
    dream = _resize(base, sizes[0])
    history: list[float] = []
    for i, size in enumerate(sizes):
        if i:  # upscale, then add back what shrinking the original lost at this scale
            lost = _resize(base, size) - _resize(_resize(base, sizes[i - 1]), size)
            dream = _resize(dream, size) + lost
        x = tf.Variable(dream[None])
        for _ in range(steps):
            shift = rng.integers(-jitter, jitter + 1, 2) if jitter else np.zeros(2, int)
            x.assign(tf.roll(x, shift, axis=(1, 2)))
            with tf.GradientTape() as tape:
                outputs = probe(x, training=False)
                outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
                objective = tf.add_n([tf.reduce_mean(o) for o in outputs])
            gradient = tape.gradient(objective, x)
            x.assign_add(step_size * gradient / (tf.reduce_mean(tf.abs(gradient)) + 1e-8))
            x.assign(tf.roll(x, -shift, axis=(1, 2)))
            if clip is not None:
                x.assign(tf.clip_by_value(x, clip[0], clip[1]))
            history.append(float(objective))
        dream = x.numpy()[0]
    return dream, history


# --- the images that most activate a unit, over a dataset ----------------------------------


def _receptive_field(model: keras.Model, layer_name: str) -> tuple[int, int, float, float]:
    """``(rf_h, rf_w, jump_h, jump_w)`` of a layer's output, from :func:`kerascnn.inspect.layer_table`."""
    from kerascnn.inspect import layer_table

    for row in layer_table(model).rows:
        if row.name == layer_name or row.name.endswith("/" + layer_name):
            if row.receptive_field is None:
                raise ValueError(f"layer {layer_name!r} has no spatial grid (it sees the whole input)")
            return (*row.receptive_field, *row.jump)
    raise LayerNotFoundError(f"layer {layer_name!r} is not in the layer table of model {model.name!r}")


def _crop(image: np.ndarray, centre: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """The ``size`` window of ``image`` centred on ``centre``, zero-padded where it leaves the image."""
    out = np.zeros(size + image.shape[2:], image.dtype)
    top, left = int(round(centre[0] - (size[0] - 1) / 2)), int(round(centre[1] - (size[1] - 1) / 2))
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size[0], image.shape[0]), min(left + size[1], image.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - top:r1 - top, c0 - left:c1 - left] = image[r0:r1, c0:c1]
    return out


def top_activating_patches(model: keras.Model, layer_name: str, unit: int, images, k: int = 9,
                           preprocess=None, batch_size: int = 32, path: str | os.PathLike | None = None,
                           columns: int | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """The ``k`` images of a dataset that most activate one unit (a channel of a layer), each
    cropped to the receptive field around its strongest position (Zeiler and Fergus 2014).

    The receptive field and the stride between outputs come from
    :func:`kerascnn.inspect.layer_table`; output ``(i, j)`` is taken as centred on input pixel
    ``(i * jump + (jump - 1) / 2, j * jump + (jump - 1) / 2)``, exact for ``"same"`` padding.

    Args:
        model: a functional model with a known input size.
        layer_name: the layer (4-D output).
        unit: the channel.
        images: a :class:`kerascnn.data.FolderDataset`, a folder (scanned with
            :func:`kerascnn.data.scan_folder`) or an array ``(n, h, w, c)``. Files are read with
            the model's channels and resized to its input size.
        k: how many patches.
        preprocess: function of a float32 batch in [0, 255] (files) or of the array as given,
            returning the model's input; default ``x / 255`` for files, identity for arrays.
        batch_size: images per forward pass.
        path: optional PNG of the patches as a grid (each scaled to [0, 1]).
        columns: grid columns.

    Returns:
        ``(patches, scores, where)``: ``(k, rf_h, rf_w, c)`` crops of the images as read (before
        ``preprocess``), their activations (descending) and ``(image index, row, col)`` of each
        strongest output position.

    Raises:
        LayerNotFoundError: a layer name the model does not have.
        DatasetError: an empty or missing folder.
    """
    from kerascnn.data import FolderDataset, read_image, scan_folder

    probe = keras.Model(model.input, get_layer(model, layer_name).output)
    rf_h, rf_w, jump_h, jump_w = _receptive_field(model, layer_name)
    h, w, c = model.inputs[0].shape[1:]
    rf = (min(int(rf_h), h), min(int(rf_w), w))
    if isinstance(images, (str, os.PathLike)):
        images = scan_folder(images)
    from_files = isinstance(images, FolderDataset)
    count = len(images)
    if preprocess is None:
        preprocess = (lambda batch: batch / 255.0) if from_files else (lambda batch: batch)
    best: list[tuple[float, int, int, int, np.ndarray]] = []
    for start in range(0, count, batch_size):
        if from_files:
            raw = np.stack([cv2.resize(read_image(p, channels=c), (w, h)).reshape(h, w, c)
                            for p in images.paths[start:start + batch_size]]).astype(np.float32)
        else:
            raw = np.asarray(images[start:start + batch_size], np.float32)
        maps = np.asarray(probe(preprocess(raw), training=False))[..., unit]
        for n, unit_map in enumerate(maps):
            i, j = np.unravel_index(int(np.argmax(unit_map)), unit_map.shape)
            centre = (i * jump_h + (jump_h - 1) / 2, j * jump_w + (jump_w - 1) / 2)
            best.append((float(unit_map[i, j]), start + n, int(i), int(j), _crop(raw[n], centre, rf)))
        best = sorted(best, key=lambda item: -item[0])[:k]
    patches = np.stack([item[4] for item in best])
    if path is not None:
        tiles = np.stack([normalize01(p) for p in patches])
        scale = max(1, 64 // max(rf))
        tiles = np.stack([cv2.resize(t, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST).reshape(
            rf[0] * scale, rf[1] * scale, c) for t in tiles])
        grid = tile_images(tiles, columns, pad=2)
        save_png(grid[..., 0] if c == 1 else grid, path)
    return patches, np.array([item[0] for item in best], np.float32), [item[1:4] for item in best]


# --- embeddings ------------------------------------------------------------------------------


def project_embeddings(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D projection of embeddings: ``"pca"`` (NumPy SVD) or ``"tsne"`` (needs scikit-learn).

    Returns:
        ``(n, 2)`` float32 coordinates.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be (n, d), got shape {e.shape}")
    if method == "pca":
        centred = e - e.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return (centred @ vt[:2].T).astype(np.float32)
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as exc:
            raise ImportError("t-SNE needs scikit-learn: pip install scikit-learn") from exc
        perplexity = min(30.0, max(2.0, (len(e) - 1) / 3))
        return TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(e).astype(np.float32)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def plot_embeddings(points: np.ndarray, labels: Sequence, path: str | os.PathLike, title: str = "") -> str:
    """Scatter 2-D points coloured by identity (a legend when there are few identities)."""
    plt = _pyplot()
    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6, 6))
    names = list(dict.fromkeys(labels.tolist()))
    cmap = plt.get_cmap("tab20", max(len(names), 1))
    for i, name in enumerate(names):
        mask = labels == name
        ax.scatter(points[mask, 0], points[mask, 1], s=18, color=cmap(i), label=str(name))
    if len(names) <= 20:
        ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "embeddings")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=90)
    plt.close(fig)
    return os.fspath(path)


def nearest_neighbors(probes: np.ndarray, gallery: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances of the ``k`` nearest gallery embeddings of each probe."""
    probes, gallery = np.asarray(probes, np.float32), np.asarray(gallery, np.float32)
    d2 = (probes**2).sum(1)[:, None] + (gallery**2).sum(1)[None] - 2 * probes @ gallery.T
    order = np.argsort(d2, axis=1)[:, :k]
    return order, np.sqrt(np.maximum(np.take_along_axis(d2, order, axis=1), 0))


def plot_neighbor_gallery(probe_images: np.ndarray, gallery_images: np.ndarray, indices: np.ndarray,
                          distances: np.ndarray, path: str | os.PathLike,
                          probe_labels: Sequence | None = None, gallery_labels: Sequence | None = None) -> str:
    """One row per probe: the probe, then its nearest gallery faces with their distances
    (titles in green when the identity matches, red otherwise, if labels are given)."""
    plt = _pyplot()
    rows, k = indices.shape
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.6 * (k + 1), 1.8 * rows), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(np.asarray(probe_images[r]).squeeze(), cmap="gray")
        axes[r, 0].set_title("probe", fontsize=8)
        for j in range(k):
            g = indices[r, j]
            ax = axes[r, j + 1]
            ax.imshow(np.asarray(gallery_images[g]).squeeze(), cmap="gray")
            colour = "black"
            if probe_labels is not None and gallery_labels is not None:
                colour = "green" if gallery_labels[g] == probe_labels[r] else "red"
            ax.set_title(f"{distances[r, j]:.2f}", fontsize=8, color=colour)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=80)
    plt.close(fig)
    return os.fspath(path)
