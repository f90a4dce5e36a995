"""The few custom Keras layers kerascnn needs, all registered and serializable.

Each is a ``keras.layers.Layer`` subclass registered under the ``kerascnn`` package with a
``get_config`` that returns exactly its constructor arguments, so models that use them save
and load through ``.keras`` in safe mode.
"""

from __future__ import annotations

import keras
from keras import layers, ops  # noqa: F401
