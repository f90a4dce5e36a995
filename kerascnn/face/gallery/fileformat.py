"""The portable export file of a gallery: JSON or NPZ, never pickle.

``.json``: one JSON object (the header, and per template its name, embedding as a list of floats,
source hash, creation time). ``.npz``: arrays ``names``, ``embeddings`` (float32), ``sources``,
``created``, ``identity_created`` and a JSON string ``metadata`` (the header). Every store writes and
reads the same file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from kerascnn.errors import GalleryCorruptError, GalleryInputError, GalleryNotFoundError

EXPORT_FORMAT = "kerascnn-gallery"
EXPORT_VERSION = 1
EXTENSIONS = (".json", ".npz")


def check_extension(path: Path) -> str:
    """The lower-case extension of an export file; GalleryInputError unless .json or .npz."""
    kind = path.suffix.lower()
    if kind not in EXTENSIONS:
        raise GalleryInputError(f"export file {path} must end in .json or .npz, got {kind or 'no extension'!r}")
    return kind


def write_export(path: Path, header: dict, records: list[dict]) -> None:
    """Write ``header`` and template ``records`` to ``path``, atomically and owner-only (0600).

    Args:
        path: a ``.json`` or ``.npz`` file.
        header: ``format``, ``version``, ``model_identity``, ``embedding_dim``, ``created``,
            ``empty_identities``.
        records: per template ``name``, ``identity_created``, ``embedding`` (float32),
            ``source`` (hex sha256 or None), ``created``.
    """
    kind = check_extension(path)
    if path.is_dir():
        raise GalleryInputError(f"cannot export to {path}: it is a directory; give a file name ending in {kind}")
    with _atomic_file(path) as tmp:
        if kind == ".json":
            data = dict(header, templates=[{**r, "embedding": r["embedding"].tolist()} for r in records])
            tmp.write_text(json.dumps(data, indent=1))
        else:
            dim = header["embedding_dim"] or 0
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    metadata=np.array(json.dumps(header)),
                    names=np.array([r["name"] for r in records], dtype=str),
                    identity_created=np.array([r["identity_created"] for r in records], dtype=str),
                    embeddings=np.array([r["embedding"] for r in records], np.float32).reshape(-1, dim),
                    sources=np.array([r["source"] or "" for r in records], dtype=str),
                    created=np.array([r["created"] for r in records], dtype=str),
                )


def read_export(path: Path) -> tuple[dict, list[dict]]:
    """(header, template records) of a JSON or NPZ export; GalleryCorruptError when it is not one."""
    if not path.is_file():
        raise GalleryNotFoundError(f"gallery export {path} does not exist")
    kind = path.suffix.lower()
    try:
        if kind == ".json":
            header = json.loads(path.read_text())
            records = header.pop("templates")
        elif kind == ".npz":
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["metadata"]))
                columns = {key: data[key] for key in ("names", "identity_created", "embeddings", "sources", "created")}
            records = [
                {"name": str(n), "identity_created": str(ic), "embedding": e, "source": str(s), "created": str(c)}
                for n, ic, e, s, c in zip(columns["names"], columns["identity_created"], columns["embeddings"],
                                          columns["sources"], columns["created"])
            ]
        else:
            raise GalleryInputError(f"gallery export {path} must end in .json or .npz")
        if header.get("format") != EXPORT_FORMAT or header.get("version") != EXPORT_VERSION:
            raise KeyError("format")
        for record in records:
            for key in ("name", "identity_created", "embedding", "created"):
                record[key]  # noqa: B018 (presence check)
    except GalleryInputError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OSError, EOFError) as exc:
        raise GalleryCorruptError(
            f"{path} is not a kerascnn gallery export ({EXPORT_FORMAT} version {EXPORT_VERSION} JSON or NPZ): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return header, records


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[Path]:
    """A temporary owner-only file beside ``path``, moved onto it when the block succeeds."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
