"""The interface every gallery store implements (the store a location names: :mod:`~kerascnn.face.gallery.location`).

A store is a transactional database holding the tables ``metadata``, ``identities``,
``templates`` (:data:`SCHEMA_TABLES`, format version 1) and ``changes`` (version 2; see
:meth:`GalleryStore.ddl`). The gallery talks to it in a small portable SQL (``?``
placeholders, ``INSERT ... ON CONFLICT``, no vendor functions) through the connection that
:meth:`GalleryStore.reading` and :meth:`GalleryStore.writing` yield, so a new store is one module
with one subclass: its DDL, how it lists its tables, and its transactions. ``writing`` must admit
one writer at a time per gallery across every process (SQLite's ``BEGIN IMMEDIATE``, a
PostgreSQL advisory lock), and both must turn the database's errors into gallery errors that name
the gallery.
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any, Protocol

from kerascnn.errors import GalleryCorruptError, GalleryNotFoundError

FORMAT_VERSION = 2  # 2 added the change log (table changes); version 1 is upgraded when opened writable
SCHEMA_TABLES = frozenset({"metadata", "identities", "templates"})


class Connection(Protocol):
    """What the gallery calls on a store's connection (a DB-API subset with ``?`` placeholders)."""

    def execute(self, sql: str, params: Any = ...) -> Any: ...

    def executemany(self, sql: str, rows: Any) -> Any: ...


class GalleryStore(abc.ABC):
    """The database of one gallery.

    Attributes:
        location: how messages name the gallery (a file path, or a URL without its password).
        kind: what the gallery is, in messages (``"file"``, ``"database"``).
        read_only: true when the gallery can be searched and listed, not changed.
        timeout: seconds a writer waits for another writer.
    """

    location: str
    kind: str
    read_only: bool
    timeout: float
    change_log: bool = True  # false for a version 1 gallery opened read-only (no table changes)

    @abc.abstractmethod
    def ddl(self, since: int = 0) -> list[str]:
        """The statements that bring a schema of format version ``since`` (0: none) to
        :data:`FORMAT_VERSION`, in this database's dialect: version 1 is the tables ``metadata``,
        ``identities``, ``templates`` and the unique index ``templates(identity_id,
        source_sha256)``; version 2 adds ``changes(generation, identity_id)`` indexed by generation."""

    @abc.abstractmethod
    def tables(self, conn: Connection) -> set[str]:
        """The names of the tables in the gallery's database (or schema)."""

    @abc.abstractmethod
    def reading(self) -> contextlib.AbstractContextManager[Connection]:
        """A read transaction: one consistent snapshot."""

    @abc.abstractmethod
    def writing(self) -> contextlib.AbstractContextManager[Connection]:
        """A write transaction, the only one of this gallery at a time; committed when the block
        succeeds, rolled back when it raises."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection (idempotent)."""

    def initialize(self, create: bool, metadata: dict[str, str | None]) -> None:
        """Check the schema of an existing gallery, or create it in an empty database.

        Nothing is written to a database before it is known to be a gallery or empty.

        Args:
            create: write the schema into an empty database.
            metadata: the rows of ``metadata`` of a new gallery.

        Raises:
            GalleryNotFoundError: an empty database and ``create`` is false.
            GalleryCorruptError: a database of other tables, or a gallery of another format version.
        """
        with self.reading() as conn:
            tables = self.tables(conn)
        if not tables and create and not self.read_only:
            with self.writing() as conn:
                if not self.tables(conn):  # another process may have initialized it meanwhile
                    for statement in self.ddl():
                        conn.execute(statement)
                    conn.executemany("INSERT INTO metadata (key, value) VALUES (?, ?)", list(metadata.items()))
            with self.reading() as conn:
                tables = self.tables(conn)
        if not tables and not create:
            raise GalleryNotFoundError(
                f"gallery {self.location} does not exist: the {self.kind} has no gallery tables "
                "(enroll or import into it to create them)"
            )
        if not SCHEMA_TABLES <= tables:
            found = ", ".join(sorted(tables)) or "none"
            raise GalleryCorruptError(
                f"{self.location} is not a kerascnn gallery: expected tables {', '.join(sorted(SCHEMA_TABLES))}, "
                f"found {found} (the {self.kind} was left untouched)"
            )
        version = self._version()
        if version == "1" and not self.read_only:
            with self.writing() as conn:
                if self._version(conn) == "1":  # not upgraded by another process meanwhile
                    for statement in self.ddl(since=1):
                        conn.execute(statement)
                    conn.execute("UPDATE metadata SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))
            version = self._version()
        if version not in {str(v) for v in range(1, FORMAT_VERSION + 1)}:
            raise GalleryCorruptError(
                f"gallery {self.location} has format version {version}, this kerascnn reads versions 1 to "
                f"{FORMAT_VERSION}"
            )
        self.change_log = version == str(FORMAT_VERSION)

    def _version(self, conn: Connection | None = None) -> str | None:
        if conn is None:
            with self.reading() as conn:
                return self._version(conn)
        row = conn.execute("SELECT value FROM metadata WHERE key = ?", ("format_version",)).fetchone()
        return None if row is None else row[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r}, read_only={self.read_only})"
