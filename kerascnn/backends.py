"""Which Keras backend runs, and the one check for the parts that need TensorFlow.

Blocks, layers, the model zoo, losses, Siamese towers and evaluation use ``keras.ops`` only
and run on TensorFlow, JAX and PyTorch. ``tf.data`` pipelines (:mod:`kerascnn.data`),
distribution strategies (:func:`kerascnn.training.get_strategy`) and the face pipeline's
compiled embedding need TensorFlow: they call :func:`require_tensorflow` first, so another
backend gets one clear :class:`~kerascnn.errors.BackendError` instead of a failure deep inside.
"""

from __future__ import annotations

from kerascnn.errors import BackendError


def require_tensorflow(feature: str) -> None:
    """Raise unless Keras runs on TensorFlow.

    Args:
        feature: what needs TensorFlow, for the message (``"kerascnn.data.make_dataset"``).

    Raises:
        BackendError: Keras runs on another backend; the message names ``feature`` and it.
    """
    import keras  # here: importing kerascnn modules stays cheap

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise BackendError(
            f"{feature} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process runs {backend}"
        )
