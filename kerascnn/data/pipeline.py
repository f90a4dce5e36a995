"""``tf.data`` input pipelines: decode, resize, cache, shuffle, batch, augment, normalise, prefetch.

The order follows the ``tf.data`` performance guide: files are decoded and resized in parallel,
the decoded ``uint8`` images are cached (optional), shuffled and batched, and augmentation runs
on whole batches (one vectorised call per batch, mapped with ``AUTOTUNE``) before the
per-family normalisation; ``prefetch`` lets CPU threads prepare the next batches while the model
trains on the current one.

Decoding goes through :func:`kerascnn.data.folders.read_image` (OpenCV, in a
``tf.numpy_function``) for every format: it reads PGM (which ``tf.io`` cannot), applies the pixel
cap, and its errors name the file. ``scripts/bench_pipeline.py`` compares it with ``tf.io``.

Bad files (a documented choice): before building the pipeline every file's signature (and, for
JPEG and PNG, its end marker, which a truncated file lacks) is checked. By default
(``on_error="raise"``) the first bad file raises :class:`~kerascnn.errors.ImageReadError` naming
it; with ``on_error="skip"`` each bad file is dropped with a ``UserWarning`` naming it. A file
that passes this check but still fails to decode (damage inside the data) is dropped with a
warning naming it under ``"skip"``; under ``"raise"`` iteration stops with a ``tf.errors``
exception whose message carries the ``ImageReadError`` text and the path.

Example:
    >>> from kerascnn.data import scan_folder, make_dataset
    >>> ds = make_dataset(scan_folder("../shared/data/orl"), image_size=64, batch_size=32,
    ...                   shuffle=True, seed=0, augment="face", preprocessing="tf", cache=True)
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from kerascnn.backends import require_tensorflow
from kerascnn.data.folders import FolderDataset, read_image, scan_folder
from kerascnn.errors import DatasetError, ImageReadError

AUTOTUNE = tf.data.AUTOTUNE
PREPROCESSING_MODES = ("caffe", "torch", "tf", "none")

# (magic bytes at offset 0, format name); WebP is RIFF....WEBP, checked apart
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"P1", "PBM"), (b"P2", "PGM"), (b"P3", "PPM"), (b"P4", "PBM"), (b"P5", "PGM"), (b"P6", "PPM"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)
_TAIL = 4096  # bytes read at the end of a file to find its end marker


def check_image_file(path: str | os.PathLike) -> str | None:
    """Cheap check of an image file, without decoding it.

    Reads the signature and, for JPEG and PNG, looks for the end marker (``FFD9``, ``IEND``) in
    the last 4 KiB, which a truncated file lacks.

    Args:
        path: the file.

    Returns:
        ``None`` if the file looks like a complete image, else the reason it does not.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "the file is empty"
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
    except OSError as exc:
        return exc.strerror or str(exc)
    kind = next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    if kind is None:
        return f"not an image (unknown file signature {head[:8]!r})"
    if kind == "JPEG" and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if kind == "PNG" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def _filter_bad_files(paths: list[str], labels: np.ndarray | None, on_error: str):
    keep = []
    with ThreadPoolExecutor(max_workers=8) as pool:  # I/O bound: a few threads hide the latency
        reasons = list(pool.map(check_image_file, paths, chunksize=64))
    for i, (path, reason) in enumerate(zip(paths, reasons)):
        if reason is None:
            keep.append(i)
        elif on_error == "raise":
            raise ImageReadError(f"cannot read image {path}: {reason} (use on_error='skip' to drop such files)")
        else:
            warnings.warn(f"skipping image {path}: {reason}", UserWarning, stacklevel=3)
    if len(keep) == len(paths):
        return paths, labels
    return [paths[i] for i in keep], (labels[keep] if labels is not None else None)


def decode_image(path: tf.Tensor | str, channels: int = 3) -> tf.Tensor:
    """Decode an image file inside a ``tf.function`` or ``tf.data`` map.

    Any format :func:`~kerascnn.data.folders.read_image` reads (JPEG, PNG, PGM, BMP, WebP,
    TIFF); grey images become 3 channels when ``channels=3``.

    Args:
        path: scalar string tensor (or str), the file.
        channels: 3 (RGB) or 1 (grey).

    Returns:
        ``uint8`` tensor ``(height, width, channels)``.

    Raises:
        ValueError: ``channels`` is not 1 or 3.
        tf.errors.OpError: at run time, for a file that cannot be decoded; the message carries
            the :class:`~kerascnn.errors.ImageReadError` text, which names the file.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    image = tf.numpy_function(lambda p: read_image(_path_str(p), channels=channels), [path], tf.uint8)
    image.set_shape([None, None, channels])
    return image


def _path_str(path: bytes | np.ndarray) -> str:
    """The path a ``tf.numpy_function`` receives (bytes, or a 0-d array eagerly) as a str."""
    return os.fsdecode(np.asarray(path).item())


def _decode_or_skip(path: bytes, channels: int) -> tuple[np.ndarray, bool]:
    try:
        return read_image(_path_str(path), channels=channels), True
    except ImageReadError as exc:
        warnings.warn(f"skipping image: {exc}", UserWarning)
        return np.zeros((1, 1, channels), np.uint8), False


def preprocess(images: Any, mode: str) -> tf.Tensor:
    """Normalise ``0..255`` RGB images for a model family.

    The modes of ``keras.applications.imagenet_utils.preprocess_input`` (which does the work):
    ``"caffe"`` (RGB to BGR, ImageNet mean subtracted), ``"torch"`` (0-1 then ImageNet mean/std),
    ``"tf"`` (-1 to 1); ``"none"`` returns the float32 values unchanged. For 1-channel (grey)
    images ``caffe`` and ``torch`` use the mean of the three channel statistics.

    Args:
        images: ``(..., h, w, channels)`` tensor or array, values 0-255.
        mode: one of ``PREPROCESSING_MODES`` (``ModelInfo.preprocessing`` gives each registry
            model's mode).

    Returns:
        ``float32`` tensor of the same shape.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing mode must be one of {PREPROCESSING_MODES}, got {mode!r}")
    from keras.applications import imagenet_utils

    images = tf.cast(images, tf.float32)
    if mode == "none":
        return images
    if images.shape[-1] == 1:
        grey = tf.concat([images] * 3, axis=-1)
        out = imagenet_utils.preprocess_input(grey, data_format="channels_last", mode=mode)
        return tf.reduce_mean(out, axis=-1, keepdims=True)
    return imagenet_utils.preprocess_input(images, data_format="channels_last", mode=mode)


def resolve_preprocessing(preprocessing: str | None) -> str:
    """A preprocessing mode, given a mode or a registry model name (``"resnet50"`` -> ``"caffe"``).

    Raises:
        UnknownModelError: neither a mode nor a registered model name.
    """
    if preprocessing is None:
        return "none"
    if preprocessing in PREPROCESSING_MODES:
        return preprocessing
    from kerascnn.models.registry import model_info

    return model_info(preprocessing).preprocessing


def _as_paths_labels(source, labels) -> tuple[list[str], np.ndarray | None]:
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        source = scan_folder(source)
    if isinstance(source, FolderDataset):
        if labels is not None:
            raise ValueError("labels must be None when the source is a FolderDataset (it has its own)")
        return list(source.paths), np.asarray(source.labels, np.int32)
    if isinstance(source, (str, os.PathLike)):
        raise DatasetError(f"dataset folder {source} does not exist or is not a folder")
    paths = [os.fspath(p) for p in source]
    if not paths:
        raise DatasetError("make_dataset got an empty list of image paths (expected at least one file)")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(paths),):
            raise DatasetError(f"expected one label per path ({len(paths)}), got labels of shape {labels.shape}")
        labels = labels.astype(np.int32)
    return paths, labels


def _image_size(image_size) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be an int or (height, width) of positive ints, got {image_size!r}")
    return int(size[0]), int(size[1])


def make_dataset(
    source: FolderDataset | str | os.PathLike | Sequence[str],
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    image_size: int | tuple[int, int] = 224,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int | None = None,
    augment: Any = None,
    preprocessing: str | None = "none",
    cache: bool | str = False,
    num_parallel_calls: int = AUTOTUNE,
    drop_remainder: bool = False,
    channels: int = 3,
    on_error: str = "raise",
    shuffle_buffer: int = 2048,
    deterministic_augment: bool = False,
    check_files: bool = True,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of images (and labels) read from files.

    Pipeline: decode + resize (parallel) -> cache of ``uint8`` images (optional) -> shuffle ->
    batch -> augment the batch (parallel) -> preprocess -> prefetch.

    Args:
        source: a :class:`FolderDataset`, a dataset folder (``<class>/<image>``), or a list of
            image paths.
        labels: with a list of paths, one integer label per path; ``None`` gives images only.
        image_size: output ``(height, width)`` (or one int for square images); images are
            resized (bilinear, antialiased) without keeping the aspect ratio.
        batch_size: images per batch.
        shuffle: shuffle the files (a fixed permutation from ``seed``, then a
            ``shuffle_buffer``-element shuffle that changes every epoch).
        seed: seed of the shuffle and of the augmentation built from a preset or a list.
        augment: ``None``, a preset name of ``AUGMENTATION_PRESETS``, a list of layer names or
            layers (see :func:`kerascnn.data.augment.build_augmentation`), or any Keras layer /
            callable applied to a float32 ``0..255`` batch in training mode.
        preprocessing: a mode of ``PREPROCESSING_MODES`` or a registry model name whose mode is
            used (``"resnet50"``); ``"none"`` leaves float32 ``0..255`` values.
        cache: ``True`` caches the decoded, resized ``uint8`` images in memory, a string caches
            them in that file; ``False`` decodes every epoch.
        num_parallel_calls: parallel calls of the decode and augmentation maps.
        drop_remainder: drop the last incomplete batch.
        channels: 3 (RGB; grey images are repeated) or 1 (grey).
        on_error: ``"raise"`` or ``"skip"`` for unreadable files (see the module docstring).
        shuffle_buffer: size of the per-epoch shuffle buffer (capped at the dataset size).
        deterministic_augment: run the augmentation map on one thread so that the augmented
            stream is reproducible from ``seed`` (Keras' random layers draw from a shared seed
            state, whose order parallel calls make nondeterministic). Slower.
        check_files: check every file's signature and end marker first (about 0.3 ms a file),
            so that bad files are reported (or skipped) by path before training starts.

    Returns:
        A ``tf.data.Dataset`` of ``(images float32 (b, h, w, channels), labels int32 (b,))``, or
        of images only when there are no labels.

    Raises:
        DatasetError: an empty folder, a class folder without images, an empty path list, or
            labels that do not match the paths.
        ImageReadError: a missing, empty, truncated or non-image file (``on_error="raise"``).
        ValueError: a bad ``on_error``, ``channels``, ``image_size`` or ``preprocessing`` mode.
        UnknownModelError: ``preprocessing`` is neither a mode nor a registry model.
    """
    require_tensorflow("kerascnn.data.make_dataset")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    size = _image_size(image_size)
    mode = resolve_preprocessing(preprocessing)
    paths, labels = _as_paths_labels(source, labels)
    if check_files:
        paths, labels = _filter_bad_files(paths, labels, on_error)
    if not paths:
        raise DatasetError("every image file was unreadable and skipped: nothing left to read")
    if shuffle:  # a fixed global permutation, so that the shuffle buffer need not hold everything
        order = np.random.default_rng(seed).permutation(len(paths))
        paths = [paths[i] for i in order]
        labels = labels[order] if labels is not None else None

    ds = tf.data.Dataset.from_tensor_slices(paths)
    if labels is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(labels))
    else:
        ds = ds.map(lambda p: (p,))
    ds = _decode_stage(ds, size, channels, on_error, num_parallel_calls)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if shuffle:
        ds = ds.shuffle(min(shuffle_buffer, len(paths)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    layer = _augmentation_layer(augment, size, seed)

    def finish(images, *rest):
        images = tf.cast(images, tf.float32)
        if layer is not None:
            images = layer(images, training=True)
        images = preprocess(images, mode)
        return (images, *rest) if rest else images

    ds = ds.map(finish, num_parallel_calls=1 if (deterministic_augment and layer is not None) else num_parallel_calls)
    return ds.prefetch(AUTOTUNE)


def _decode_stage(ds: tf.data.Dataset, size: tuple[int, int], channels: int, on_error: str, parallel: int):
    def resize(image):
        image = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    if on_error == "raise":
        return ds.map(lambda p, *rest: (resize(decode_image(p, channels)), *rest), num_parallel_calls=parallel)

    def decode(p, *rest):
        image, ok = tf.numpy_function(lambda s: _decode_or_skip(s, channels), [p], (tf.uint8, tf.bool))
        image.set_shape([None, None, channels])
        ok.set_shape([])
        return (resize(image), *rest, ok)

    def is_ok(*element):
        return element[-1]

    def drop_flag(*element):
        return element[:-1]

    return ds.map(decode, num_parallel_calls=parallel).filter(is_ok).map(drop_flag)


def _augmentation_layer(augment: Any, size: tuple[int, int], seed: int | None):
    if augment is None:
        return None
    if isinstance(augment, (str, list, tuple)):
        from kerascnn.data.augment import build_augmentation

        return build_augmentation(augment, size, seed)
    if not callable(augment):
        raise ValueError(f"augment must be None, a preset name, a list of layers or a layer, got {augment!r}")
    return augment
