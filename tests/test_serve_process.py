"""The face service as real processes (issue 18): uvicorn on loopback, killed with SIGKILL during
enrollments, replicas on one PostgreSQL gallery, and the ``serve`` / ``keys`` commands."""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from _face_helpers import tiny_embedder  # noqa: E402
from _serve_helpers import Server  # noqa: E402
from _gallery_stores import postgres_server  # noqa: E402,F401
from kerascnn.face.gallery import Gallery  # noqa: E402
from kerascnn.face.gallery.keys import create_key  # noqa: E402
from kerascnn.face.model import save_calibration  # noqa: E402
from kerascnn.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(11)
    path = tmp_path_factory.mktemp("serve_process") / "tiny.keras"
    tiny_embedder(32).save(path)
    save_calibration(path, {"metric": "cosine", "threshold": 0.5, "source": "a test value"})
    return path


def _enroll(client: httpx.Client, url: str, name: str, photos: list[Path], key: str) -> int:
    files = [("photo", (p.name, p.read_bytes())) for p in photos]
    try:
        return client.post(f"{url}/v1/people/{name}/faces", files=files,
                           headers={"Authorization": f"Bearer {key}"}).status_code
    except httpx.HTTPError:  # the server died before answering
        return 0


@pytest.mark.slow
def test_sigkill_during_enrollments_loses_nothing_answered_and_retries_add_no_duplicate(tmp_path, model, orl_dir):
    gallery = tmp_path / "g.db"
    with Gallery(gallery) as g:
        key = create_key(g, "enroller", "enroll")
    people = {f"s{k}": [orl_dir / f"s{k}" / f"{i}.pgm" for i in (1, 2)] for k in range(1, 41)}
    server = Server(gallery, model)
    answered: dict[str, int] = {}
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(4) as pool:
        killed = threading.Event()

        def enroll(name):
            answered[name] = _enroll(client, server.url, name, people[name], key)
            if sum(code == 200 for code in answered.values()) >= 8 and not killed.is_set():
                killed.set()
                server.process.send_signal(signal.SIGKILL)  # in the middle of the others

        list(pool.map(enroll, people))
    server.stop()
    ok = {name for name, code in answered.items() if code == 200}
    assert 8 <= len(ok) < len(people), answered  # killed mid-way
    with sqlite3.connect(gallery) as db:
        counts = dict(db.execute("SELECT i.name, COUNT(t.id) FROM identities i JOIN templates t "
                                 "ON t.identity_id = i.id GROUP BY i.name").fetchall())
    assert all(counts.get(name) == 2 for name in ok), counts  # every answered enrollment is there, whole

    server = Server(gallery, model)  # the client retries everything
    try:
        with httpx.Client(timeout=60) as client:
            retried = {name: _enroll(client, server.url, name, photos, key) for name, photos in people.items()}
    finally:
        server.stop()
    assert set(retried.values()) == {200}
    with sqlite3.connect(gallery) as db:
        counts = dict(db.execute("SELECT i.name, COUNT(t.id) FROM identities i JOIN templates t "
                                 "ON t.identity_id = i.id GROUP BY i.name").fetchall())
    assert counts == {name: 2 for name in people}  # no duplicate template: photos already enrolled are skipped


@pytest.mark.slow
def test_replicas_on_one_postgresql_gallery_see_each_others_enrollments(postgres_server, model, orl_dir):  # noqa: F811
    database = postgres_server.new_database()
    url = postgres_server.url(database)
    with Gallery(url) as g:
        key = create_key(g, "admin", "admin")
    headers = {"Authorization": f"Bearer {key}"}
    a = Server(url, model)
    b = Server(url, model)
    try:
        with httpx.Client(timeout=60) as client:
            probe = {"photo": ("10.pgm", (orl_dir / "s4" / "10.pgm").read_bytes())}
            assert client.post(f"{b.url}/v1/identify", files=probe, headers=headers).json()["type"] == \
                "EmptyGalleryError"
            assert _enroll(client, a.url, "s4", [orl_dir / "s4" / "1.pgm"], key) == 200
            found = client.post(f"{b.url}/v1/identify", files=probe, headers=headers).json()
            assert [c["name"] for c in found["candidates"]] == ["s4"]
            assert client.delete(f"{b.url}/v1/people/s4", headers=headers).status_code == 200
            assert client.get(f"{a.url}/v1/people", headers=headers).json()["identities"] == []
            assert client.delete(f"{a.url}/v1/keys/admin", headers=headers).status_code == 200
            assert client.get(f"{b.url}/v1/people", headers=headers).status_code == 401  # revoked everywhere
    finally:
        a.stop()
        b.stop()
        postgres_server.drop_database(database)
    assert key not in a.output() + b.output()  # keys never logged


def test_key_commands_print_a_key_once_list_and_revoke(tmp_path, capsys):
    gallery = str(tmp_path / "g.db")
    assert main(["keys", "create", "--gallery", gallery, "--scope", "enroll", "door"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("kcnn_") and "shown once" in out.err
    assert main(["keys", "list", "--gallery", gallery]) == 0
    listed = capsys.readouterr().out
    assert "door\tenroll\tcreated" in listed and token not in listed
    assert main(["keys", "create", "--gallery", gallery, "--scope", "admin", "door"]) == 2
    assert "already has a key named 'door'" in capsys.readouterr().err
    assert main(["keys", "revoke", "--gallery", gallery, "door"]) == 0
    assert capsys.readouterr().out.strip() == "revoked key 'door'"
    assert main(["keys", "revoke", "--gallery", gallery, "nope"]) == 2
    assert "has no key named 'nope'" in capsys.readouterr().err


def test_serve_refuses_to_start_without_keys_and_binds_no_auth_to_loopback_only(tmp_path, model, capsys):
    gallery = str(tmp_path / "g.db")
    assert main(["serve", "--gallery", gallery, "--insecure-no-auth", "--host", "0.0.0.0"]) == 2
    assert "--insecure-no-auth serves on loopback only" in capsys.readouterr().err
    assert main(["serve", "--gallery", gallery, "--model", str(model), "--detector", "haar"]) == 2
    assert "holds no API key" in capsys.readouterr().err


@pytest.mark.slow
def test_an_insecure_server_on_loopback_answers_without_a_key(tmp_path, model, orl_dir):
    server = Server(tmp_path / "g.db", model, "--insecure-no-auth")
    try:
        with httpx.Client(timeout=60) as client:
            assert _enroll(client, server.url, "s9", [orl_dir / "s9" / "1.pgm"], "none") == 200
            assert client.get(f"{server.url}/v1/people").json()["identities"][0]["name"] == "s9"
    finally:
        server.stop()
