"""Training face models: from scratch, by online distillation, and by fine-tuning.

Inference (:mod:`kerascnn.face`) never imports this package. Training finds and aligns faces
with the same detectors and templates as inference, and caches the aligned faces under one
root keyed by the images' content and the alignment settings (:mod:`kerascnn.facetrain.cache`).

- :mod:`kerascnn.facetrain.data`: aligned faces of identity folders (landmarks, crops, teacher
  descriptors), cached in resumable chunks;
- :mod:`kerascnn.facetrain.trainer`: the small embedder from scratch (``kerascnn train-face``);
- :mod:`kerascnn.facetrain.distill`: online distillation (the teacher describes every view);
- :mod:`kerascnn.facetrain.finetune`: ``finetune_face_model`` (``kerascnn finetune-face``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {"finetune_face_model": "kerascnn.facetrain.finetune"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kerascnn.facetrain' has no attribute {name!r}")
