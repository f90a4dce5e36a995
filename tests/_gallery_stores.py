"""The stores the gallery tests run over, and a private throwaway PostgreSQL server.

The server runs from a temporary folder (``initdb``), listens on 127.0.0.1 only (plus a unix
socket in that folder) on a free port, with password (SCRAM) authentication over TCP, and is
removed at the end of the session. As root it runs as the ``postgres`` user (or ``nobody``):
PostgreSQL refuses to run as root. Without the server binaries or psycopg the tests that need
it skip and say how to install them; CI installs both (``.ci/run``), so there they run.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

USER, PASSWORD = "gallery_admin", "s3cret-for-tests"
INSTALL = ("install PostgreSQL's server (Debian/Ubuntu: apt-get install postgresql; macOS: brew install "
           "postgresql) and psycopg (pip install -e '.[postgres]') to run the PostgreSQL gallery tests")


def find_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """One private server: ``start``, ``stop``, and a fresh database per ``new_database``.

    Args:
        bin_dir: the folder of ``initdb`` and ``pg_ctl``.
        settings: server settings over the tests' (which skip every fsync: fast, not durable).
    """

    def __init__(self, bin_dir: Path, settings: dict[str, str] | None = None) -> None:
        self.bin_dir = bin_dir
        self.settings = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off",
                         "max_connections": "60", **(settings or {})}
        self.root = Path(tempfile.mkdtemp(prefix="kerascnn-pg-"))
        self.data = self.root / "data"
        self.run_as = None
        if os.geteuid() == 0:  # the server refuses root
            for name in ("postgres", "nobody"):
                try:
                    self.run_as = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self.run_as is None:
                raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user to run the server as")
            os.chown(self.root, self.run_as.pw_uid, self.run_as.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        self._own(pwfile)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile), "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8", "--no-sync")
        self.start()

    def _own(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.run_as is not None:
            kwargs = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
        return subprocess.run([str(self.bin_dir / tool), *args], capture_output=True, text=True, check=True,
                              cwd=self.root, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}, **kwargs)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} " + " ".join(
            f"-c {key}={value}" for key, value in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", options,
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres", user: str = USER, password: str = PASSWORD) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def admin(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True)

    def new_database(self) -> str:
        """The name of a new empty database."""
        name = f"g_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


_SERVER: list[PostgresServer] = []  # one server per test session, whichever module asks first


@pytest.fixture(scope="session")
def postgres_server():
    """The session's private PostgreSQL server (skips, saying how to install it, when unavailable).

    The modules that import this fixture get one definition each, so the server itself is kept
    here and removed when the interpreter exits.
    """
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip(f"psycopg is not installed: {INSTALL}")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL's initdb and pg_ctl were not found: {INSTALL}")
    if not _SERVER:
        _SERVER.append(PostgresServer(bin_dir))
        atexit.register(_SERVER[0].remove)
    return _SERVER[0]


# --- the stores under test ------------------------------------------------------------------------
STORES = ["sqlite", "postgresql"]


@pytest.fixture(params=STORES)
def store(request) -> str:
    """The store under test: each test that takes it runs once per store."""
    return request.param


@pytest.fixture
def new_location(store, tmp_path, request):
    """A factory: ``new_location(name)`` is where a new gallery of the store under test goes (a
    file of ``tmp_path``, or a new empty database of the private server)."""
    if store == "sqlite":
        yield lambda name="g": tmp_path / f"{name}.db"
        return
    server = request.getfixturevalue("postgres_server")
    made = []

    def make(name="g"):
        made.append(server.new_database())
        return server.url(made[-1])

    yield make
    for database in made:
        server.drop_database(database)


@pytest.fixture
def location(new_location):
    """The location of one new gallery of the store under test."""
    return new_location("g")


def raw_query(location, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of ``sql`` run on a gallery's database directly, bypassing the gallery (``?``
    placeholders; committed)."""
    if str(location).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(location), autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params or None)
            return cursor.fetchall() if cursor.description else []
    import sqlite3

    conn = sqlite3.connect(location, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
