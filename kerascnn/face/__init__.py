"""Face detection, alignment, embedding, the enrollment gallery and verification decisions.

Names load on first use (``kerascnn.face.FacePipeline`` imports TensorFlow only when touched):

- :mod:`kerascnn.face.detect`: ``Detection``, ``HaarDetector``, ``YuNetDetector``,
  ``get_detector``, ``select_faces``, ``align_detection``
- :mod:`kerascnn.face.pipeline`: ``FacePipeline`` (images -> ``FaceBatch`` of embeddings)
- :mod:`kerascnn.face.verify`: ``verify`` (1:1), ``identify`` (1:N), ``calibrate``,
  ``calibrate_open_set`` and ``open_set_threshold`` (1:N operating points)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Detection": "kerascnn.face.detect",
    "HaarDetector": "kerascnn.face.detect",
    "YuNetDetector": "kerascnn.face.detect",
    "get_detector": "kerascnn.face.detect",
    "select_faces": "kerascnn.face.detect",
    "align_detection": "kerascnn.face.detect",
    "FacePipeline": "kerascnn.face.pipeline",
    "FaceBatch": "kerascnn.face.pipeline",
    "FaceResult": "kerascnn.face.pipeline",
    "verify": "kerascnn.face.verify",
    "identify": "kerascnn.face.verify",
    "calibrate": "kerascnn.face.verify",
    "calibrate_open_set": "kerascnn.face.verify",
    "open_set_threshold": "kerascnn.face.verify",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kerascnn.face' has no attribute {name!r}")
