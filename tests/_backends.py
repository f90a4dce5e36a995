"""Gradients on whichever backend Keras runs (TensorFlow, JAX, PyTorch), for backend-neutral tests."""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np


def value_and_input_grad(fn: Callable, x: np.ndarray) -> tuple[float, np.ndarray]:
    """``(fn(x), d fn / d x)`` of a scalar function of one array.

    Args:
        fn: backend tensor -> scalar tensor (built from ``keras.ops``).
        x: the point, a float32 array.

    Returns:
        The value as a float and the gradient as an array shaped like ``x``.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, grad = jax.value_and_grad(fn)(jax.numpy.asarray(x))
        return float(value), np.asarray(grad)
    if backend == "torch":
        import torch

        t = torch.tensor(x, requires_grad=True, device=keras.ops.convert_to_tensor(x).device)
        value = fn(t)
        value.backward()
        return float(value), t.grad.cpu().numpy()
    import tensorflow as tf

    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        value = fn(v)
    return float(value), tape.gradient(value, v).numpy()


def weight_gradients(model: keras.Model, x: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
    """Gradients of ``sum(model(x, training=False) * weights)`` with respect to the trainable weights.

    Args:
        model: the model.
        x: one input batch.
        weights: an array shaped like the model's output.

    Returns:
        One array per ``model.trainable_weights`` (zeros where the gradient is undefined).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            y, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return jax.numpy.sum(y * weights)

        return [np.asarray(g) for g in jax.grad(loss)([v.value for v in model.trainable_variables])]
    if backend == "torch":
        import torch

        loss = torch.sum(model(x, training=False) * keras.ops.convert_to_tensor(weights))
        loss.backward()
        return [np.zeros(v.shape) if v.value.grad is None else v.value.grad.cpu().numpy()
                for v in model.trainable_variables]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=False) * weights)
    return [np.zeros(w.shape) if g is None else keras.ops.convert_to_numpy(g)
            for w, g in zip(model.trainable_weights, tape.gradient(loss, model.trainable_weights))]
