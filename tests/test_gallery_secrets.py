"""A database password never shows: not in any command's output (text, --json, --verbose
tracebacks, logs), not in ``repr`` or messages, not in the exceptions a Python user catches; and a
libpq key=value string is a PostgreSQL location, never a SQLite file name."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest

from kerascnn.cli import EXIT_ERROR, main
from kerascnn.errors import GalleryError, GalleryInputError
from kerascnn.face.gallery import Gallery

from _gallery_stores import PASSWORD, USER, postgres_server  # noqa: F401 (fixture)
from _face_helpers import FakePipeline
from test_gallery import IDENTITY

WRONG = "Wr0ng-pw%40x"  # a wrong password, percent-encoded in URLs (its text must not show either)
BAD_SECRET = "S3/cr@t"  # a password with an unencoded / and @: a malformed URL
PLAIN_SECRET = "Pl41n-s3cr3t"  # the password of the locations malformed elsewhere
SECRETS = (PASSWORD, WRONG, WRONG.replace("%40", "@"), BAD_SECRET, "cr@t", PLAIN_SECRET)


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's: no Keras session here."""
    yield


def secrets_in(exc: BaseException, *secrets: str) -> list[str]:
    """The secrets found in ``exc`` or any exception chained to it (str, repr and args of each,
    through ``__cause__`` and ``__context__``)."""
    found, stack, seen = [], [exc], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        text = f"{e}{e!r}{e.args!r}"
        found += [s for s in secrets if s in text]
        stack += [e.__cause__, e.__context__]
    return found


def malformed_locations(port: int) -> list[str]:
    """Locations that do not parse, or that libpq would read with part of the password as the host
    or database; each holds ``BAD_SECRET`` or ``PLAIN_SECRET``."""
    return [
        f"postgresql://{USER}:{BAD_SECRET}@127.0.0.1:{port}/faces",  # / and @ unencoded
        f"POSTGRESQL://{USER}:{BAD_SECRET}@127.0.0.1:{port}/faces",
        f"postgresql://{USER}:{PLAIN_SECRET}%@127.0.0.1:{port}/faces",  # % without hex digits
        f"postgresql://{USER}:{PLAIN_SECRET}@[::1:{port}/faces",  # IPv6 host without its ]
        f"host=127.0.0.1 password='{BAD_SECRET}' dbname=faces bogus=1",  # an unknown key
        f"host=127.0.0.1 password='{PLAIN_SECRET} dbname=faces",  # a quote left open
    ]


@pytest.fixture
def database(postgres_server):
    """The name of a new empty database of the private server."""
    name = postgres_server.new_database()
    yield name
    postgres_server.drop_database(name)


def conninfo(server, database: str, password: str = PASSWORD) -> str:
    return f"host=127.0.0.1 port={server.port} user={USER} password='{password}' dbname={database}"


# --- locations through the Python API --------------------------------------------------------------
def test_every_form_of_location_opens_the_database_and_hides_the_password(postgres_server, database, tmp_path,
                                                                          monkeypatch):
    """A URL (scheme in any case) and a key=value string open the same database; ``location``,
    ``repr`` and messages show the password as ***; a key=value string creates no file."""
    monkeypatch.chdir(tmp_path)
    url = postgres_server.url(database)
    forms = [url, url.replace("postgresql://", "POSTGRESQL://"), url.replace("postgresql://", "Postgres://"),
             conninfo(postgres_server, database)]
    for i, location in enumerate(forms):
        with Gallery(location, IDENTITY) as g:
            g.enroll(f"p{i}", [[1.0] * 8])
            assert len(g.identities()) == i + 1
            shown = f"{g.location} {g!r}"
            assert "***" in shown and PASSWORD not in shown and "s3cret" not in shown
            with pytest.raises(GalleryError) as info:
                g.rename("nobody", "x")
            assert PASSWORD not in str(info.value) and g.location in str(info.value)
    assert "password=***" in g.location and f"dbname={database}" in g.location  # the key=value form stays so
    assert list(tmp_path.iterdir()) == []


def test_query_passwords_are_masked(postgres_server, database):
    url = (f"postgresql://{USER}@127.0.0.1:{postgres_server.port}/{database}"
           f"?password={PASSWORD}&options=-csearch_path%3Dpublic")
    with Gallery(url, IDENTITY) as g:
        assert g.location == (f"postgresql://{USER}@127.0.0.1:{postgres_server.port}/{database}"
                              "?password=***&options=-csearch_path%3Dpublic")


@pytest.mark.parametrize("index", range(6))
def test_malformed_locations_are_refused_without_quoting_them(postgres_server, tmp_path, monkeypatch, index):
    """A location libpq cannot parse, or would misread, is a GalleryInputError naming what is wrong;
    neither it nor any exception chained to it holds the password; no file is created."""
    monkeypatch.chdir(tmp_path)
    location = malformed_locations(postgres_server.port)[index]
    with pytest.raises(GalleryInputError, match="is not a valid PostgreSQL location") as info:
        Gallery(location, IDENTITY)
    assert secrets_in(info.value, *SECRETS) == []
    assert list(tmp_path.iterdir()) == []


def test_unknown_schemes_and_passwords_holding_a_scheme_show_no_password(tmp_path, monkeypatch):
    """An unknown scheme shows the scheme only; a key=value string whose password holds ``://``
    is not taken for a URL (whose "scheme" would be the text before it)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GalleryInputError, match=r"gallery mysql://\.\.\. has an unknown scheme") as info:
        Gallery(f"MySQL://kiosk:{PLAIN_SECRET}@db/faces", IDENTITY)
    assert secrets_in(info.value, *SECRETS) == []
    with pytest.raises(GalleryInputError, match=r"gallery password=\.\.\. is not a valid PostgreSQL location") as info:
        Gallery(f"password={PLAIN_SECRET}://x bogus=1", IDENTITY)
    assert secrets_in(info.value, *SECRETS, f"{PLAIN_SECRET}:") == [] and list(tmp_path.iterdir()) == []


def test_wrong_password_errors_hold_no_password(postgres_server, database, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for location in (postgres_server.url(database, password=WRONG), conninfo(postgres_server, database, WRONG)):
        with pytest.raises(GalleryError, match="refused the credentials") as info:
            Gallery(location, IDENTITY, timeout=2)
        assert secrets_in(info.value, *SECRETS) == []
    assert list(tmp_path.iterdir()) == []


def test_key_value_without_psycopg_is_refused_and_creates_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    with pytest.raises(GalleryError, match="needs psycopg 3") as info:
        Gallery(f"host=db.example.org password={BAD_SECRET} dbname=faces", IDENTITY)
    assert secrets_in(info.value, *SECRETS) == []
    code = main(["list", "--gallery", f"host=db.example.org password={BAD_SECRET} dbname=faces"])
    assert code == EXIT_ERROR and list(tmp_path.iterdir()) == []


# --- every gallery command --------------------------------------------------------------------------
class CliPipeline(FakePipeline):
    """The tests' fake face pipeline, built as the CLI builds a FacePipeline, with ``embed_one``."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.has_card = True  # built from the default model's name, as the CLI builds it: the card's calibration

    def embed_one(self, image):
        batch = self.embed_images([image], progress=False, strict=True)
        return batch.embeddings[0], SimpleNamespace(faces_found=1, to_dict=lambda: {"status": "ok"})


@pytest.mark.slow  # identify loads Keras (the model card's calibration)
def test_no_command_output_holds_the_password(postgres_server, database, tmp_path, monkeypatch, capsys, caplog):
    """Every gallery command, with and without --json and --verbose, succeeding and failing, on a
    URL (upper-case scheme) and a key=value string, and on wrong passwords and malformed locations:
    no output, log record or traceback holds a password; successes name the gallery with its
    password as ***."""
    monkeypatch.setattr("kerascnn.face.pipeline.FacePipeline", CliPipeline)
    caplog.set_level(logging.DEBUG)
    work = tmp_path / "work"
    for name, n in (("bob", 2), ("dave", 1)):
        (work / "faces" / name).mkdir(parents=True)
        for i in range(n):
            (work / "faces" / name / f"{i}.jpg").write_bytes(f"{name} {i}".encode())
    (work / "a.jpg").write_bytes(b"alice")
    (work / "bad.jpg").write_bytes(b"bad: no face")
    monkeypatch.chdir(work)
    before = sorted(p.name for p in work.iterdir())
    copy = postgres_server.new_database()
    url = postgres_server.url(database)
    good = [url.replace("postgresql://", "POSTGRESQL://"), conninfo(postgres_server, database)]
    bad = [postgres_server.url(database, password=WRONG), conninfo(postgres_server, database, WRONG),
           postgres_server.url("no_such_db"), *malformed_locations(postgres_server.port)]
    threshold = ["--threshold", "0.5"]
    outputs = []

    def run(*argv, ok=True):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        outputs.append((argv, out + err + caplog.text))
        caplog.clear()
        assert (code in (0, 1)) if ok else (code == EXIT_ERROR), (argv, code, out, err)
        return out + err

    try:
        for flags in ([], ["--json", "--verbose"]):  # text without traceback; JSON with the traceback
            for g in good:
                assert "***" in run("enroll", "--gallery", g, "alice", "a.jpg", *flags)
                assert "***" in run("enroll", "--gallery", g, "--folder", "faces", *flags)
                assert "***" in run("list", "--gallery", g, *flags) or not flags
                run("verify", "--gallery", g, "alice", "a.jpg", *threshold, *flags)
                run("identify", "--gallery", g, "a.jpg", *threshold, *flags)
                run("rename", "--gallery", g, "alice", "carol", *flags)
                run("remove", "--gallery", g, "carol", *flags)
                run("export", "--gallery", g, tmp_path / "out.json", "--force", *flags)
                run("import", "--gallery", postgres_server.url(copy), tmp_path / "out.json", *flags)
                # failures through a good location: the messages name the gallery
                run("remove", "--gallery", g, "nobody", *flags, ok=False)
                run("verify", "--gallery", g, "nobody", "a.jpg", *threshold, *flags, ok=False)
                run("enroll", "--gallery", g, "eve", "bad.jpg", *flags, ok=False)
            commands = (["enroll", "alice", "a.jpg"], ["enroll", "--folder", "faces"], ["list"], ["remove", "bob"],
                        ["rename", "bob", "x"], ["export", tmp_path / "x.json"], ["import", tmp_path / "out.json"],
                        ["verify", "bob", "a.jpg", *threshold], ["identify", "a.jpg", *threshold])
            for i, (command, *rest) in enumerate(commands):  # each command with two bad locations, each bad
                for b in (bad[i % len(bad)], bad[(i + 4 + len(flags)) % len(bad)]):  # location twice per mode
                    run(command, "--gallery", b, *rest, "--timeout", "2", *flags, ok=False)
    finally:
        postgres_server.drop_database(copy)
    leaks = [(argv, s) for argv, text in outputs for s in SECRETS if s in text]
    assert leaks == []
    assert len(outputs) == 2 * (2 * 12 + 2 * 9) and len(bad) == 9
    assert sorted(p.name for p in work.iterdir()) == before  # no file named after a location
