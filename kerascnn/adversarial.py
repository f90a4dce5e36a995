"""Adversarial examples against any classifier: FGSM and iterative FGSM / PGD.

- FGSM (Goodfellow, Shlens and Szegedy 2015): one step of size epsilon along the sign of the
  loss gradient with respect to the input.
- Iterative FGSM (Kurakin et al. 2017) and PGD (Madry et al. 2018): several signed steps, each
  followed by a projection onto the L-infinity ball of radius epsilon around the image and onto
  the valid pixel range; PGD starts from a random point of the ball.

Adversarial training through plain ``model.fit`` is :class:`kerascnn.training.AdversarialModel`.

Example:
    >>> from kerascnn import adversarial
    >>> x_adv = adversarial.pgd(model, images, labels, epsilon=8 / 255)
    >>> adversarial.robust_accuracy(model, images, labels, epsilons=[0, 0.05, 0.1])
    {0: 0.97, 0.05: 0.41, 0.1: 0.08}
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerascnn.errors import EpsilonError
from kerascnn.losses import default_loss


def check_budget(epsilon: float, value_range: tuple[float, float], name: str = "epsilon") -> float:
    """Validate an L-infinity budget against the image's value range.

    Returns:
        ``epsilon`` as a float.

    Raises:
        EpsilonError: the range is empty, or ``epsilon`` is negative, not finite, or wider than
            the range (such a budget can turn any image into any other).
    """
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise EpsilonError(f"value_range must be (low, high) with low < high, got {tuple(value_range)}")
    epsilon = float(epsilon)
    if not math.isfinite(epsilon) or epsilon < 0 or epsilon > high - low:
        raise EpsilonError(
            f"{name} must lie in [0, {high - low:g}] (the width of the image's value range "
            f"{(low, high)}), got {epsilon:g}"
        )
    return epsilon


def _loss(model: keras.Model, loss: Callable | None) -> Callable:
    if loss is not None:
        return loss
    return default_loss(model)


def perturb(model: keras.Model, images, labels, epsilon: float, steps: int = 1, step_size: float | None = None,
            value_range: tuple[float, float] = (0.0, 1.0), random_start: bool = False,
            loss: Callable | None = None, seed: int | None = None) -> tf.Tensor:
    """The attack itself, on tensors (usable inside a traced ``train_step``).

    Args:
        model: the classifier (called with ``training=False``).
        images: a batch of inputs in ``value_range``.
        labels: their integer labels (or whatever ``loss`` takes as ``y_true``).
        epsilon: L-infinity radius.
        steps: signed-gradient steps (1 with ``step_size=epsilon``: FGSM).
        step_size: size of each step; default ``epsilon`` for one step, else ``2.5 * epsilon / steps``.
        value_range: valid pixel values; every iterate is clipped to it.
        random_start: start from a uniform random point of the ball (PGD).
        loss: ``loss(y_true, y_pred)`` to ascend; default sparse categorical cross-entropy (on
            logits unless the model ends with a softmax).
        seed: the random start's seed.

    Returns:
        The adversarial batch (no gradient flows through it).
    """
    epsilon = check_budget(epsilon, value_range)
    step_size = check_budget(step_size if step_size is not None else (epsilon if steps == 1 else 2.5 * epsilon / steps),
                             value_range, "step_size")
    loss = _loss(model, loss)
    low, high = (float(v) for v in value_range)
    x0 = tf.convert_to_tensor(images, tf.float32)
    x = x0
    if random_start:
        x = tf.clip_by_value(x0 + tf.random.uniform(tf.shape(x0), -epsilon, epsilon, seed=seed), low, high)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(labels, model(x, training=False))
        x = x + step_size * tf.sign(tape.gradient(value, x))
        x = tf.clip_by_value(tf.clip_by_value(x, x0 - epsilon, x0 + epsilon), low, high)
    return tf.stop_gradient(x)


def _batched(model, images, labels, batch_size: int, **kwargs) -> np.ndarray:
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    return np.concatenate([
        np.asarray(perturb(model, images[i:i + batch_size], labels[i:i + batch_size], **kwargs))
        for i in range(0, len(images), batch_size)
    ]) if len(images) else images


def fgsm(model: keras.Model, images: np.ndarray, labels: np.ndarray, epsilon: float,
         value_range: tuple[float, float] = (0.0, 1.0), loss: Callable | None = None,
         batch_size: int = 256) -> np.ndarray:
    """Fast gradient sign method: ``clip(x + epsilon * sign(grad_x loss), value_range)``.

    Args:
        model: the classifier.
        images: ``(n, h, w, c)`` inputs in ``value_range``.
        labels: ``(n,)`` integer labels (the true classes, whose loss is ascended).
        epsilon: L-infinity budget, in ``[0, high - low]``.
        value_range: valid pixel values.
        loss: see :func:`perturb`.
        batch_size: images per gradient computation.

    Returns:
        ``(n, h, w, c)`` float32 adversarial images.

    Raises:
        EpsilonError: an epsilon outside the image's value range.
    """
    return _batched(model, images, labels, batch_size, epsilon=epsilon, steps=1, value_range=value_range, loss=loss)


def pgd(model: keras.Model, images: np.ndarray, labels: np.ndarray, epsilon: float, steps: int = 10,
        step_size: float | None = None, random_start: bool = True, value_range: tuple[float, float] = (0.0, 1.0),
        loss: Callable | None = None, batch_size: int = 256, seed: int | None = None) -> np.ndarray:
    """Projected gradient descent (Madry et al. 2018); with ``random_start=False``, iterative
    FGSM (Kurakin et al. 2017).

    Args:
        model: the classifier.
        images: ``(n, h, w, c)`` inputs in ``value_range``.
        labels: ``(n,)`` integer labels.
        epsilon: L-infinity budget, in ``[0, high - low]``.
        steps: signed-gradient steps, each projected onto the epsilon ball and the value range.
        step_size: step length; default ``2.5 * epsilon / steps``.
        random_start: start from a random point of the ball.
        value_range: valid pixel values.
        loss: see :func:`perturb`.
        batch_size: images per gradient computation.
        seed: the random start's seed.

    Returns:
        ``(n, h, w, c)`` float32 adversarial images.

    Raises:
        EpsilonError: an epsilon or step size outside the image's value range.
    """
    return _batched(model, images, labels, batch_size, epsilon=epsilon, steps=steps, step_size=step_size,
                    value_range=value_range, random_start=random_start, loss=loss, seed=seed)


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of a classifier on a batch of images."""
    predictions = np.asarray(model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0))
    return float(np.mean(predictions.argmax(axis=-1) == np.asarray(labels)))


def robust_accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray, epsilons: Sequence[float],
                    attack: str = "fgsm", value_range: tuple[float, float] = (0.0, 1.0),
                    **attack_kwargs) -> dict[float, float]:
    """Accuracy on clean images (epsilon 0) and under attack at each epsilon.

    Args:
        model: the classifier.
        images: ``(n, h, w, c)`` inputs in ``value_range``.
        labels: ``(n,)`` integer labels.
        epsilons: budgets to try (0 means the clean images).
        attack: ``"fgsm"`` or ``"pgd"``.
        value_range: valid pixel values.
        **attack_kwargs: more arguments of :func:`fgsm` or :func:`pgd`.

    Returns:
        ``{epsilon: accuracy}``.

    Raises:
        EpsilonError: an epsilon outside the image's value range.
        ValueError: an unknown attack.
    """
    attacks = {"fgsm": fgsm, "pgd": pgd}
    if attack not in attacks:
        raise ValueError(f"attack must be one of {sorted(attacks)}, got {attack!r}")
    for epsilon in epsilons:
        check_budget(epsilon, value_range)
    return {
        epsilon: accuracy(model, images if epsilon == 0 else
                          attacks[attack](model, images, labels, epsilon, value_range=value_range, **attack_kwargs), labels)
        for epsilon in epsilons
    }
