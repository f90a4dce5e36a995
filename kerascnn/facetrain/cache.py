"""Where training caches aligned faces, and the key that says when a cache entry is still valid.

Both face-training paths cache detection and alignment: the from-scratch trainer
(:mod:`kerascnn.facetrain.data`: landmarks, margin canvases and teacher descriptors, in
resumable chunks) and fine-tuning (:mod:`kerascnn.facetrain.finetune`: the crops
:class:`~kerascnn.face.pipeline.FacePipeline` cuts at inference). Both live under one root and
are keyed by :func:`content_key`: the bytes of every image and the settings that change a crop
(detector, alignment template, sizes), so renaming or moving a folder keeps its cache and
editing one image or one setting never reuses a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$KERASCNN_CACHE``, else ``~/.cache/kerascnn``.

    Args:
        cache_dir: an explicit folder, or ``None``.

    Returns:
        The folder (not created).
    """
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("KERASCNN_CACHE") or Path.home() / ".cache" / "kerascnn")


def content_key(paths: Sequence[str | os.PathLike], settings: dict[str, Any]) -> str:
    """A short key over the images' bytes (in order) and the settings that shape their crops.

    Args:
        paths: the image files.
        settings: JSON-serialisable settings (detector, template, sizes, teacher...).

    Returns:
        16 hexadecimal characters.
    """
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def detector_tag(detector: Any) -> str:
    """What identifies a detector in a cache key: a model file's sha256, else its name or repr.

    Args:
        detector: a path to a detector model, a name (``"haar"``, ``"yunet"``), a detector, or ``None``.

    Returns:
        A string that changes when the detector does.
    """
    from kerascnn.face.detect import DETECTOR_MODEL_ENV, SHIPPED_YUNET

    path = getattr(detector, "model_path", detector)
    if path is None or str(path).lower() == "yunet":
        path = os.environ.get(DETECTOR_MODEL_ENV) or SHIPPED_YUNET
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
        with open(path, "rb") as f:
            return f"{Path(path).name}:{hashlib.file_digest(f, 'sha256').hexdigest()[:16]}"
    return path if isinstance(path, str) else repr(path)
