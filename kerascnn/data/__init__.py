"""Datasets, tf.data pipelines, augmentation, P x K batches and test-time augmentation.

Folder and LFW readers load at once (they need only NumPy and OpenCV); the TensorFlow parts
(pipelines, augmentation, P x K batches, test-time augmentation) load on first use, so that
``from kerascnn.data import scan_folder`` stays light (the gallery uses it in processes that
never touch TensorFlow).
"""

from __future__ import annotations

import importlib

from kerascnn.data.folders import FolderDataset, read_image, scan_folder  # noqa: F401
from kerascnn.data.lfw import PairList, read_pairs, read_people  # noqa: F401
from kerascnn.data.splits import identity_split, stratified_split  # noqa: F401

_LAZY = {
    "pipeline": ("PREPROCESSING_MODES", "check_image_file", "decode_image", "make_dataset", "preprocess"),
    "augment": (
        "AUGMENTATION_LAYERS", "AUGMENTATION_PRESETS", "IMAGENET_EIGVAL", "IMAGENET_EIGVEC",
        "PCALighting", "RandomGridDistortion", "build_augmentation",
    ),
    "tta": ("ensemble_model", "ensemble_predict", "flip_predict", "ten_crop_predict", "ten_crops"),
    "pk": ("PKSampler", "pk_batches", "pk_batches_from_arrays"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"kerascnn.data.{_WHERE[name]}"), name)
    if name in _LAZY:
        return importlib.import_module(f"kerascnn.data.{name}")
    raise AttributeError(f"module 'kerascnn.data' has no attribute {name!r}")


__all__ = sorted(
    ["FolderDataset", "read_image", "scan_folder", "PairList", "read_pairs", "read_people",
     "identity_split", "stratified_split", *_WHERE]
)
