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
