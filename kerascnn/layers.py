"""The few custom Keras layers kerascnn needs, all registered and serializable.

Each is a ``keras.layers.Layer`` subclass registered under the ``kerascnn`` package with a
``get_config`` that returns exactly its constructor arguments, so models that use them save
and load through ``.keras`` in safe mode.
"""

from __future__ import annotations

import keras
from keras import layers, ops  # noqa: F401


@keras.saving.register_keras_serializable(package="kerascnn")
class LocalResponseNormalization(layers.Layer):
    """Local response normalisation across channels (Krizhevsky et al. 2012; GoogLeNet).

    ``y_c = x_c / (bias + alpha / size * sum_{|c' - c| <= size // 2} x_{c'}^2) ** beta``: Caffe's
    ``LRN`` layer (``ACROSS_CHANNELS``), whose ``alpha`` is divided by the window size. It equals
    ``tf.nn.local_response_normalization(depth_radius=size // 2, bias=bias, alpha=alpha / size,
    beta=beta)``. Channels last; no weights.

    Args:
        size: window size across channels (odd).
        alpha: scale of the sum of squares (Caffe convention, divided by ``size``).
        beta: exponent.
        bias: additive constant (Caffe's ``k``).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LocalResponseNormalization: size must be a positive odd number, got {size}")
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

    def call(self, inputs):
        squares = ops.square(ops.cast(inputs, "float32"))
        radius = self.size // 2
        padded = ops.pad(squares, [[0, 0]] * (len(inputs.shape) - 1) + [[radius, radius]])
        channels = ops.shape(inputs)[-1]
        window = sum(padded[..., i : i + channels] for i in range(self.size))
        scale = ops.power(self.bias + (self.alpha / self.size) * window, self.beta)
        return ops.cast(ops.cast(inputs, "float32") / scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "bias": self.bias}


@keras.saving.register_keras_serializable(package="kerascnn")
class GeneralizedMeanPooling2D(layers.Layer):
    """Generalized-mean (GeM) global pooling (Radenovic, Tolias, Chum 2018).

    ``y_c = (mean_{h,w} max(x_{hwc}, epsilon) ** p) ** (1 / p)``: average pooling at ``p = 1``,
    tending to max pooling as ``p`` grows. ``p`` is learned by default. Channels last;
    ``(batch, h, w, c) -> (batch, c)``; computed in float32, returned in the compute dtype.

    Args:
        p: the initial exponent (3 in the paper).
        trainable_p: learn ``p`` with the network.
        epsilon: floor of the activations (GeM needs non-negative inputs, e.g. after ReLU).

    Raises:
        ValueError: ``p`` <= 0 or ``epsilon`` <= 0.
    """

    def __init__(self, p: float = 3.0, trainable_p: bool = True, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if p <= 0 or epsilon <= 0:
            raise ValueError(f"GeneralizedMeanPooling2D: p and epsilon must be > 0, got p={p}, epsilon={epsilon}")
        self.p, self.trainable_p, self.epsilon = float(p), bool(trainable_p), float(epsilon)

    def build(self, input_shape):
        self.p_weight = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.p), trainable=self.trainable_p,
            name="p", dtype="float32",
        )

    def call(self, inputs):
        p = ops.maximum(self.p_weight, 1e-3)
        x = ops.maximum(ops.cast(inputs, "float32"), self.epsilon)
        pooled = ops.power(ops.mean(ops.power(x, p), axis=(1, 2)), 1.0 / p)
        return ops.cast(pooled, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "p": self.p, "trainable_p": self.trainable_p, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kerascnn")
class Affine(layers.Layer):
    """A learned per-channel scale and shift, ``y = gamma * x + beta`` (channels last).

    What batch normalisation becomes at inference once its statistics are folded in: dlib's
    ``affine_`` layer, which its trained networks use in place of ``bn_con``. Two weights per
    channel (``gamma``, ``beta``); initialised to the identity.

    Args:
        gamma_initializer: initializer of the scale.
        beta_initializer: initializer of the shift.
    """

    def __init__(self, gamma_initializer="ones", beta_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_initializer = keras.initializers.get(beta_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer=self.gamma_initializer, name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer=self.beta_initializer, name="beta")

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype) + ops.cast(self.beta, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
        }


@keras.saving.register_keras_serializable(package="kerascnn")
class ZeroPadAdd(layers.Layer):
    """Sum of tensors of different sizes: each is zero-padded to the largest size, then added.

    dlib's ``add_prev`` layer: the output takes the larger of each dimension (height, width,
    channels) and every input is aligned at the top-left corner and first channel, the missing
    entries counting as zeros. With equal shapes it is ``keras.layers.Add``. It is what the
    "option A" shortcut of He et al. (2015) needs (extra channels of zeros) and what dlib's
    residual networks do when a strided convolution and the average pool of the shortcut give
    grids of different sizes (``3x3`` + ``4x4`` -> ``4x4``).
    """

    def call(self, inputs):
        shapes = [ops.shape(x) for x in inputs]
        rank = len(inputs[0].shape)
        target = [shapes[0][axis] for axis in range(rank)]
        for shape in shapes[1:]:
            # static sizes stay Python ints (JAX and PyTorch pad by concrete sizes only)
            target = [max(t, s) if isinstance(t, int) and isinstance(s, int) else ops.maximum(t, s)
                      for t, s in zip(target, shape)]
        total = None
        for x, shape in zip(inputs, shapes):
            pads = [[0, 0]] + [[0, target[axis] - shape[axis]] for axis in range(1, rank)]
            x = ops.pad(x, pads)
            total = x if total is None else total + x
        return total

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        out = []
        for dims in zip(*shapes):
            out.append(None if any(d is None for d in dims) else max(dims))
        return tuple(out)


@keras.saving.register_keras_serializable(package="kerascnn")
class WeightedConcatenation(layers.Layer):
    """Concatenate vectors, each scaled to unit length and then by ``sqrt(weight_i)``.

    With weights ``a_i >= 0`` summing to 1, the output is a unit vector, and the cosine (dot
    product) of two outputs is exactly ``sum_i a_i cos_i``: the weighted mean of the inputs'
    cosines. This is how a fused face model concatenates its members' embeddings
    (:mod:`kerascnn.face.ensemble`). The scales are a non-trainable weight, so a model's weights
    (and a gallery's model identity) cover them.

    Args:
        fusion_weights: one weight per input, ``>= 0``, not all zero; normalised to sum 1.

    Raises:
        ValueError: fewer than one weight, a negative or non-finite weight, or all zero.
    """

    def __init__(self, fusion_weights, **kwargs):
        super().__init__(**kwargs)
        import math

        values = [float(w) for w in fusion_weights]
        if not values or any(not math.isfinite(w) or w < 0 for w in values) or sum(values) <= 0:
            raise ValueError(f"WeightedConcatenation: fusion_weights must be finite, >= 0 and not all zero, "
                             f"got {list(fusion_weights)}")
        self.fusion_weights = [w / sum(values) for w in values]

    def build(self, input_shape):
        if len(input_shape) != len(self.fusion_weights):
            raise ValueError(f"WeightedConcatenation: {len(self.fusion_weights)} fusion weights for "
                             f"{len(input_shape)} inputs")
        self.scales = self.add_weight(
            shape=(len(self.fusion_weights),), name="scales", dtype="float32", trainable=False,
            initializer=keras.initializers.Constant([w ** 0.5 for w in self.fusion_weights]),
        )

    def call(self, inputs):
        parts = []
        for i, x in enumerate(inputs):
            x = ops.cast(x, "float32")
            norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))
            parts.append(x / norm * self.scales[i])
        return ops.cast(ops.concatenate(parts, axis=-1), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        dims = [s[-1] for s in input_shape]
        return (input_shape[0][0], None if None in dims else sum(dims))

    def get_config(self) -> dict:
        return {**super().get_config(), "fusion_weights": list(self.fusion_weights)}


@keras.saving.register_keras_serializable(package="kerascnn")
class PerImageStandardization(layers.Layer):
    """Each image standardised over all its pixels and channels: ``(x - mean) / max(std, 1 / sqrt(n))``.

    ``tf.image.per_image_standardization``, and FaceNet's ``prewhiten`` (David Sandberg's
    ``facenet.prewhiten``: ``n`` is the image's number of values, the standard deviation the
    population one), as a backend-neutral layer without weights. Computed in float32, returned
    in the compute dtype; any input range (FaceNet's models take 0..255).
    """

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        axes = tuple(range(1, len(inputs.shape)))
        mean = ops.mean(x, axis=axes, keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(x - mean), axis=axes, keepdims=True))
        count = ops.cast(ops.prod(ops.shape(x)[1:]), "float32")
        return ops.cast((x - mean) / ops.maximum(std, ops.rsqrt(count)), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape
