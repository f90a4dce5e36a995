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
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from kerascnn.errors import GalleryCorruptError, GalleryInputError, GalleryNotFoundError

EXPORT_FORMAT = "kerascnn-gallery"
EXPORT_VERSION = 1
EXTENSIONS = (".json", ".npz")
MAX_IMPORT_BYTES = 1 << 30  # an NPZ file, and the arrays it expands to, at most 1 GiB
MAX_JSON_BYTES = 64 << 20  # JSON parses into Python floats (~30 bytes each): larger galleries travel as NPZ
MAX_TEMPLATES = 1_000_000
MAX_EMBEDDING_DIM = 4096
NPZ_MEMBERS = ("metadata", "names", "identity_created", "embeddings", "sources", "created")


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
    """(header, template records) of a JSON or NPZ export, checked before anything large is loaded.

    The file size is capped (:data:`MAX_IMPORT_BYTES`, :data:`MAX_JSON_BYTES`); an NPZ's member
    shapes and dtypes are read from their ``.npy`` headers and refused above
    :data:`MAX_TEMPLATES` templates, :data:`MAX_EMBEDDING_DIM` values each, or
    :data:`MAX_IMPORT_BYTES` in all, before any array is read. Every column must have one entry per
    template and every embedding ``embedding_dim`` numbers; the header must name a model identity
    when the file holds templates. One failed check refuses the whole file.

    Raises:
        GalleryNotFoundError: ``path`` is not a file.
        GalleryCorruptError: it is not a kerascnn gallery export, or an inconsistent one (names the file).
        GalleryInputError: it is over a cap, or its extension is neither ``.json`` nor ``.npz``.
    """
    if not path.is_file():
        raise GalleryNotFoundError(f"gallery export {path} does not exist or is not a file")
    kind = path.suffix.lower()
    size = path.stat().st_size
    cap = MAX_JSON_BYTES if kind == ".json" else MAX_IMPORT_BYTES
    if size > cap:
        raise GalleryInputError(f"gallery export {path} is {size:,} bytes, above the import cap of {cap:,} bytes"
                                + (" for JSON: export the gallery as .npz instead" if kind == ".json" else ""))
    try:
        if kind == ".json":
            header = json.loads(path.read_text())
            records = header.pop("templates")
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise TypeError("'templates' must be a list of objects")
        elif kind == ".npz":
            _check_npz_members(path)
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["metadata"]))
                columns = {key: data[key] for key in NPZ_MEMBERS[1:]}
            records = [
                {"name": str(n), "identity_created": str(ic), "embedding": e, "source": str(s), "created": str(c)}
                for n, ic, e, s, c in zip(columns["names"], columns["identity_created"], columns["embeddings"],
                                          columns["sources"], columns["created"])
            ]
        else:
            raise GalleryInputError(f"gallery export {path} must end in .json or .npz")
        if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT \
                or header.get("version") != EXPORT_VERSION:
            raise KeyError("format")
        for record in records:
            for key in ("name", "identity_created", "embedding", "created"):
                record[key]  # noqa: B018 (presence check)
    except (GalleryInputError, GalleryCorruptError):
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise GalleryCorruptError(
            f"{path} is not a kerascnn gallery export ({EXPORT_FORMAT} version {EXPORT_VERSION} JSON or NPZ): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    _check_consistent(path, header, records)
    return header, records


def _check_npz_members(path: Path) -> None:
    """Refuse an NPZ whose members (read from their ``.npy`` headers only) are not an export's or too large."""
    from numpy.lib import format as npy

    shapes = {}
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        names = sorted(m.filename for m in members)
        if names != sorted(f"{key}.npy" for key in NPZ_MEMBERS):
            raise KeyError(f"members {names[:10]}, expected {', '.join(f'{k}.npy' for k in NPZ_MEMBERS)}")
        total = 0
        for member in members:
            with archive.open(member) as f:
                version = npy.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = npy.read_array_header_1_0(f)
                elif version in ((2, 0), (3, 0)):
                    shape, _, dtype = npy.read_array_header_2_0(f)
                else:
                    raise ValueError(f"{member.filename}: unknown .npy version {version}")
            if dtype.hasobject:
                raise ValueError(f"{member.filename} holds Python objects (pickle), which are never loaded")
            total += max(member.file_size, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
            shapes[member.filename[:-4]] = shape
    if total > MAX_IMPORT_BYTES:
        raise GalleryInputError(f"gallery export {path} expands to {total:,} bytes, above the import cap of "
                                f"{MAX_IMPORT_BYTES:,} bytes")
    embeddings = shapes["embeddings"]
    if len(embeddings) != 2:
        raise GalleryCorruptError(f"{path}: embeddings must be a 2-d array, got shape {embeddings}")
    _check_caps(path, *embeddings)
    for key in NPZ_MEMBERS[1:]:
        if key != "embeddings" and shapes[key] != embeddings[:1]:
            raise GalleryCorruptError(f"{path}: {key} has shape {shapes[key]}, expected ({embeddings[0]},): one "
                                      f"per template of embeddings {embeddings}; nothing imported")
    if shapes["metadata"] != ():
        raise GalleryCorruptError(f"{path}: metadata must be one JSON string, got shape {shapes['metadata']}")


def _check_caps(path: Path, count: int, dim: int) -> None:
    if count > MAX_TEMPLATES:
        raise GalleryInputError(f"gallery export {path} holds {count:,} templates, above the import cap of "
                                f"{MAX_TEMPLATES:,}")
    if dim > MAX_EMBEDDING_DIM:
        raise GalleryInputError(f"gallery export {path} has {dim:,}-d templates, above the cap of "
                                f"{MAX_EMBEDDING_DIM:,} values")


def _check_consistent(path: Path, header: dict, records: list[dict]) -> None:
    """Refuse a header without a model identity (when there are templates) or templates of the wrong length."""
    dim = header.get("embedding_dim")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise GalleryCorruptError(f"{path}: embedding_dim must be a positive integer, got {dim!r:.50}")
    if not records:
        return
    if header.get("model_identity") is None:
        raise GalleryCorruptError(f"{path} names no model identity: its templates cannot be checked against "
                                  "this gallery's model; nothing imported")
    if dim is None:
        raise GalleryCorruptError(f"{path} holds templates but no embedding_dim; nothing imported")
    _check_caps(path, len(records), dim)
    for i, record in enumerate(records):
        embedding = record["embedding"]
        if isinstance(embedding, np.ndarray):
            ok = embedding.shape == (dim,) and embedding.dtype.kind == "f"
        else:
            ok = (isinstance(embedding, list) and len(embedding) == dim
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in embedding))
        if not ok:
            raise GalleryCorruptError(f"{path}: template {i} of {record.get('name')!r:.60} is not {dim} numbers "
                                      f"(embedding_dim); nothing imported")


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
