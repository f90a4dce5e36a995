"""The embedded store: one SQLite file (WAL journal, transactions, a busy timeout), owner-only.

Writers take SQLite's write lock at the start of each transaction (``BEGIN IMMEDIATE``) and wait
up to ``timeout`` seconds for each other; readers see a consistent snapshot and never wait (WAL).
A file that is not a SQLite database, or one of another application, is refused before SQLite
writes anything to it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from kerascnn.errors import (
    GalleryCorruptError,
    GalleryError,
    GalleryLockedError,
    GalleryNotFoundError,
    GalleryPermissionError,
)
from kerascnn.face.gallery.store import SCHEMA_TABLES, GalleryStore

_SQLITE_MAGIC = b"SQLite format 3\x00"
_DDL_V1 = [
    "CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL)",
    "CREATE TABLE templates (id INTEGER PRIMARY KEY, identity_id INTEGER NOT NULL REFERENCES identities(id), "
    "embedding BLOB NOT NULL, source_sha256 TEXT, created TEXT NOT NULL)",
    "CREATE UNIQUE INDEX templates_source ON templates(identity_id, source_sha256)",
]
_DDL_V2 = [
    "CREATE TABLE changes (generation INTEGER NOT NULL, identity_id INTEGER NOT NULL)",
    "CREATE INDEX changes_generation ON changes(generation)",
]


class SQLiteStore(GalleryStore):
    """A gallery in one SQLite file.

    Args:
        path: the gallery file.
        create: create the file (owner-only, 0600) if it does not exist.
        timeout: seconds a writer waits for another process's write lock.
        read_only: open read-only (also chosen when the file is not writable).

    Raises:
        GalleryNotFoundError: the file is missing and ``create`` is false, or its folder is missing.
        GalleryCorruptError: the file is a folder or not a SQLite database.
    """

    kind = "file"

    def __init__(self, path: str | os.PathLike, create: bool, timeout: float, read_only: bool) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.timeout = float(timeout)
        self._conn: sqlite3.Connection | None = None
        self._checked = False  # quick_check passed (done before the first write)
        created = create and not read_only and self._create_file()
        if not self.path.exists():
            raise GalleryNotFoundError(f"gallery {self.path} does not exist")
        if self.path.is_dir():
            raise GalleryCorruptError(f"gallery {self.path} is a folder, expected a gallery file")
        self._created = created
        mode = self.path.stat().st_mode
        self.read_only = read_only or not os.access(self.path, os.W_OK) or not mode & stat.S_IWUSR
        _check_magic(self.path)
        if self.read_only:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            if not os.access(self.path.parent, os.W_OK):  # SQLite could not create the -shm file there
                wal = Path(f"{self.path}-wal")
                if wal.exists() and wal.stat().st_size > 0:
                    raise GalleryLockedError(
                        f"gallery {self.path} is in a read-only folder and has writes not yet checkpointed "
                        f"({wal.name}): copy the gallery (with {wal.name}) to a writable folder to search it")
                uri += "&immutable=1"  # nothing else can be writing: read the file as it is, no -shm needed
            self._conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None,
                                         check_same_thread=False)
        else:
            # One connection per gallery, usable from any thread: callers serialise their calls
            # (kerascnn.face.Faces holds a lock around every gallery call).
            self._conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                         check_same_thread=False)
        with self._errors():
            self._conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

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

    # -- the store interface ----------------------------------------------------------------------
    def ddl(self, since: int = 0) -> list[str]:
        return (_DDL_V1 if since < 1 else []) + _DDL_V2

    def tables(self, conn: sqlite3.Connection) -> set[str]:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def initialize(self, create: bool, metadata: dict[str, str | None]) -> None:
        """Switch a gallery (or an empty file) to the WAL journal, then as :meth:`GalleryStore.initialize`."""
        with self._errors():
            tables = self.tables(self._open())
            usable = SCHEMA_TABLES <= tables or (not tables and create)
            if usable and not self._created:  # a gallery (or a file to become one) that we did not just make
                _check_ownership(self.path)
            if not self.read_only and usable:
                mode = self._retry_busy(lambda: self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
                if mode.lower() != "wal":
                    raise GalleryLockedError(f"gallery {self.path}: cannot switch to the WAL journal (got {mode})")
                self._conn.execute("PRAGMA synchronous = NORMAL")
        super().initialize(create, metadata)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        conn = self._open()
        with self._errors():
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        conn = self._open()
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not self._checked:  # never write into damaged pages: check once, under the write lock
                    self._quick_check(conn)
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        """GalleryCorruptError unless SQLite's ``PRAGMA quick_check`` finds the file sound."""
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise GalleryCorruptError(
                f"gallery {self.location} is damaged (SQLite quick_check: {'; '.join(problems)[:300]}); nothing was "
                "written: export what can be read, or restore a backup"
            )
        self._checked = True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- plumbing -----------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise GalleryError(f"gallery {self.location} is closed")
        return self._conn

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

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn SQLite errors into gallery errors that name the file."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise GalleryLockedError(
                    f"gallery {self.location} is locked by another process (waited {self.timeout:g} s): {text}"
                ) from exc
            if "readonly" in text or "read-only" in text:
                raise GalleryLockedError(f"gallery {self.location} is read-only: {text}") from exc
            raise GalleryCorruptError(f"gallery {self.location} cannot be read: {text}") from exc
        except sqlite3.DatabaseError as exc:
            raise GalleryCorruptError(f"gallery {self.location} is damaged or not a gallery: {exc}") from exc


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


def _check_ownership(path: Path) -> None:
    """GalleryPermissionError for an existing gallery file that is not a regular file of this user's
    with owner-only permissions (a file another user planted, or one others can read or change)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise GalleryCorruptError(f"gallery {path} is not a regular file: not a kerascnn gallery")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise GalleryPermissionError(
            f"gallery {path} is owned by another user (uid {info.st_uid}, you are uid {os.geteuid()}): a gallery "
            "must be your own file; copy it (kerascnn export/import) or ask its owner"
        )
    if os.name == "posix" and info.st_mode & 0o077:
        raise GalleryPermissionError(
            f"gallery {path} is readable or writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}): "
            f"run `chmod 600 {path}` if the file is yours and trusted"
        )
