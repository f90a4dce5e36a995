"""Folder datasets in the ``identity/image`` layout, and a safe image reader.

A folder dataset is a root folder with one sub-folder per class (per person for faces), each
holding that class's images: ``../shared/data/lfw/images/<Name>/<Name>_0001.jpg``,
``../shared/data/orl/s1/1.pgm``, or any folder of a user's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kerascnn.errors import DatasetError, ImageReadError, ImageTooLargeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".tif", ".tiff")
MAX_PIXELS = 40_000_000  # about 40 megapixels: larger files are refused (decompression bombs)


def read_image(path: str | os.PathLike, channels: int = 3, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as a ``uint8`` array in RGB order.

    Grey images become 3 channels when ``channels=3``; 4-channel images lose their alpha.

    Args:
        path: image file (JPEG, PNG, PGM, BMP, WebP, TIFF).
        channels: 3 for ``(h, w, 3)`` RGB, 1 for ``(h, w, 1)`` grey.
        max_pixels: refuse images with more pixels than this, before decoding them.

    Returns:
        ``uint8`` array ``(height, width, channels)``.

    Raises:
        ImageReadError: the file is missing, empty, truncated or not an image (names the file).
        ImageTooLargeError: the image has more than ``max_pixels`` pixels.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = os.fspath(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
    if data.size == 0:
        raise ImageReadError(f"cannot read image file {path}: the file is empty")
    header = _image_size_from_header(data)
    if header is not None and header[0] * header[1] > max_pixels:
        raise ImageTooLargeError(
            f"image {path} is {header[1]}x{header[0]} pixels, above the cap of {max_pixels:,} pixels"
        )
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(f"cannot decode {path}: not an image, or a truncated/corrupt file")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageTooLargeError(
            f"image {path} is {image.shape[1]}x{image.shape[0]} pixels, above the cap of "
            f"{max_pixels:,} pixels"
        )
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF
        image = (image / (np.iinfo(image.dtype).max / 255.0)).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 1 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.ascontiguousarray(image)


def _image_size_from_header(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding, or None if unknown."""
    b = data[:65536].tobytes()
    if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24:
        return int.from_bytes(b[20:24], "big"), int.from_bytes(b[16:20], "big")
    if b[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(b):
            if b[i] != 0xFF:
                i += 1
                continue
            marker = b[i + 1]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                return int.from_bytes(b[i + 5:i + 7], "big"), int.from_bytes(b[i + 7:i + 9], "big")
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
    return None


@dataclass
class FolderDataset:
    """The files and labels of an ``identity/image`` folder.

    Attributes:
        root: the folder.
        paths: image paths, sorted by class then file name.
        labels: ``int32`` class index of each path.
        class_names: sorted class (folder) names; ``labels`` index into it.
    """

    root: Path
    paths: list[str]
    labels: np.ndarray
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, int]:
        """Number of images of each class."""
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return dict(zip(self.class_names, counts.tolist()))

    def subset(self, indices) -> "FolderDataset":
        """The images at ``indices``, keeping every class name (labels unchanged)."""
        indices = np.asarray(indices, dtype=np.int64)
        return FolderDataset(self.root, [self.paths[i] for i in indices], self.labels[indices], list(self.class_names))


def scan_folder(
    root: str | os.PathLike,
    min_images_per_class: int = 1,
    classes: list[str] | None = None,
    skip_empty_classes: bool = False,
) -> FolderDataset:
    """List the images of an ``identity/image`` folder.

    Args:
        root: the folder with one sub-folder per class.
        min_images_per_class: drop classes with fewer images than this.
        classes: only these class names (in this order); default all, sorted.
        skip_empty_classes: drop class folders with no image instead of raising.

    Returns:
        A :class:`FolderDataset`.

    Raises:
        DatasetError: the folder is missing, has no class folder, a class folder has no image
            (unless ``skip_empty_classes``), or nothing is left after filtering.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder")
    names = classes if classes is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise DatasetError(f"dataset folder {root} has no class sub-folders (expected {root}/<class>/<image>)")
    kept, paths, labels = [], [], []
    for name in names:
        folder = root / name
        if not folder.is_dir():
            raise DatasetError(f"class folder {folder} does not exist")
        files = sorted(
            str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            if skip_empty_classes or min_images_per_class > 1:
                continue
            raise DatasetError(
                f"class folder {folder} has no images (expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
            )
        if len(files) < min_images_per_class:
            continue
        label = len(kept)
        kept.append(name)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise DatasetError(
            f"no class of {root} has at least {min_images_per_class} images"
        )
    return FolderDataset(root, paths, np.asarray(labels, dtype=np.int32), kept)
