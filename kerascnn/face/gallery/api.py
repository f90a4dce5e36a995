"""The gallery API: enroll, search, list, edit, export and import, over any store.

:class:`Gallery` checks every input (names, templates, the embedding model's identity) and talks
to its store (:mod:`kerascnn.face.gallery.store`) in portable SQL inside the store's transactions;
search goes through the in-memory index (:mod:`kerascnn.face.gallery.index`) and export/import
through the file format (:mod:`kerascnn.face.gallery.fileformat`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from kerascnn.evaluation import unit_vectors
from kerascnn.errors import (
    EmptyGalleryError,
    GalleryCorruptError,
    GalleryInputError,
    GalleryLockedError,
    GalleryModelMismatchError,
    GalleryNotFoundError,
    UnknownIdentityError,
)
from kerascnn.face.gallery.fileformat import EXPORT_FORMAT, EXPORT_VERSION, check_extension, read_export, write_export
from kerascnn.face.gallery.index import SearchIndex
from kerascnn.face.gallery.records import (
    IDENTITY_FIELDS,
    REQUIRED_IDENTITY_FIELDS,
    IdentityInfo,
    check_embeddings,
    check_identity_dict,
    check_name,
    check_not_confusable,
    from_blob,
    is_sha256,
    now,
    short,
    source_digests,
    to_blob,
)
from kerascnn.face.gallery.location import is_database, open_store
from kerascnn.face.gallery.store import FORMAT_VERSION, Connection, GalleryStore

_FULL_RELOAD = 1000  # more identities changed than this (and than a quarter of the index): reload all

# what a model identity's options_sha256 covers, for mismatch messages
OPTIONS_NOTE = " (how its templates are made: alignment template, crop size, flip, box scales, input scaling)"


class Gallery:
    """Enrolled identities and their face templates, in one store.

    Args:
        path: the gallery: a SQLite file path (the embedded store), a database URL of another
            store, or a libpq ``key=value`` string (PostgreSQL). Messages, ``repr`` and
            :attr:`location` never show its password.
        model_identity: the :func:`~kerascnn.face.gallery.records.pipeline_identity` of the face
            pipeline in use (:func:`model_identity` of a bare embedding model). Stored when
            the gallery is created (or at its first enrollment if it had none); an existing
            gallery enrolled with another model refuses enroll, search and import. ``None``
            skips the check (listing, renaming, removing need no model).
        create: create the gallery if it does not exist (else :class:`GalleryNotFoundError`).
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
        self.path = path if is_database(path) else Path(path)
        self.timeout = float(timeout)
        self.index = index
        self.nprobe = int(nprobe)
        self._model = check_identity_dict(model_identity) if model_identity is not None else None
        self._cache: SearchIndex | None = None
        self._written: dict[str, str] | None = None  # the metadata, during a write transaction
        self._store: GalleryStore = open_store(path, create, self.timeout, read_only)
        self.read_only = self._store.read_only
        try:
            self._store.initialize(create, {
                "format_version": str(FORMAT_VERSION),
                "model_identity": json.dumps(self._model),
                "embedding_dim": None if self._model is None else str(self._model["embedding_dim"]),
                "created": now(),
                "generation": "0",
            })
            if self._model is not None:
                self._check_model(self._model)
        except BaseException:
            self.close()
            raise

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def location(self) -> str:
        """How messages name this gallery (its file, or its database location with the password as ``***``)."""
        return self._store.location

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write transaction. On commit it bumps the change counter and logs, under the new
        counter, every identity the block passed to :meth:`_touch` (searching processes read that
        log to update their index)."""
        self._check_writable()
        self._touched = set()
        with self._store.writing() as conn:
            self._written = dict(conn.execute("SELECT key, value FROM metadata").fetchall())  # stable: we write
            try:
                yield conn
                generation = int(self._written["generation"]) + 1
                conn.execute("UPDATE metadata SET value = ? WHERE key = 'generation'", (str(generation),))
                if self._touched and self._store.change_log:
                    conn.executemany("INSERT INTO changes (generation, identity_id) VALUES (?, ?)",
                                     [(generation, i) for i in sorted(self._touched)])
            finally:
                self._written = None

    def _touch(self, identity_id: int) -> int:
        """Record that the current transaction changes identity ``identity_id``; returns it."""
        self._touched.add(int(identity_id))
        return identity_id

    def _check_writable(self) -> None:
        if self.read_only:
            raise GalleryLockedError(
                f"gallery {self.location} is read-only: it can be searched and listed, not changed"
            )

    def _reading(self) -> contextlib.AbstractContextManager[Connection]:
        """One read transaction: a consistent snapshot of the gallery."""
        return self._store.reading()

    def _meta(self, key: str, conn: Connection | None = None) -> str | None:
        """A metadata value: from ``conn``'s transaction, or from a new read transaction."""
        if conn is not None and self._written is not None:  # in a write transaction: read at its start
            return self._written.get(key)
        if conn is None:
            with self._reading() as conn:
                return self._meta(key, conn)
        row = conn.execute("SELECT value FROM metadata WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        """Close the gallery (also done on leaving a ``with`` block)."""
        self._store.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery({self.location!r}, index={self.index!r}, read_only={self.read_only})"

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

    def check_model(self, identity: dict | None) -> None:
        """Refuse a model whose templates are not this gallery's.

        Args:
            identity: the model's :func:`~kerascnn.face.gallery.records.pipeline_identity` (or
                :func:`model_identity`); None checks nothing.

        Raises:
            GalleryModelMismatchError: the gallery was enrolled with another model or other template options.
        """
        self._check_model(identity)

    def _check_model(self, identity: dict | None, conn: Connection | None = None) -> None:
        """Raise GalleryModelMismatchError when ``identity`` is not the gallery's model."""
        if identity is None:
            return
        stored = json.loads(self._meta("model_identity", conn) or "null")
        if stored is None:
            return
        for key in IDENTITY_FIELDS:
            if key not in REQUIRED_IDENTITY_FIELDS and (key not in stored or key not in identity):
                continue  # a gallery or an export made before kerascnn recorded this field
            if stored.get(key) != identity.get(key):
                raise GalleryModelMismatchError(
                    f"gallery {self.location} was enrolled with model {stored.get('name')!r} and the model in use "
                    f"({identity.get('name')!r}) differs in {key}{OPTIONS_NOTE if key == 'options_sha256' else ''}: "
                    f"gallery {short(stored.get(key))}, "
                    f"model {short(identity.get(key))}; re-enroll with this model or use the gallery's model"
                )

    def _adopt_model(self, conn: Connection, identity: dict | None, dim: int) -> None:
        """Check ``dim`` against the gallery and record the model/dim of a gallery that has none."""
        stored_dim = self._meta("embedding_dim", conn)
        if stored_dim is not None and int(stored_dim) != dim:
            raise GalleryInputError(
                f"embeddings have dimension {dim}, gallery {self.location} holds {stored_dim}-d templates"
            )
        if stored_dim is None:
            self._set_meta(conn, "embedding_dim", str(dim))
        if identity is not None and self._meta("model_identity", conn) in (None, "null"):
            if int(identity["embedding_dim"]) != dim:
                raise GalleryInputError(
                    f"embeddings have dimension {dim}, model {identity['name']!r} gives {identity['embedding_dim']}"
                )
            self._set_meta(conn, "model_identity", json.dumps(identity))

    def _set_meta(self, conn: Connection, key: str, value: str) -> None:
        conn.execute(
            "INSERT INTO metadata (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
        self._written[key] = value

    # -- enrollment -----------------------------------------------------------------------------
    def enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        sources: Sequence[str | os.PathLike | bytes | None] | None = None,
        model_identity: dict | None = None,
        allow_confusable: bool = False,
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
            allow_confusable: enroll a new name even if it looks like an enrolled one.

        Returns:
            The number of templates added.

        Raises:
            GalleryInputError: bad name, embeddings of the wrong shape, dtype or dimension, NaN.
            ConfusableNameError: a new name that looks like an enrolled one ("аlice" with a
                Cyrillic ``а`` beside "alice"), unless ``allow_confusable``.
            GalleryModelMismatchError: the model differs from the gallery's.
            GalleryLockedError: the gallery is read-only or locked beyond the timeout.
        """
        name = check_name(name)
        embeddings = check_embeddings(embeddings, "embeddings")
        digests = source_digests(sources, len(embeddings))
        identity = model_identity if model_identity is not None else self._model
        created = now()
        with self._transaction() as conn:
            self._check_model(identity, conn)
            self._adopt_model(conn, identity, embeddings.shape[1])
            if not allow_confusable:
                _refuse_confusable(conn, [name])
            identity_id = self._touch(_identity_id_or_add(conn, name, created))
            cursor = conn.executemany(
                "INSERT INTO templates (identity_id, embedding, source_sha256, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(identity_id, to_blob(e), d, created) for e, d in zip(embeddings, digests)],
            )
            return cursor.rowcount

    def enrolled_sources(self, name: str) -> set[str]:
        """The source image hashes already enrolled for ``name`` (empty if not enrolled)."""
        name = check_name(name)
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT t.source_sha256 FROM templates t JOIN identities i ON i.id = t.identity_id "
                "WHERE i.name = ? AND t.source_sha256 IS NOT NULL",
                (name,),
            ).fetchall()
        return {r[0] for r in rows}

    def check_new_name(self, name: str, allow_confusable: bool = False) -> str:
        """The name as it would be stored, checked before any work is spent on its images.

        Args:
            name: a name to enroll.
            allow_confusable: accept a new name that looks like an enrolled one.

        Returns:
            The name, NFC-normalised and stripped of surrounding spaces.

        Raises:
            GalleryInputError: not a valid name.
            ConfusableNameError: a new name that looks like an enrolled one, unless ``allow_confusable``.
            GalleryLockedError: the gallery is read-only.
        """
        name = check_name(name)
        self._check_writable()
        if not allow_confusable:
            with self._reading() as conn:
                if conn.execute("SELECT 1 FROM identities WHERE name = ?", (name,)).fetchone() is None:
                    _refuse_confusable(conn, [name])
        return name

    # -- listing and editing ----------------------------------------------------------------------
    def identities(self) -> list[IdentityInfo]:
        """Every enrolled identity (name, template count, creation time), sorted by name."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT i.name, COUNT(t.id), i.created FROM identities i "
                "LEFT JOIN templates t ON t.identity_id = i.id GROUP BY i.id, i.name, i.created"
            ).fetchall()
        return [IdentityInfo(n, int(c), created) for n, c, created in sorted(rows)]

    list = identities

    def identity_count(self) -> int:
        """The number of enrolled identities (the gallery's size N for 1:N decisions)."""
        with self._reading() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0])

    def __len__(self) -> int:
        """The number of templates."""
        with self._reading() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0])

    def __contains__(self, name: object) -> bool:
        try:
            name = check_name(name)
        except GalleryInputError:
            return False
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
            dim = int(self._meta("embedding_dim", conn) or 0)
        return np.stack([from_blob(r[0], dim) for r in rows]) if rows else np.zeros((0, dim), np.float32)

    def remove(self, name: str) -> int:
        """Remove an identity and its templates; returns the number of templates removed.

        Raises:
            UnknownIdentityError: ``name`` is not enrolled.
        """
        with self._transaction() as conn:
            identity_id = self._touch(self._identity_id(conn, name))
            count = conn.execute("DELETE FROM templates WHERE identity_id = ?", (identity_id,)).rowcount
            conn.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
        return count

    def rename(self, old: str, new: str, allow_confusable: bool = False) -> None:
        """Rename an identity.

        Args:
            old: the enrolled name.
            new: its new name.
            allow_confusable: accept a new name that looks like another enrolled one.

        Raises:
            UnknownIdentityError: ``old`` is not enrolled.
            GalleryInputError: ``new`` is not a valid name or is already enrolled.
            ConfusableNameError: ``new`` looks like another enrolled name, unless ``allow_confusable``.
        """
        new = check_name(new)
        with self._transaction() as conn:
            identity_id = self._touch(self._identity_id(conn, old))
            if conn.execute("SELECT 1 FROM identities WHERE name = ?", (new,)).fetchone():
                raise GalleryInputError(f"cannot rename {old!r} to {new!r}: {new!r} is already enrolled")
            if not allow_confusable:
                _refuse_confusable(conn, [new], besides=identity_id)
            conn.execute("UPDATE identities SET name = ? WHERE id = ?", (new, identity_id))

    def _identity_id(self, conn: Connection, name: str) -> int:
        name = check_name(name)  # NFC: the form names are stored in
        row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownIdentityError(f"{name!r} is not enrolled in gallery {self.location}")
        return row[0]

    # -- export and import ------------------------------------------------------------------------
    def _records(self) -> tuple[dict, list[dict]]:
        """(export header, one dict per template) of the whole gallery, from one snapshot."""
        with self._reading() as conn:
            meta = dict(conn.execute("SELECT key, value FROM metadata").fetchall())
            rows = conn.execute(
                "SELECT i.name, i.created, t.embedding, t.source_sha256, t.created, t.id FROM identities i "
                "JOIN templates t ON t.identity_id = i.id"
            ).fetchall()
            empty = conn.execute(
                "SELECT name, created FROM identities WHERE id NOT IN (SELECT identity_id FROM templates)"
            ).fetchall()
        dim = int(meta["embedding_dim"]) if meta.get("embedding_dim") else 0
        records = [
            {"name": n, "identity_created": ic, "embedding": from_blob(b, dim), "source": s, "created": c}
            for n, ic, b, s, c, _ in sorted(rows, key=lambda r: (r[0], r[5]))
        ]
        header = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "model_identity": json.loads(meta.get("model_identity") or "null"),
            "embedding_dim": dim or None,
            "created": meta.get("created"),
            "empty_identities": [{"name": n, "created": c} for n, c in sorted(empty)],
        }
        return header, records

    def export(self, path: str | os.PathLike, overwrite: bool = False) -> int:
        """Write the whole gallery to a portable file (no pickle), atomically, owner-only.

        ``.json``: one JSON object (metadata, and per template its name, embedding as a list of
        floats, source hash, creation time). ``.npz``: arrays ``names``, ``embeddings`` (float32),
        ``sources``, ``created``, ``identity_created`` and a JSON string ``metadata``.

        Args:
            path: the ``.json`` or ``.npz`` file to write.
            overwrite: replace an existing file (never the gallery's own file).

        Returns:
            The number of templates written.

        Raises:
            GalleryInputError: the extension is neither ``.json`` nor ``.npz``; ``path`` is the
                gallery itself, a directory, or an existing file without ``overwrite``.
        """
        path = Path(path)
        check_extension(path)
        if os.path.lexists(path):
            if not is_database(self.path) and os.path.exists(path) and os.path.samefile(path, self.path):
                raise GalleryInputError(f"cannot export gallery {self.location} onto itself: give another file name")
            if not path.is_dir() and not overwrite:
                raise GalleryInputError(f"export file {path} already exists: pass --force (overwrite=True) to "
                                        "replace it")
        header, records = self._records()
        write_export(path, header, records)
        return len(records)

    def import_(self, path: str | os.PathLike, allow_confusable: bool = False) -> int:
        """Add the identities and templates of an exported file, in one transaction.

        Identities already enrolled get the new templates; templates already there (same source
        image hash, or the same embedding when the source is unknown) are skipped, so importing a
        file twice adds nothing. Nothing is written if anything in the file is invalid.

        Args:
            path: the ``.json`` or ``.npz`` file of :meth:`export`.
            allow_confusable: add new names even if they look like enrolled ones (or like each other).

        Returns:
            The number of templates added.

        Raises:
            GalleryCorruptError: the file is not a kerascnn gallery export (names the file).
            GalleryModelMismatchError: it was made with another model than this gallery's.
            GalleryInputError: its templates do not fit this gallery (dimension, NaN, names).
            ConfusableNameError: a new name looks like an enrolled one, unless ``allow_confusable``.
        """
        return self._import_records(*read_export(Path(path)), source=str(path), allow_confusable=allow_confusable)

    def _import_records(self, header: dict, records: list[dict], source: str, allow_confusable: bool = False) -> int:
        """Add exported records (see :meth:`_records`) in one transaction; ``source`` names them in errors."""
        identity = header.get("model_identity")
        if identity is not None:
            identity = check_identity_dict(identity)
        names = [check_name(r["name"]) for r in records]
        empty_names = [check_name(item["name"]) for item in header.get("empty_identities", [])]
        dim = header.get("embedding_dim")
        embeddings = (
            check_embeddings(np.array([r["embedding"] for r in records], dtype=np.float32).reshape(len(records), -1),
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
            if not allow_confusable:
                _refuse_confusable(conn, empty_names + names)
            added = 0
            for name, item in zip(empty_names, header.get("empty_identities", [])):
                _identity_id_or_add(conn, name, str(item["created"]))
            for name, record, embedding in zip(names, records, embeddings):
                identity_id = self._touch(_identity_id_or_add(conn, name, str(record["identity_created"])))
                digest = record.get("source") or None
                if digest is not None and not is_sha256(digest):
                    raise GalleryCorruptError(f"{source}: source {digest!r} of {name!r} is not a sha256 digest")
                blob = to_blob(embedding)
                if digest is None and conn.execute(  # no source hash: an identical template is the same one
                    "SELECT 1 FROM templates WHERE identity_id = ? AND embedding = ?", (identity_id, blob)
                ).fetchone():
                    continue
                added += conn.execute(
                    "INSERT INTO templates (identity_id, embedding, source_sha256, created) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (identity_id, blob, digest, str(record["created"])),
                ).rowcount
        return added

    # -- search ---------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 1, model_identity: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best identities for each query, by cosine similarity (higher is closer).

        An identity's score is its best template's. Queries are answered from the in-memory
        index (brought up to date from the change log when the gallery has changed since the last
        search): exactly (a few queries scan int8 codes and re-rank in float32, a batch is one
        float32 product; both give the float32 answer), or through the faiss index when
        ``index="faiss"``.

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
        queries = unit_vectors(check_embeddings(queries, "queries"))
        cache = self._load()
        if queries.shape[1] != cache.matrix.shape[1]:
            raise GalleryInputError(
                f"queries have dimension {queries.shape[1]}, gallery {self.location} holds {cache.matrix.shape[1]}-d "
                f"templates (queries shape {queries.shape})"
            )
        k = min(int(k), cache.identities)
        if self.index == "faiss":
            return cache.search_faiss(queries, k, self.nprobe)
        return cache.search_exact(queries, k)

    def _load(self) -> SearchIndex:
        """The in-memory index, brought up to date when the change counter has moved.

        Only the identities that the change log names since the index's generation are read
        again (a full load the first time, after many changes, or without a change log).
        """
        cache = self._cache
        if cache is not None and cache.generation == int(self._meta("generation")):
            return self._nonempty(cache)
        with self._reading() as conn:
            generation = int(self._meta("generation", conn))
            dim = int(self._meta("embedding_dim", conn) or 0)
            touched = None
            if cache is not None and cache.dim == dim and self._store.change_log:
                touched = {r[0] for r in conn.execute(
                    "SELECT DISTINCT identity_id FROM changes WHERE generation > ? AND generation <= ?",
                    (cache.generation, generation),
                )}
                if len(touched) > max(_FULL_RELOAD, cache.identities // 4):
                    touched = None
            if touched is None:
                cache = SearchIndex(dim)
                rows = conn.execute(
                    "SELECT i.id, t.id, i.name, t.embedding FROM identities i JOIN templates t ON t.identity_id = i.id"
                ).fetchall()
            else:
                ids = sorted(touched)
                rows = []
                for start in range(0, len(ids), 500):
                    part = ids[start:start + 500]
                    rows += conn.execute(
                        "SELECT i.id, t.id, i.name, t.embedding FROM identities i JOIN templates t "
                        f"ON t.identity_id = i.id WHERE i.id IN ({', '.join('?' * len(part))})", part,
                    ).fetchall()
        rows.sort(key=lambda r: (r[0], r[1]))
        matrix = _checked_matrix(rows, dim, self.location)
        owners = np.array([r[0] for r in rows], np.int64)
        cache.replace(generation, touched or (), owners, {r[0]: r[2] for r in rows},
                      unit_vectors(matrix) if rows else matrix)
        self._cache = cache
        return self._nonempty(cache)

    def _nonempty(self, cache: SearchIndex) -> SearchIndex:
        if cache.size == 0:
            raise EmptyGalleryError(f"gallery {self.location} is empty: enroll someone before searching")
        return cache


def open_gallery(path: str | os.PathLike, model_identity: dict | None = None, create: bool = True,
                 **kwargs: Any) -> Gallery:
    """A :class:`Gallery` (use it in a ``with`` block, or close it), created atomically if it does not exist.

    An existing gallery is opened as usual (it only ever changes by committed transactions). A
    new SQLite gallery is first built empty (schema and model identity) in a temporary file beside
    ``path`` and linked into place (atomic: a gallery that another process created meanwhile is
    used instead), then opened: so ``path`` never holds a half-made file, and a process killed in
    the middle of enrolling a folder keeps every identity it committed, as with an existing
    gallery (a rerun skips them). A failed first enrollment leaves the empty gallery. A gallery in
    a database server (a URL) is opened as usual: its database exists already.

    Args:
        path, model_identity, create, kwargs: as for :class:`Gallery`.

    Returns:
        The open gallery (closed on leaving a ``with`` block).
    """
    if not is_database(path) and not Path(path).exists() and create:
        _create_atomically(Path(path), model_identity, kwargs.get("timeout", 10.0))
    return Gallery(path, model_identity, create=create, **kwargs)


STALE_SECONDS = 600  # a temporary file of gallery creation older than this was left by a killed process


def _create_atomically(path: Path, model_identity: dict | None, timeout: float) -> None:
    """An empty gallery at ``path``, built in a temporary file and linked into place (unless one appeared)."""
    if not path.parent.is_dir():
        raise GalleryNotFoundError(f"cannot create gallery {path}: its folder does not exist")
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.creating*"):  # left by a process killed here
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_SECONDS:
                stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".creating", dir=path.parent)
    os.close(fd)
    try:
        Gallery(tmp, model_identity, timeout=timeout).close()  # the last connection checkpoints the WAL
        try:
            os.link(tmp, path)  # atomic, and never replaces a gallery that appeared meanwhile
        except FileExistsError:
            pass
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            Path(leftover).unlink(missing_ok=True)


# --- helpers -------------------------------------------------------------------------------------
def _checked_matrix(rows: list, dim: int, location: str) -> np.ndarray:
    """The ``(n, dim)`` templates of ``(identity id, template id, name, blob)`` rows; GalleryCorruptError
    when a blob has not ``dim`` values or a template is not finite or is all zeros (never searched silently)."""
    bad = sorted({r[2] for r in rows if len(r[3]) != 4 * dim})
    if bad:
        raise GalleryCorruptError(f"gallery {location} is damaged: templates of {', '.join(map(repr, bad[:5]))} do "
                                  f"not hold {dim} values; remove and re-enroll them")
    matrix = np.frombuffer(b"".join(r[3] for r in rows), dtype="<f4").reshape(len(rows), dim)
    broken = ~np.isfinite(matrix).all(axis=1)
    broken[~broken] = ~np.any(matrix[~broken] != 0, axis=1)
    if broken.any():
        names = sorted({rows[i][2] for i in np.flatnonzero(broken)})
        raise GalleryCorruptError(
            f"gallery {location} is damaged: {int(broken.sum())} templates of {', '.join(map(repr, names[:5]))} "
            "hold NaN, infinity or only zeros; remove and re-enroll them (kerascnn remove)")
    return matrix


def _identity_id_or_add(conn: Connection, name: str, created: str) -> int:
    """The id of identity ``name``, added (created ``created``) if it is not enrolled (writers are
    serialized, so no other transaction adds it meanwhile)."""
    row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO identities (name, created) VALUES (?, ?)", (name, created))
        row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
    return row[0]


def _refuse_confusable(conn: Connection, names: list[str], besides: int | None = None) -> None:
    """ConfusableNameError if a new name of ``names`` looks like an enrolled one (other than
    identity ``besides``) or like another of ``names`` (see :func:`check_not_confusable`)."""
    rows = conn.execute("SELECT id, name FROM identities").fetchall()
    check_not_confusable(names, [n for i, n in rows if i != besides])
