"""Face detection, alignment, embedding, the enrollment gallery and verification decisions.

The short way in (:mod:`kerascnn.face.faces`)::

    from kerascnn import face
    face.compare("a.jpg", "b.jpg").match            # same person? (threshold from the calibration)
    faces = face.open("faces.db")                   # a gallery of people (SQLite or PostgreSQL)
    faces.enroll("alice", ["alice1.jpg", "alice2.jpg"])
    faces.identify("probe.jpg").name                # who? None for a stranger

Names load on first use (``kerascnn.face.FacePipeline`` imports TensorFlow only when touched):

- :mod:`kerascnn.face.faces`: ``compare``, ``open`` and ``Faces`` (pipeline + gallery, thread-safe)

- :mod:`kerascnn.face.detect`: ``Detection``, ``HaarDetector``, ``YuNetDetector``,
  ``get_detector``, ``select_faces``, ``align_detection``
- :mod:`kerascnn.face.pipeline`: ``FacePipeline`` (images -> ``FaceBatch`` of embeddings)
- :mod:`kerascnn.face.decision`: ``verify`` (1:1), ``identify`` (1:N), ``calibrate``,
  ``calibrate_open_set`` and ``open_set_threshold`` (1:N operating points)

Modules without lazy exports: :mod:`kerascnn.face.calibrations` (which threshold a decision uses),
:mod:`kerascnn.face.evaluate` (the pipeline measured and calibrated on pairs files and identity
folders), :mod:`kerascnn.face.ensemble` (fused models: several embedders, each with its own
alignment, as one) and :mod:`kerascnn.face.demo` (the ORL enroll-and-decide demo).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "compare": "kerascnn.face.faces",
    "open": "kerascnn.face.faces",
    "Faces": "kerascnn.face.faces",
    "Detection": "kerascnn.face.detect",
    "HaarDetector": "kerascnn.face.detect",
    "YuNetDetector": "kerascnn.face.detect",
    "get_detector": "kerascnn.face.detect",
    "select_faces": "kerascnn.face.detect",
    "align_detection": "kerascnn.face.detect",
    "FacePipeline": "kerascnn.face.pipeline",
    "FaceBatch": "kerascnn.face.pipeline",
    "FaceResult": "kerascnn.face.pipeline",
    "verify": "kerascnn.face.decision",
    "identify": "kerascnn.face.decision",
    "calibrate": "kerascnn.face.decision",
    "calibrate_open_set": "kerascnn.face.decision",
    "open_set_threshold": "kerascnn.face.decision",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kerascnn.face' has no attribute {name!r}")
