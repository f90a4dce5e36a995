"""Augmentation pipelines: named presets of Keras preprocessing layers, plus the two Keras lacks.

Everything Keras ships is used as is (``RandomFlip``, ``RandomRotation``, ``RandomZoom``,
``RandomTranslation``, ``RandomShear``, ``RandomContrast``, ``RandomBrightness``,
``RandomColorJitter``, ``RandomElasticTransform``, ``RandomErasing``, ``RandAugment`` ...). Only
two layers are written here, both registered and serializable, identity at inference like Keras':

- :class:`PCALighting`: AlexNet's colour augmentation (Krizhevsky et al. 2012, section 4.1):
  each image gets ``eigvec @ (alpha * eigval)`` added to every pixel, ``alpha ~ N(0, 0.1)``,
  with the ImageNet RGB eigen-decomposition.
- :class:`RandomGridDistortion`: local warping by a random piecewise-linear grid (the
  "grid distortion" of albumentations); Keras has elastic warping but not this.

Random cropping is ``RandomZoom`` (zoom in) + ``RandomTranslation``: it keeps the output size and
is the identity at inference (``RandomCrop`` changes the size; 10-crop evaluation is in
:mod:`kerascnn.data.tta`).

Every layer expects float images with values in ``0..255`` (what :func:`make_dataset` feeds it).
``MixUp`` and ``CutMix`` mix labels as well, so they are not part of these image-only pipelines.

Example:
    >>> from kerascnn.data import build_augmentation
    >>> aug = build_augmentation("face", image_size=(112, 112), seed=0)
    >>> own = build_augmentation(["flip", "rotation", "pca_lighting"], (112, 112), seed=0)
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
from keras import ops

from kerascnn.errors import UnknownAugmentationError

# ImageNet RGB eigenvalues / eigenvectors (columns) for pixel values in 0..1 (fb.resnet.torch)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


@keras.saving.register_keras_serializable(package="kerascnn")
class PCALighting(keras.layers.Layer):
    """AlexNet's PCA lighting noise: shift each image's colour along the RGB principal axes.

    For every image ``alpha ~ N(0, alpha_std)`` (3 values) is drawn and
    ``eigvec @ (alpha * eigval) * (high - low)`` is added to all its pixels; the result is
    clipped to ``value_range``. Identity at inference.

    Args:
        alpha_std: standard deviation of ``alpha`` (0.1 in the paper).
        eigval: the 3 eigenvalues of the RGB covariance (of 0..1 pixels).
        eigvec: 3x3 matrix whose columns are the eigenvectors.
        value_range: ``(low, high)`` of the input values.
        seed: random seed.
    """

    def __init__(
        self,
        alpha_std: float = 0.1,
        eigval: Sequence[float] = IMAGENET_EIGVAL,
        eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC,
        value_range: tuple[float, float] = (0, 255),
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if alpha_std < 0:
            raise ValueError(f"alpha_std must be >= 0, got {alpha_std}")
        self.alpha_std = float(alpha_std)
        self.eigval = [float(v) for v in eigval]
        self.eigvec = [[float(v) for v in row] for row in eigvec]
        if len(self.eigval) != 3 or len(self.eigvec) != 3 or any(len(r) != 3 for r in self.eigvec):
            raise ValueError(f"expected 3 eigenvalues and a 3x3 eigvec, got {eigval} and {eigvec}")
        self.value_range = tuple(float(v) for v in value_range)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or self.alpha_std == 0:
            return images
        images = ops.cast(images, self.compute_dtype)
        batched = len(images.shape) == 4
        if not batched:
            images = ops.expand_dims(images, 0)
        low, high = self.value_range
        alpha = keras.random.normal((ops.shape(images)[0], 3), stddev=self.alpha_std, seed=self.generator)
        eigvec = ops.convert_to_tensor(self.eigvec, dtype=self.compute_dtype)
        eigval = ops.convert_to_tensor(self.eigval, dtype=self.compute_dtype)
        shift = ops.matmul(ops.cast(alpha, self.compute_dtype) * eigval, ops.transpose(eigvec)) * (high - low)
        out = ops.clip(images + shift[:, None, None, :], low, high)
        return out if batched else out[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(alpha_std=self.alpha_std, eigval=self.eigval, eigvec=self.eigvec,
                      value_range=list(self.value_range), seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="kerascnn")
class RandomGridDistortion(keras.layers.Layer):
    """Local warping by a random grid: each of ``num_steps`` bands of rows (and of columns) is
    stretched or squeezed by a factor in ``[1 - distort_limit, 1 + distort_limit]``.

    The mapping of each axis is piecewise linear and monotone from ``0`` to ``size - 1``, so the
    image is warped locally without leaving its frame (no fill); pixels are resampled
    bilinearly. Identity at inference and with ``distort_limit=0``.

    Args:
        num_steps: number of grid cells along each axis.
        distort_limit: maximum relative stretch of a cell (0 to 1).
        seed: random seed.
    """

    def __init__(self, num_steps: int = 5, distort_limit: float = 0.3, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not 0 <= distort_limit < 1:
            raise ValueError(f"distort_limit must be in [0, 1), got {distort_limit}")
        self.num_steps = int(num_steps)
        self.distort_limit = float(distort_limit)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def _source_coords(self, batch, length):
        """(batch, length) input coordinate of every output coordinate along one axis."""
        steps = self.num_steps
        factors = keras.random.uniform(
            (batch, steps), 1 - self.distort_limit, 1 + self.distort_limit, seed=self.generator
        )
        cum = ops.cumsum(factors, axis=1)
        knots = ops.concatenate([ops.zeros_like(cum[:, :1]), cum / cum[:, -1:]], axis=1) * (length - 1)
        t = ops.arange(length, dtype="float32") * (steps / max(length - 1, 1))
        k = ops.clip(ops.floor(t), 0, steps - 1)
        frac = t - k
        k = ops.cast(k, "int32")
        return ops.take(knots, k, axis=1) * (1 - frac) + ops.take(knots, k + 1, axis=1) * frac

    @staticmethod
    def _resample(images, coords, axis):
        """Linear interpolation of ``images`` (b, h, w, c) at ``coords`` (b, n) along ``axis``."""
        size = images.shape[axis]
        lo = ops.clip(ops.floor(coords), 0, size - 1)
        weight = coords - lo
        lo = ops.cast(lo, "int32")
        hi = ops.minimum(lo + 1, size - 1)
        shape = (-1, coords.shape[1], 1, 1) if axis == 1 else (-1, 1, coords.shape[1], 1)
        full = ops.shape(images)

        def gather(idx):
            return ops.take_along_axis(images, ops.broadcast_to(ops.reshape(idx, shape), full), axis=axis)

        weight = ops.cast(ops.reshape(weight, shape), images.dtype)
        return gather(lo) * (1 - weight) + gather(hi) * weight

    def call(self, images, training=None):
        if not training or self.distort_limit == 0:
            return images
        images = ops.cast(images, self.compute_dtype)
        batched = len(images.shape) == 4
        if not batched:
            images = ops.expand_dims(images, 0)
        batch = ops.shape(images)[0]
        rows = self._source_coords(batch, images.shape[1])
        cols = self._source_coords(batch, images.shape[2])
        out = self._resample(self._resample(images, rows, axis=1), cols, axis=2)
        return out if batched else out[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_steps=self.num_steps, distort_limit=self.distort_limit, seed=self.seed)
        return config


# name -> builder(image_size, seed) -> layer; the vocabulary of build_augmentation's lists
AUGMENTATION_LAYERS: dict[str, Callable[[tuple[int, int], int | None], keras.layers.Layer]] = {
    "flip": lambda size, seed: keras.layers.RandomFlip("horizontal", seed=seed),
    "flip_vertical": lambda size, seed: keras.layers.RandomFlip("vertical", seed=seed),
    "rotation": lambda size, seed: keras.layers.RandomRotation(0.05, seed=seed),
    "zoom": lambda size, seed: keras.layers.RandomZoom((-0.2, 0.0), seed=seed),
    "translation": lambda size, seed: keras.layers.RandomTranslation(0.1, 0.1, seed=seed),
    "crop": lambda size, seed: keras.Sequential(
        [keras.layers.RandomZoom((-0.25, 0.0), seed=seed),
         keras.layers.RandomTranslation(0.1, 0.1, seed=None if seed is None else seed + 1)],
        name="random_crop"),
    "shear": lambda size, seed: keras.layers.RandomShear(0.1, 0.1, seed=seed),
    "contrast": lambda size, seed: keras.layers.RandomContrast(0.2, seed=seed),
    "brightness": lambda size, seed: keras.layers.RandomBrightness(0.2, seed=seed),
    "color_jitter": lambda size, seed: keras.layers.RandomColorJitter(
        brightness_factor=0.2, contrast_factor=0.2, saturation_factor=(0.3, 0.7), hue_factor=0.05, seed=seed),
    "grayscale": lambda size, seed: keras.layers.RandomGrayscale(0.1, seed=seed),
    "blur": lambda size, seed: keras.layers.RandomGaussianBlur(0.5, kernel_size=3, sigma=1.0, seed=seed),
    "erasing": lambda size, seed: keras.layers.RandomErasing(0.5, scale=(0.02, 0.2), seed=seed),
    "elastic": lambda size, seed: keras.layers.RandomElasticTransform(0.5, scale=0.5, seed=seed),
    "grid_distortion": lambda size, seed: RandomGridDistortion(5, 0.3, seed=seed),
    "pca_lighting": lambda size, seed: PCALighting(0.1, seed=seed),
    "randaugment": lambda size, seed: keras.layers.RandAugment(num_ops=2, factor=0.5, seed=seed),
}

# preset name -> the layer names it stacks
_PRESET_LAYERS = {
    "none": [],
    "light": ["flip", "translation"],
    "standard": ["flip", "crop", "rotation", "contrast", "brightness", "pca_lighting"],
    "heavy": ["flip", "crop", "rotation", "shear", "grid_distortion", "color_jitter", "pca_lighting", "erasing"],
    "randaugment": ["flip", "crop", "randaugment"],
}


def _face(size: tuple[int, int], seed: int | None) -> keras.Sequential:
    """Mild, face-preserving: mirror, +-10 degrees, 5% shift and zoom, brightness/contrast."""
    s = _seeds(seed, 6)
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=s[0]),
            keras.layers.RandomRotation(10 / 360, seed=s[1]),
            keras.layers.RandomTranslation(0.05, 0.05, seed=s[2]),
            keras.layers.RandomZoom(0.05, seed=s[3]),
            keras.layers.RandomBrightness(0.1, seed=s[4]),
            keras.layers.RandomContrast(0.1, seed=s[5]),
        ],
        name="augment_face",
    )


def _seeds(seed: int | None, n: int) -> list[int | None]:
    """Distinct seeds for the layers of one pipeline (same seed everywhere would correlate them)."""
    return [None] * n if seed is None else [seed + 1000 * i for i in range(n)]


def _preset(name: str) -> Callable[[tuple[int, int], int | None], keras.Sequential]:
    def builder(image_size, seed=None):
        return build_augmentation(_PRESET_LAYERS[name], image_size, seed, name=f"augment_{name}")

    builder.__doc__ = f"The {name!r} preset: {', '.join(_PRESET_LAYERS[name]) or 'identity'}."
    return builder


AUGMENTATION_PRESETS: dict[str, Callable[[tuple[int, int], int | None], keras.Sequential]] = {
    **{name: _preset(name) for name in _PRESET_LAYERS},
    "face": _face,
}


def build_augmentation(
    spec: str | Sequence[str | keras.layers.Layer] | keras.layers.Layer,
    image_size: int | tuple[int, int],
    seed: int | None = None,
    name: str | None = None,
) -> keras.layers.Layer:
    """An augmentation pipeline as a ``keras.Sequential`` of preprocessing layers.

    Use it in ``tf.data`` (``ds.map(lambda x, y: (aug(x, training=True), y))``, or
    ``make_dataset(augment=...)``) or as the first layers of a model (active in ``fit`` only).
    The same ``seed`` gives the same sequence of transformations.

    Args:
        spec: a preset name of ``AUGMENTATION_PRESETS``; a list whose items are names of
            ``AUGMENTATION_LAYERS`` or Keras layers (one's own pipeline); or a layer (returned
            unchanged).
        image_size: ``(height, width)`` (or one int) of the images it will see.
        seed: base seed; layer ``i`` of a list gets ``seed + 1000 * i``.
        name: name of the Sequential (default ``augment_<preset>`` or ``augment``).

    Returns:
        A ``keras.Sequential`` (the identity for ``"none"`` or an empty list).

    Raises:
        UnknownAugmentationError: an unknown preset or layer name (the message lists the names).
        ValueError: an item that is neither a name nor a Keras layer.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if isinstance(spec, keras.layers.Layer):
        return spec
    if isinstance(spec, str):
        if spec not in AUGMENTATION_PRESETS:
            raise UnknownAugmentationError(
                f"unknown augmentation preset {spec!r}; expected one of {', '.join(AUGMENTATION_PRESETS)}"
            )
        return AUGMENTATION_PRESETS[spec](size, seed)
    layers = []
    for item, item_seed in zip(spec, _seeds(seed, len(spec))):
        if isinstance(item, keras.layers.Layer):
            layers.append(item)
        elif isinstance(item, str):
            if item not in AUGMENTATION_LAYERS:
                raise UnknownAugmentationError(
                    f"unknown augmentation layer {item!r}; expected a Keras layer or one of "
                    f"{', '.join(AUGMENTATION_LAYERS)}"
                )
            layers.append(AUGMENTATION_LAYERS[item](size, item_seed))
        else:
            raise ValueError(f"augmentation items must be layer names or Keras layers, got {item!r}")
    if not layers:
        layers = [keras.layers.Identity()]
    return keras.Sequential(layers, name=name or "augment")

