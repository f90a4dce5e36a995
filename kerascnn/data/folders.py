"""Folder datasets in the ``identity/image`` layout, and a safe image reader.

A folder dataset is a root folder with one sub-folder per class (per person for faces), each
holding that class's images: ``../shared/data/lfw/images/<Name>/<Name>_0001.jpg``,
``../shared/data/orl/s1/1.pgm``, or any folder of a user's.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kerascnn.errors import DatasetError, ImageReadError, ImageTooLargeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".tif", ".tiff")
MAX_PIXELS = 40_000_000  # about 40 megapixels: larger files are refused (decompression bombs)


def read_image(path: str | os.PathLike, channels: int = 3, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as a ``uint8`` array in RGB order, upright.

    Only regular files are read (a directory, FIFO or device such as ``/dev/zero`` is refused before
    any byte is read). The width and height are read from the file's header (a PNG/JPEG scan of
    the first 64 KiB, then Pillow's lazy open, no decoding) and the image is refused when they exceed ``max_pixels`` or cannot be determined,
    so a decompression bomb of any accepted format never reaches the decoder. The EXIF orientation
    tag is applied (a phone photo stored sideways comes out upright). Grey images become 3 channels
    when ``channels=3``; 4-channel images lose their alpha; 16-bit images are scaled to 8 bits.

    Args:
        path: image file (JPEG, PNG, PGM, BMP, WebP, TIFF).
        channels: 3 for ``(h, w, 3)`` RGB, 1 for ``(h, w, 1)`` grey.
        max_pixels: refuse images with more pixels than this, before decoding them.

    Returns:
        ``uint8`` array ``(height, width, channels)``.

    Raises:
        ImageReadError: the file is missing, not a regular file, empty, truncated, not an image,
            or of dimensions that cannot be read from its header (names the file).
        ImageTooLargeError: the image has more than ``max_pixels`` pixels.
    """
    path = os.fspath(path)
    with _open_regular_file(path) as f:
        return _decode_checked(f, path, channels, max_pixels)


def read_image_bytes(data: bytes, name: str = "the image", channels: int = 3,
                     max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file's bytes held in memory (an upload), with :func:`read_image`'s checks.

    Args:
        data: the encoded file (JPEG, PNG, PGM, BMP, WebP, TIFF).
        name: how messages name the image (an upload's file name).
        channels: 3 for ``(h, w, 3)`` RGB, 1 for ``(h, w, 1)`` grey.
        max_pixels: refuse images with more pixels than this, before decoding them.

    Returns:
        ``uint8`` array ``(height, width, channels)``.

    Raises:
        ImageReadError: empty, truncated, not an image, or of dimensions that cannot be read.
        ImageTooLargeError: the image has more than ``max_pixels`` pixels.
    """
    if not data:
        raise ImageReadError(f"cannot read image {name}: it is empty")
    return _decode_checked(io.BytesIO(data), name, channels, max_pixels)


def _decode_checked(f, path: str, channels: int, max_pixels: int) -> np.ndarray:
    """The image in the open binary file ``f`` (named ``path`` in messages), its size checked
    from its header before it is decoded (see :func:`read_image`)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    quick = _image_size_from_header(np.frombuffer(f.read(65536), dtype=np.uint8))  # PNG/JPEG, even truncated
    f.seek(0)
    height, width = quick if quick is not None else (0, 0)
    if width * height <= max_pixels:
        width, height = _header_size(f, path)
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image {path} is {width}x{height} pixels, above the cap of {max_pixels:,} pixels"
        )
    f.seek(0)
    data = np.frombuffer(f.read(), dtype=np.uint8)
    # not IMREAD_UNCHANGED: that flag ignores the EXIF orientation; these keep 16 bits and grey
    image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise ImageReadError(f"cannot decode {path}: not an image, or a truncated/corrupt file")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageTooLargeError(
            f"image {path} is {image.shape[1]}x{image.shape[0]} pixels, above the cap of "
            f"{max_pixels:,} pixels"
        )
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF: scaled and rounded in one pass, no float copy
        image = cv2.convertScaleAbs(image, alpha=255.0 / np.iinfo(image.dtype).max)
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


def _open_regular_file(path: str):
    """``path`` opened for reading in binary; ImageReadError unless it is a non-empty regular file.

    Opened without blocking and checked on the open descriptor, so a FIFO or a device is refused
    at once (and a file swapped after a check cannot slip through).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        reason = "it is a directory" if isinstance(exc, IsADirectoryError) else exc.strerror or str(exc)
        raise ImageReadError(f"cannot read image file {path}: {reason}") from exc
    try:
        mode = os.fstat(fd)
        if stat.S_ISDIR(mode.st_mode):
            raise ImageReadError(f"cannot read image file {path}: it is a directory")
        if not stat.S_ISREG(mode.st_mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode.st_mode) else
                    "a device" if stat.S_ISCHR(mode.st_mode) or stat.S_ISBLK(mode.st_mode) else
                    "a socket" if stat.S_ISSOCK(mode.st_mode) else "a special file")
            raise ImageReadError(f"cannot read image file {path}: it is {kind}, not a regular file")
        if mode.st_size == 0:
            raise ImageReadError(f"cannot read image file {path}: the file is empty")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _header_size(f, path: str) -> tuple[int, int]:
    """(width, height) from the header of the open image file ``f``, without decoding its pixels.

    Pillow's lazy open reads only the header of every format :func:`read_image` accepts.

    Raises:
        ImageReadError: the dimensions cannot be determined (not an image, or an unknown format).
        ImageTooLargeError: Pillow's own decompression-bomb guard fired on the header.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap is ours
            with Image.open(f) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image {path} is too large: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(
            f"cannot decode {path}: not an image of a supported format (its dimensions cannot be read from its header)"
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageReadError(
            f"cannot decode {path}: its dimensions cannot be read from its header (truncated or corrupt: {exc})"
        ) from exc
    if width <= 0 or height <= 0:
        raise ImageReadError(f"cannot read image {path}: its header gives {width}x{height} pixels")
    return int(width), int(height)


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
