"""The enrollment gallery: enrolled people's face templates in one SQLite file, kept safe.

A gallery is one SQLite file (WAL journal, transactions, a busy timeout) created with owner-only
permissions (0600). It holds:

- ``metadata``: format version, the embedding model's identity (:func:`model_identity`: name,
  input size, embedding dim, a sha256 fingerprint of its weights), creation time and a change
  counter bumped by every write;
- ``identities``: one row per enrolled person (unique name, creation time);
- ``templates``: the embeddings (``float32`` little-endian BLOBs, never pickled), each with its
  identity, the sha256 of its source image and its creation time.

Names are data, never SQL: every query is parameterized. Each operation is one transaction, so a
process killed mid-way leaves every committed identity intact, and several processes can enroll
into the same gallery at once (writers wait up to ``timeout`` seconds for each other).

Search holds all templates in one in-memory matrix (reloaded when the change counter moves, for
example after another process enrolled someone) and answers a batch of queries with one matrix
product: the score of an identity is the best cosine similarity among its templates. An optional
approximate index (faiss, the ``ann`` extra) answers through the same API.

This module imports neither TensorFlow nor Keras: it works on plain arrays, and takes a model or
a face pipeline only where it embeds images.

Example:
    >>> from kerascnn.face.gallery import Gallery, model_identity
    >>> with Gallery("faces.db", model_identity(model)) as gallery:   # doctest: +SKIP
    ...     gallery.enroll("alice", embeddings)                          # (n, d) float32
    ...     names, scores = gallery.search(probes, k=3)                  # (m, 3), (m, 3)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from kerascnn.errors import (
    GalleryCorruptError,
    GalleryError,
    GalleryInputError,
    GalleryLockedError,
    GalleryModelMismatchError,
    GalleryNotFoundError,
    EmptyGalleryError,
    UnknownIdentityError,
)

FORMAT_VERSION = 1
EXPORT_FORMAT = "kerascnn-gallery"
MAX_NAME_LENGTH = 256
IDENTITY_FIELDS = ("name", "input_size", "embedding_dim", "weights_sha256")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = {"metadata", "identities", "templates"}
_SCHEMA = """
CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id),
    embedding BLOB NOT NULL,
    source_sha256 TEXT,
    created TEXT NOT NULL
);
CREATE UNIQUE INDEX templates_source ON templates(identity_id, source_sha256);
"""
_SEARCH_CHUNK = 1 << 25  # at most this many query x template scores in memory at once


# --- model identity --------------------------------------------------------------------------
def model_identity(model: Any) -> dict:
    """The identity of an embedding model, as a gallery stores it.

    Args:
        model: a Keras model taking images ``(batch, h, w, c)`` and returning ``(batch, d)``
            embeddings.

    Returns:
        ``{"name", "input_size": [h, w, c], "embedding_dim": d, "weights_sha256"}``; the
        fingerprint is the sha256 of every weight's bytes, in the model's weight order.
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        value = weight.numpy() if hasattr(weight, "numpy") else weight
        digest.update(np.ascontiguousarray(value).tobytes())
    input_shape = model.inputs[0].shape if getattr(model, "inputs", None) else model.input_shape
    return {
        "name": str(model.name),
        "input_size": [None if s is None else int(s) for s in tuple(input_shape)[1:]],
        "embedding_dim": int(model.outputs[0].shape[-1]),
        "weights_sha256": digest.hexdigest(),
    }


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (the source image hash stored with each template)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentityInfo:
    """One enrolled identity: its name, number of templates and creation time (ISO 8601, UTC)."""

    name: str
    templates: int
    created: str

    def to_dict(self) -> dict:
        return {"name": self.name, "templates": self.templates, "created": self.created}


@dataclass
class EnrollReport:
    """What an enrollment did.

    Attributes:
        enrolled: templates added per identity name.
        skipped: images whose source hash was already enrolled for that identity.
        failures: ``(image path, error message)`` of images that gave no embedding.
    """

    enrolled: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def templates(self) -> int:
        return sum(self.enrolled.values())

    def to_dict(self) -> dict:
        return {
            "enrolled": dict(self.enrolled),
            "templates": self.templates,
            "skipped": self.skipped,
            "failures": [{"path": p, "error": e} for p, e in self.failures],
        }


# --- the gallery -----------------------------------------------------------------------------
class Gallery:
    """Enrolled identities and their face templates, in one SQLite file.

    Args:
        path: the gallery file.
        model_identity: the :func:`model_identity` of the embedding model in use. Stored when
            the gallery is created (or at its first enrollment if it had none); an existing
            gallery enrolled with another model refuses enroll, search and import. ``None``
            skips the check (listing, renaming, removing need no model).
        create: create the file if it does not exist (else :class:`GalleryNotFoundError`).
        timeout: seconds a writer waits for another process's write lock.
        read_only: open read-only (also chosen when the file is not writable).
        index: ``"exact"`` (one matrix product) or ``"faiss"`` (approximate, inverted lists over
            the unit templates; needs ``pip install faiss-cpu``).
        nprobe: inverted lists visited per query by the faiss index (more: slower, better recall).

    Raises:
        GalleryNotFoundError: the file is missing and ``create`` is false.
        GalleryCorruptError: the file is not a SQLite database, or one of another schema.
        GalleryLockedError: another process holds the lock beyond ``timeout``.
        GalleryModelMismatchError: ``model_identity`` differs from the gallery's.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        model_identity: dict | None = None,
        create: bool = True,
        timeout: float = 10.0,
        read_only: bool = False,
        index: str = "exact",
        nprobe: int = 16,
    ) -> None:
        if index not in ("exact", "faiss"):
            raise ValueError(f"index must be 'exact' or 'faiss', got {index!r}")
        self.path = Path(path)
        self.timeout = float(timeout)
        self.index = index
        self.nprobe = int(nprobe)
        self._model = _check_identity_dict(model_identity) if model_identity is not None else None
        self._cache: _SearchCache | None = None
        self._conn: sqlite3.Connection | None = None
        if create and not read_only:
            self._create_file()
        if not self.path.exists():
            raise GalleryNotFoundError(f"gallery {self.path} does not exist")
        if self.path.is_dir():
            raise GalleryCorruptError(f"gallery {self.path} is a folder, expected a gallery file")
        mode = self.path.stat().st_mode
        self.read_only = read_only or not os.access(self.path, os.W_OK) or not mode & stat.S_IWUSR
        _check_magic(self.path)
        try:
            self._connect()
            self._init_schema(create)
            if self._model is not None:
                self._check_model(self._model)
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------------------------
    def _create_file(self) -> bool:
        """Create an empty owner-only file (0600) if none exists; True if this call made it."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        except FileNotFoundError as exc:
            raise GalleryNotFoundError(f"cannot create gallery {self.path}: its folder does not exist") from exc
        os.close(fd)
        os.chmod(self.path, 0o600)  # whatever the umask
        return True

    def _connect(self) -> None:
        if self.read_only:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        else:
            self._conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        with self._sqlite_errors():
            self._conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def _init_schema(self, create: bool) -> None:
        """Check the schema of an existing gallery, or write it into an empty database.

        Nothing is written to a file before it is known to be a gallery or an empty database.
        """
        with self._sqlite_errors():
            tables = self._tables()
            if not self.read_only and (_TABLES <= tables or (not tables and create)):
                mode = self._retry_busy(lambda: self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
                if mode.lower() != "wal":
                    raise GalleryLockedError(f"gallery {self.path}: cannot switch to the WAL journal (got {mode})")
                self._conn.execute("PRAGMA synchronous = NORMAL")
            if not tables and create and not self.read_only:
                with self._transaction(bump=False) as conn:
                    if not self._tables():  # another process may have initialized it meanwhile
                        for statement in filter(str.strip, _SCHEMA.split(";")):
                            conn.execute(statement)
                        meta = {
                            "format_version": str(FORMAT_VERSION),
                            "model_identity": json.dumps(self._model),
                            "embedding_dim": None if self._model is None else str(self._model["embedding_dim"]),
                            "created": _now(),
                            "generation": "0",
                        }
                        conn.executemany("INSERT INTO metadata (key, value) VALUES (?, ?)", meta.items())
                tables = self._tables()
        if not _TABLES <= tables:
            found = ", ".join(sorted(tables)) or "none"
            raise GalleryCorruptError(
                f"{self.path} is not a kerascnn gallery: expected tables {', '.join(sorted(_TABLES))}, "
                f"found {found} (the file was left untouched)"
            )
        version = self._meta("format_version")
        if version != str(FORMAT_VERSION):
            raise GalleryCorruptError(
                f"gallery {self.path} has format version {version}, this kerascnn reads version {FORMAT_VERSION}"
            )

    def _retry_busy(self, statement: Callable[[], Any]) -> Any:
        """``statement()``, retried until the timeout while SQLite reports the file busy.

        SQLite answers a journal-mode switch that races another connection with an immediate
        "database is locked" instead of waiting (its busy handler would risk a deadlock there);
        nothing is held between tries, so waiting here is safe.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return statement()
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _tables(self) -> set[str]:
        rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {r[0] for r in rows}

    # -- plumbing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        """Turn SQLite errors into gallery errors that name the file."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise GalleryLockedError(
                    f"gallery {self.path} is locked by another process (waited {self.timeout:g} s): {text}"
                ) from exc
            if "readonly" in text or "read-only" in text:
                raise GalleryLockedError(f"gallery {self.path} is read-only: {text}") from exc
            raise GalleryCorruptError(f"gallery {self.path} cannot be read: {text}") from exc
        except sqlite3.DatabaseError as exc:
            raise GalleryCorruptError(f"gallery {self.path} is damaged or not a gallery: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, bump: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), bumping the change counter on commit."""
        self._check_writable()
        with self._sqlite_errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                if bump:
                    self._conn.execute(
                        "UPDATE metadata SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _check_writable(self) -> None:
        if self._conn is None:
            raise GalleryError(f"gallery {self.path} is closed")
        if self.read_only:
            raise GalleryLockedError(f"gallery {self.path} is read-only: it can be searched and listed, not changed")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot of the file."""
        if self._conn is None:
            raise GalleryError(f"gallery {self.path} is closed")
        with self._sqlite_errors():
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    def _meta(self, key: str, conn: sqlite3.Connection | None = None) -> str | None:
        with self._sqlite_errors():
            row = (conn or self._conn).execute("SELECT value FROM metadata WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        """Close the file (also done on leaving a ``with`` block)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery({str(self.path)!r}, index={self.index!r}, read_only={self.read_only})"

    # -- model and embeddings -----------------------------------------------------------------
    @property
    def model_identity(self) -> dict | None:
        """The identity of the model this gallery was enrolled with (``None`` if not recorded)."""
        return json.loads(self._meta("model_identity") or "null")

    @property
    def embedding_dim(self) -> int | None:
        """The dimension of the templates (``None`` while the gallery is empty and has no model)."""
        value = self._meta("embedding_dim")
        return None if value is None else int(value)

    def _check_model(self, identity: dict | None, conn: sqlite3.Connection | None = None) -> None:
        """Raise GalleryModelMismatchError when ``identity`` is not the gallery's model."""
        stored = json.loads(self._meta("model_identity", conn) or "null")
        if identity is None or stored is None:
            return
        for key in IDENTITY_FIELDS:
            if stored.get(key) != identity.get(key):
                raise GalleryModelMismatchError(
                    f"gallery {self.path} was enrolled with model {stored.get('name')!r} and the model in use "
                    f"({identity.get('name')!r}) differs in {key}: gallery {_short(stored.get(key))}, "
                    f"model {_short(identity.get(key))}; re-enroll with this model or use the gallery's model"
                )

    def _adopt_model(self, conn: sqlite3.Connection, identity: dict | None, dim: int) -> None:
        """Check ``dim`` against the gallery and record the model/dim of a gallery that has none."""
        stored_dim = self._meta("embedding_dim", conn)
        if stored_dim is not None and int(stored_dim) != dim:
            raise GalleryInputError(
                f"embeddings have dimension {dim}, gallery {self.path} holds {stored_dim}-d templates"
            )
        if stored_dim is None:
            conn.execute("INSERT OR REPLACE INTO metadata (key, value) VALUES ('embedding_dim', ?)", (str(dim),))
        if identity is not None and self._meta("model_identity", conn) in (None, "null"):
            if int(identity["embedding_dim"]) != dim:
                raise GalleryInputError(
                    f"embeddings have dimension {dim}, model {identity['name']!r} gives {identity['embedding_dim']}"
                )
            conn.execute(
                "INSERT OR REPLACE INTO metadata (key, value) VALUES ('model_identity', ?)", (json.dumps(identity),)
            )

    # -- enrollment -----------------------------------------------------------------------------
    def enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        sources: Sequence[str | os.PathLike | bytes | None] | None = None,
        model_identity: dict | None = None,
    ) -> int:
        """Enroll templates of one identity, in one transaction.

        An existing identity gets the new templates added. A template whose source hash is
        already enrolled for that identity is skipped, so enrolling the same images twice adds
        nothing.

        Args:
            name: the identity's name (any text, 1 to 256 characters, not blank).
            embeddings: ``(n, d)`` (or ``(d,)``) finite floating-point templates.
            sources: per template, its image file (hashed), the image's bytes (hashed), a
                ``"sha256:<hex>"`` digest, or ``None``.
            model_identity: the model that made the embeddings (default: the gallery's
                ``model_identity`` argument).

        Returns:
            The number of templates added.

        Raises:
            GalleryInputError: bad name, embeddings of the wrong shape, dtype or dimension, NaN.
            GalleryModelMismatchError: the model differs from the gallery's.
            GalleryLockedError: the gallery is read-only or locked beyond the timeout.
        """
        name = _check_name(name)
        embeddings = _check_embeddings(embeddings, "embeddings")
        digests = _source_digests(sources, len(embeddings))
        identity = model_identity if model_identity is not None else self._model
        now = _now()
        with self._transaction() as conn:
            self._check_model(identity, conn)
            self._adopt_model(conn, identity, embeddings.shape[1])
            conn.execute("INSERT OR IGNORE INTO identities (name, created) VALUES (?, ?)", (name, now))
            (identity_id,) = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            cursor = conn.executemany(
                "INSERT OR IGNORE INTO templates (identity_id, embedding, source_sha256, created) VALUES (?, ?, ?, ?)",
                [(identity_id, _to_blob(e), d, now) for e, d in zip(embeddings, digests)],
            )
            return cursor.rowcount

    def enrolled_sources(self, name: str) -> set[str]:
        """The source image hashes already enrolled for ``name`` (empty if not enrolled)."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT t.source_sha256 FROM templates t JOIN identities i ON i.id = t.identity_id "
                "WHERE i.name = ? AND t.source_sha256 IS NOT NULL",
                (name,),
            ).fetchall()
        return {r[0] for r in rows}

    def enroll_images(self, name: str, paths: Sequence[str | os.PathLike], pipeline: Any, strict: bool = True,
                      progress: bool = False) -> EnrollReport:
        """Embed images of one person with a face pipeline and enroll them (one transaction).

        Args:
            name: the identity's name.
            paths: image files of that person.
            pipeline: a :class:`kerascnn.face.pipeline.FacePipeline` (anything with ``model`` and
                ``embed_images(paths, progress=...)`` returning embeddings and per-item status).
            strict: raise the error of the first image that gives no face embedding, enrolling
                nothing (else such images are reported in ``failures`` and the others enrolled).
                Of an image with several faces, the pipeline's selected (first) face is enrolled.
            progress: show the pipeline's progress bar.

        Returns:
            An :class:`EnrollReport`.

        Raises:
            GalleryModelMismatchError: the pipeline's model is not the gallery's (checked first).
            FaceError, ImageReadError: with ``strict``, the error of the first failed image.
        """
        name = _check_name(name)
        self._check_writable()
        identity = model_identity(pipeline.model)
        self._check_model(identity)
        report = EnrollReport()
        paths = [os.fspath(p) for p in paths]
        digests = [f"sha256:{sha256_file(p)}" for p in paths]
        known = self.enrolled_sources(name)
        todo = [i for i, d in enumerate(digests) if d[7:] not in known]
        report.skipped = len(paths) - len(todo)
        embeddings, errors = _embed(pipeline, [paths[i] for i in todo], progress, strict)
        report.failures = [(paths[i], error) for i, error in zip(todo, errors) if error is not None]
        ok = [j for j, error in enumerate(errors) if error is None]
        if ok:
            report.enrolled[name] = self.enroll(
                name, embeddings[ok], [digests[todo[j]] for j in ok], model_identity=identity
            )
        return report

    def enroll_folder(self, folder: str | os.PathLike, pipeline: Any, progress: bool = True) -> EnrollReport:
        """Enroll every identity of an ``identity/image`` folder, one transaction per identity.

        A process killed mid-way keeps every identity committed before; running it again skips
        the images already enrolled (by source hash) and completes the rest. Images without a
        usable face are reported in ``failures`` and skipped.

        Args:
            folder: one sub-folder per person, holding that person's images.
            pipeline: a face pipeline (see :meth:`enroll_images`).
            progress: show a progress bar over the images.

        Returns:
            An :class:`EnrollReport` over all identities.

        Raises:
            DatasetError: the folder is missing or has no identity sub-folder with images.
            GalleryModelMismatchError: the pipeline's model is not the gallery's (checked first).
        """
        from tqdm.auto import tqdm

        from kerascnn.data.folders import scan_folder

        self._check_writable()
        self._check_model(model_identity(pipeline.model))
        dataset = scan_folder(folder, skip_empty_classes=True)
        report = EnrollReport()
        with tqdm(total=len(dataset), unit="img", desc="enroll", disable=not progress, file=sys.stderr) as bar:
            for label, name in enumerate(dataset.class_names):
                paths = [p for p, y in zip(dataset.paths, dataset.labels) if y == label]
                bar.set_postfix_str(name, refresh=False)
                part = self.enroll_images(name, paths, pipeline, strict=False)
                report.enrolled.update(part.enrolled)
                report.skipped += part.skipped
                report.failures.extend(part.failures)
                bar.update(len(paths))
        return report

    # -- listing and editing ----------------------------------------------------------------------
    def identities(self) -> list[IdentityInfo]:
        """Every enrolled identity (name, template count, creation time), sorted by name."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT i.name, COUNT(t.id), i.created FROM identities i "
                "LEFT JOIN templates t ON t.identity_id = i.id GROUP BY i.id ORDER BY i.name"
            ).fetchall()
        return [IdentityInfo(n, c, created) for n, c, created in rows]

    list = identities

    def __len__(self) -> int:
        """The number of templates."""
        with self._reading() as conn:
            return conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0]

    def __contains__(self, name: object) -> bool:
        with self._reading() as conn:
            return conn.execute("SELECT 1 FROM identities WHERE name = ?", (name,)).fetchone() is not None

    def templates(self, name: str) -> np.ndarray:
        """The ``(n, d)`` float32 templates of ``name``, in enrollment order.

        Raises:
            UnknownIdentityError: ``name`` is not enrolled.
        """
        with self._reading() as conn:
            identity_id = self._identity_id(conn, name)
            rows = conn.execute(
                "SELECT embedding FROM templates WHERE identity_id = ? ORDER BY id", (identity_id,)
            ).fetchall()
        dim = self.embedding_dim or 0
        return np.stack([_from_blob(r[0], dim) for r in rows]) if rows else np.zeros((0, dim), np.float32)

    def remove(self, name: str) -> int:
        """Remove an identity and its templates; returns the number of templates removed.

        Raises:
            UnknownIdentityError: ``name`` is not enrolled.
        """
        with self._transaction() as conn:
            identity_id = self._identity_id(conn, name)
            count = conn.execute("DELETE FROM templates WHERE identity_id = ?", (identity_id,)).rowcount
            conn.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
        return count

    def rename(self, old: str, new: str) -> None:
        """Rename an identity.

        Raises:
            UnknownIdentityError: ``old`` is not enrolled.
            GalleryInputError: ``new`` is not a valid name or is already enrolled.
        """
        new = _check_name(new)
        with self._transaction() as conn:
            identity_id = self._identity_id(conn, old)
            if conn.execute("SELECT 1 FROM identities WHERE name = ?", (new,)).fetchone():
                raise GalleryInputError(f"cannot rename {old!r} to {new!r}: {new!r} is already enrolled")
            conn.execute("UPDATE identities SET name = ? WHERE id = ?", (new, identity_id))

    def _identity_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownIdentityError(f"{name!r} is not enrolled in gallery {self.path}")
        return row[0]

    # -- export and import ------------------------------------------------------------------------
    def _records(self) -> tuple[dict, list[dict]]:
        """(metadata, one dict per template) of the whole gallery, from one snapshot."""
        with self._reading() as conn:
            meta = dict(conn.execute("SELECT key, value FROM metadata").fetchall())
            rows = conn.execute(
                "SELECT i.name, i.created, t.embedding, t.source_sha256, t.created FROM identities i "
                "JOIN templates t ON t.identity_id = i.id ORDER BY i.name, t.id"
            ).fetchall()
            empty = conn.execute(
                "SELECT name, created FROM identities WHERE id NOT IN (SELECT identity_id FROM templates)"
            ).fetchall()
        dim = int(meta["embedding_dim"]) if meta.get("embedding_dim") else 0
        records = [
            {"name": n, "identity_created": ic, "embedding": _from_blob(b, dim), "source": s, "created": c}
            for n, ic, b, s, c in rows
        ]
        header = {
            "format": EXPORT_FORMAT,
            "version": FORMAT_VERSION,
            "model_identity": json.loads(meta.get("model_identity") or "null"),
            "embedding_dim": dim or None,
            "created": meta.get("created"),
            "empty_identities": [{"name": n, "created": c} for n, c in empty],
        }
        return header, records

    def export(self, path: str | os.PathLike) -> int:
        """Write the whole gallery to a portable file (no pickle), atomically, owner-only.

        ``.json``: one JSON object (metadata, and per template its name, embedding as a list of
        floats, source hash, creation time). ``.npz``: arrays ``names``, ``embeddings`` (float32),
        ``sources``, ``created``, ``identity_created`` and a JSON string ``metadata``.

        Returns:
            The number of templates written.

        Raises:
            GalleryInputError: the extension is neither ``.json`` nor ``.npz``.
        """
        path = Path(path)
        kind = path.suffix.lower()
        if kind not in (".json", ".npz"):
            raise GalleryInputError(f"export file {path} must end in .json or .npz, got {kind or 'no extension'!r}")
        header, records = self._records()
        with _atomic_file(path) as tmp:
            if kind == ".json":
                header["templates"] = [{**r, "embedding": r["embedding"].tolist()} for r in records]
                tmp.write_text(json.dumps(header, indent=1))
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
        return len(records)

    def import_(self, path: str | os.PathLike) -> int:
        """Add the identities and templates of an exported file, in one transaction.

        Identities already enrolled get the new templates; templates already there (same source
        image hash, or the same embedding when the source is unknown) are skipped, so importing a
        file twice adds nothing. Nothing is written if anything in the file is invalid.

        Returns:
            The number of templates added.

        Raises:
            GalleryCorruptError: the file is not a kerascnn gallery export (names the file).
            GalleryModelMismatchError: it was made with another model than this gallery's.
            GalleryInputError: its templates do not fit this gallery (dimension, NaN, names).
        """
        return self._import_records(*_read_export(Path(path)), source=str(path))

    def _import_records(self, header: dict, records: list[dict], source: str) -> int:
        """Add exported records (see :meth:`_records`) in one transaction; ``source`` names them in errors."""
        identity = header.get("model_identity")
        if identity is not None:
            identity = _check_identity_dict(identity)
        names = [_check_name(r["name"]) for r in records]
        dim = header.get("embedding_dim")
        embeddings = (
            _check_embeddings(np.array([r["embedding"] for r in records], dtype=np.float32).reshape(len(records), -1),
                              f"templates of {source}")
            if records else np.zeros((0, dim or 0), np.float32)
        )
        if records and dim is not None and embeddings.shape[1] != dim:
            raise GalleryCorruptError(f"{source}: embedding_dim is {dim} but templates have {embeddings.shape[1]} values")
        with self._transaction() as conn:
            self._check_model(identity, conn)
            self._check_model(self._model, conn)
            if records:
                self._adopt_model(conn, identity, embeddings.shape[1])
            added = 0
            for item in header.get("empty_identities", []):
                conn.execute("INSERT OR IGNORE INTO identities (name, created) VALUES (?, ?)",
                             (_check_name(item["name"]), str(item["created"])))
            for name, record, embedding in zip(names, records, embeddings):
                conn.execute("INSERT OR IGNORE INTO identities (name, created) VALUES (?, ?)",
                             (name, str(record["identity_created"])))
                (identity_id,) = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
                digest = record.get("source") or None
                if digest is not None and not _is_sha256(digest):
                    raise GalleryCorruptError(f"{source}: source {digest!r} of {name!r} is not a sha256 digest")
                blob = _to_blob(embedding)
                if digest is None and conn.execute(  # no source hash: an identical template is the same one
                    "SELECT 1 FROM templates WHERE identity_id = ? AND embedding = ?", (identity_id, blob)
                ).fetchone():
                    continue
                added += conn.execute(
                    "INSERT OR IGNORE INTO templates (identity_id, embedding, source_sha256, created) VALUES (?, ?, ?, ?)",
                    (identity_id, blob, digest, str(record["created"])),
                ).rowcount
        return added

    # -- search ---------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 1, model_identity: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best identities for each query, by cosine similarity (higher is closer).

        An identity's score is its best template's. All queries are answered with one matrix
        product against the in-memory template matrix (reloaded when the file has changed since
        the last search), or through the faiss index when ``index="faiss"``.

        Args:
            queries: ``(n, d)`` (or ``(d,)``) finite query embeddings.
            k: how many identities per query (at most the number enrolled).
            model_identity: the model that made the queries (default: the gallery's argument).

        Returns:
            ``(names, scores)``: ``(n, k')`` array of names and ``(n, k')`` float32 cosine
            similarities, best first, with ``k' = min(k, identities)``.

        Raises:
            EmptyGalleryError: no template is enrolled.
            GalleryInputError: queries of the wrong shape, dtype or dimension, or NaN.
            GalleryModelMismatchError: the model differs from the gallery's.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise GalleryInputError(f"k must be a positive integer, got {k!r}")
        self._check_model(model_identity)
        queries = _unit(_check_embeddings(queries, "queries"))
        cache = self._load()
        if queries.shape[1] != cache.matrix.shape[1]:
            raise GalleryInputError(
                f"queries have dimension {queries.shape[1]}, gallery {self.path} holds {cache.matrix.shape[1]}-d "
                f"templates (queries shape {queries.shape})"
            )
        k = min(int(k), len(cache.names))
        if self.index == "faiss":
            return cache.search_faiss(queries, k, self.nprobe)
        return cache.search_exact(queries, k)

    def _load(self) -> "_SearchCache":
        """The in-memory template matrix, reloaded when the change counter has moved."""
        generation = self._meta("generation")
        if self._cache is not None and self._cache.generation == generation:
            return self._cache
        with self._reading() as conn:
            generation = self._meta("generation", conn)
            dim = int(self._meta("embedding_dim", conn) or 0)
            names = [r[0] for r in conn.execute(
                "SELECT i.name FROM identities i JOIN templates t ON t.identity_id = i.id ORDER BY i.id, t.id"
            )]
            blobs = b"".join(r[0] for r in conn.execute(
                "SELECT t.embedding FROM identities i JOIN templates t ON t.identity_id = i.id ORDER BY i.id, t.id"
            ))
        if not names:
            raise EmptyGalleryError(f"gallery {self.path} is empty: enroll someone before searching")
        matrix = np.frombuffer(blobs, dtype="<f4").reshape(len(names), dim).astype(np.float32)
        self._cache = _SearchCache(generation, names, _unit(matrix))
        return self._cache


@contextlib.contextmanager
def open_gallery(path: str | os.PathLike, model_identity: dict | None = None, create: bool = True,
                 **kwargs: Any) -> Iterator[Gallery]:
    """A :class:`Gallery` for a ``with`` block that leaves the file system as it was on error.

    An existing gallery is opened as usual (it only ever changes by committed transactions). A
    new one is built in a temporary file beside ``path`` and moved into place only when the
    block succeeds, so a failed first enrollment leaves no gallery behind, and a gallery that
    another process created meanwhile gets this one's templates merged into it.

    Args:
        path, model_identity, create, kwargs: as for :class:`Gallery`.

    Yields:
        The open gallery (closed on leaving the block).
    """
    path = Path(path)
    if path.exists() or not create:
        with Gallery(path, model_identity, create=create, **kwargs) as gallery:
            yield gallery
        return
    if not path.parent.is_dir():
        raise GalleryNotFoundError(f"cannot create gallery {path}: its folder does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".creating", dir=path.parent)
    os.close(fd)
    try:
        with Gallery(tmp, model_identity, **kwargs) as gallery:
            gallery.path = path  # messages name the file the user asked for
            yield gallery
        try:
            os.link(tmp, path)  # atomic: fails if the gallery appeared meanwhile
        except FileExistsError:
            with Gallery(tmp, create=False) as built, Gallery(path, create=False, **kwargs) as existing:
                existing._import_records(*built._records(), source=str(path))
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            Path(leftover).unlink(missing_ok=True)


# --- search cache ------------------------------------------------------------------------------
class _SearchCache:
    """Unit templates sorted by identity, with each identity's first column."""

    def __init__(self, generation: str | None, template_names: list[str], matrix: np.ndarray) -> None:
        self.generation = generation
        self.matrix = np.ascontiguousarray(matrix)
        starts = [0] + [i for i in range(1, len(template_names)) if template_names[i] != template_names[i - 1]]
        self.starts = np.asarray(starts, dtype=np.int64)
        self.names = np.asarray([template_names[i] for i in starts], dtype=object)
        self.owner = np.repeat(np.arange(len(starts)), np.diff(np.append(self.starts, len(template_names))))
        self._faiss = None

    @property
    def most_templates(self) -> int:
        """The largest number of templates of one identity."""
        return int(np.max(np.diff(np.append(self.starts, self.matrix.shape[0]))))

    def search_exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` identities: one matrix product, then the best ``k x most_templates``
        templates of each query, of which the first ``k`` distinct owners are the answer (an
        identity's rank is its best template's; no identity has more templates than that)."""
        n = self.matrix.shape[0]
        want = min(n, k * self.most_templates)
        step = max(1, _SEARCH_CHUNK // max(1, n))
        top_names, top_scores = [], []
        for i in range(0, len(queries), step):
            scores = queries[i:i + step] @ self.matrix.T
            idx = _top_k(scores, want)
            names, best = self._first_owners(idx, np.take_along_axis(scores, idx, axis=1), k)
            top_names.append(names)
            top_scores.append(best)
        return np.concatenate(top_names), np.concatenate(top_scores)

    def search_faiss(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._faiss_index(nprobe)
        # enough templates to see k distinct identities whenever the index finds them
        want = min(self.matrix.shape[0], k * self.most_templates)
        scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), want)
        return self._first_owners(ids, scores, k)

    def _first_owners(self, templates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per row of template indices sorted best first (``-1``: none), the first ``k`` owners."""
        if len(self.starts) == self.matrix.shape[0] and (templates[:, :k] >= 0).all():  # one template each
            return self.names[templates[:, :k]], scores[:, :k].astype(np.float32)
        names = np.empty((len(templates), k), dtype=object)
        best = np.full((len(templates), k), -np.inf, dtype=np.float32)
        for q in range(len(templates)):
            valid = templates[q] >= 0
            owners = self.owner[templates[q][valid]]
            _, first = np.unique(owners, return_index=True)
            first = np.sort(first)[:k]
            names[q, :len(first)] = self.names[owners[first]]
            best[q, :len(first)] = scores[q][valid][first]
        return names, best

    def _faiss_index(self, nprobe: int):
        if self._faiss is None:
            try:
                import faiss
            except ImportError as exc:
                raise GalleryError(
                    "index='faiss' needs the faiss package: pip install faiss-cpu (the 'ann' extra)"
                ) from exc
            n, dim = self.matrix.shape
            lists = int(4 * np.sqrt(n))
            if n < 10_000 or lists < 2:
                index = faiss.IndexFlatIP(dim)  # small galleries: exact is as fast
            else:
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
                index.train(self.matrix[np.random.default_rng(0).permutation(n)[: lists * 64]])
                index.nprobe = nprobe
            index.add(self.matrix)
            self._faiss = index
        return self._faiss


# --- helpers -------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 24 else text[:20] + "...\""


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _check_identity_dict(identity: Any) -> dict:
    if not isinstance(identity, dict) or any(key not in identity for key in IDENTITY_FIELDS):
        raise GalleryInputError(
            f"model identity must be a dict with keys {', '.join(IDENTITY_FIELDS)} (see model_identity()), "
            f"got {identity!r:.200}"
        )
    return identity


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise GalleryInputError(f"identity name must be a string, got {type(name).__name__}")
    if not name.strip() or len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 for c in name):
        raise GalleryInputError(
            f"identity name must be 1 to {MAX_NAME_LENGTH} printable characters, not blank, got {name!r:.300}"
        )
    return name


def _check_embeddings(x: Any, what: str) -> np.ndarray:
    """``(n, d)`` float32 from finite floating-point input; GalleryInputError otherwise."""
    array = np.asarray(x)
    if array.dtype.kind != "f":
        raise GalleryInputError(f"{what} must be floating point, got dtype {array.dtype} with shape {array.shape}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise GalleryInputError(f"{what} must have shape (n, d) or (d,) with n, d > 0, got shape {np.shape(x)}")
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.all(np.isfinite(array), axis=1))
        raise GalleryInputError(f"{what} of shape {array.shape} contain NaN or infinity (rows {bad[:10].tolist()})")
    array = array.astype(np.float32)
    if np.any(np.linalg.norm(array, axis=1) == 0):
        raise GalleryInputError(f"{what} of shape {array.shape} contain an all-zero vector (no direction to compare)")
    return array


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _from_blob(blob: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(blob, dtype="<f4")
    if dim and vector.size != dim:
        raise GalleryCorruptError(f"a template holds {vector.size} values, the gallery's dimension is {dim}")
    return vector.astype(np.float32)


def _source_digests(sources: Sequence | None, n: int) -> list[str | None]:
    if sources is None:
        return [None] * n
    sources = list(sources)
    if len(sources) != n:
        raise GalleryInputError(f"got {len(sources)} sources for {n} embeddings")
    digests = []
    for source in sources:
        if source is None:
            digests.append(None)
        elif isinstance(source, bytes):
            digests.append(hashlib.sha256(source).hexdigest())
        elif isinstance(source, str) and source.startswith("sha256:") and _is_sha256(source[7:]):
            digests.append(source[7:])
        else:
            digests.append(sha256_file(source))
    return digests


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest scores of each row, best first."""
    n = scores.shape[1]
    if k < n:
        idx = np.argpartition(scores, n - k, axis=1)[:, n - k:]
    else:
        idx = np.broadcast_to(np.arange(n), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def _embed(pipeline: Any, paths: list[str], progress: bool, strict: bool) -> tuple[np.ndarray, list[str | None]]:
    """Per image: the first face's embedding row, and None or the error message of an image without one."""
    if not paths:
        return np.zeros((0, 0), np.float32), []
    batch = pipeline.embed_images(paths, progress=progress, strict=strict)
    rows: dict[int, int] = {}
    errors: dict[int, str] = {}
    for row, result in enumerate(batch.results):
        if result.ok:
            rows.setdefault(result.index, row)
        else:
            errors.setdefault(result.index, str(result.error))  # the exception, or its message
    embeddings = np.asarray(batch.embeddings, np.float32)
    picked = np.stack([embeddings[rows[i]] if i in rows else np.full(embeddings.shape[1], np.nan, np.float32)
                       for i in range(len(paths))])
    return picked, [None if i in rows else errors.get(i, "no embedding") for i in range(len(paths))]


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


def _check_magic(path: Path) -> None:
    """GalleryCorruptError for a non-empty file that is not a SQLite database (before SQLite sees it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except PermissionError as exc:
        raise GalleryLockedError(f"gallery {path} cannot be read: permission denied") from exc
    if head and head != _SQLITE_MAGIC:
        raise GalleryCorruptError(
            f"{path} is not a kerascnn gallery: not a SQLite database (it starts with {head[:8]!r}; "
            "the file was left untouched)"
        )


def _read_export(path: Path) -> tuple[dict, list[dict]]:
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
        if header.get("format") != EXPORT_FORMAT or header.get("version") != FORMAT_VERSION:
            raise KeyError("format")
        for record in records:
            for key in ("name", "identity_created", "embedding", "created"):
                record[key]  # noqa: B018 (presence check)
    except GalleryInputError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OSError, EOFError) as exc:
        raise GalleryCorruptError(
            f"{path} is not a kerascnn gallery export ({EXPORT_FORMAT} version {FORMAT_VERSION} JSON or NPZ): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return header, records
