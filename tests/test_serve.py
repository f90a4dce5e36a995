"""The face service in process (issue 18): scopes on every endpoint, answers equal to the library's,
JSON errors with stable types, upload limits, photos kept in memory, micro-batching, keys."""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import threading
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from _face_helpers import tiny_embedder  # noqa: E402
from _gallery_stores import location, new_location, postgres_server, store  # noqa: E402,F401
from kerascnn.errors import ApiKeyError, UnknownApiKeyError  # noqa: E402
from kerascnn.face.faces import Faces, compare  # noqa: E402
from kerascnn.face.gallery import Gallery  # noqa: E402
from kerascnn.face.gallery.keys import SCOPES, check_key, create_key, has_keys, list_keys, revoke_key  # noqa: E402
from kerascnn.face.model import save_calibration  # noqa: E402
from kerascnn.serve.app import create_app  # noqa: E402
from kerascnn.serve.batching import MicroBatcher  # noqa: E402
from kerascnn.serve.errors import ServiceError  # noqa: E402

# (method, path, the scope it needs); people/ghost is never enrolled
ENDPOINTS = [
    ("post", "/v1/people/ghost/faces", "enroll"),
    ("get", "/v1/people", "read"),
    ("get", "/v1/people/ghost", "read"),
    ("delete", "/v1/people/ghost", "admin"),
    ("post", "/v1/verify", "read"),
    ("post", "/v1/compare", "read"),
    ("post", "/v1/identify", "read"),
    ("get", "/v1/keys", "admin"),
    ("post", "/v1/keys", "admin"),
    ("delete", "/v1/keys/nokey", "admin"),
    ("get", "/metrics", "read"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A saved tiny embedder with a 1:1 calibration (threshold 0.5)."""
    import keras

    keras.utils.set_random_seed(11)
    path = tmp_path_factory.mktemp("serve_model") / "tiny.keras"
    tiny_embedder(32).save(path)
    save_calibration(path, {"metric": "cosine", "threshold": 0.5, "source": "a test value"})
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory, model):
    """A service on a new gallery holding one key per scope and a revoked one; its client and tokens."""
    gallery = tmp_path_factory.mktemp("serve") / "faces.db"
    with Gallery(gallery) as g:
        tokens = {scope: create_key(g, f"{scope} key", scope) for scope in SCOPES}
        tokens["revoked"] = create_key(g, "old", "admin")
        revoke_key(g, "old")
    app = create_app(gallery, model=model, detector="haar", max_request_bytes=300_000, max_images=3)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield {"client": client, "tokens": tokens, "gallery": gallery, "app": app}


def _auth(token: str | None) -> dict:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def _photo(orl_dir, person: str, i: int) -> bytes:
    return (orl_dir / person / f"{i}.pgm").read_bytes()


@pytest.mark.parametrize("caller", ["none", "bad", "revoked", *SCOPES])
@pytest.mark.parametrize("method, path, needs", ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_every_endpoint_refuses_callers_without_the_scope_it_needs(served, method, path, needs, caller):
    token = {"none": None, "bad": "kcnn_" + "x" * 43}.get(caller, served["tokens"].get(caller))
    response = getattr(served["client"], method)(path, headers=_auth(token))
    body = response.json() if response.headers["content-type"] == "application/json" else response.text
    if caller in ("none", "bad", "revoked"):
        assert (response.status_code, body["type"]) == (401, "Unauthorized")
    elif SCOPES.index(caller) < SCOPES.index(needs):
        assert (response.status_code, body["type"]) == (403, "Forbidden")
        assert needs in body["error"] and caller in body["error"]
    else:  # allowed: the request itself is then answered (here: a missing body, or nobody called ghost)
        assert response.status_code not in (401, 403), body


def test_the_key_header_works_too_and_health_needs_no_key(served):
    client = served["client"]
    assert client.get("/v1/people", headers={"X-API-Key": served["tokens"]["read"]}).status_code == 200
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/v1/identify" in client.get("/openapi.json").json()["paths"]


def test_answers_equal_the_librarys_and_removal_forgets_every_template(served, model, orl_dir):
    client, headers = served["client"], _auth(served["tokens"]["admin"])
    for person in ("s1", "s2"):
        files = [("photo", (f"{i}.pgm", _photo(orl_dir, person, i))) for i in (1, 2, 3)]
        response = client.post(f"/v1/people/{person}/faces", files=files, headers=headers)
        assert response.status_code == 200 and response.json()["enrolled"] == {person: 3}
    again = client.post("/v1/people/s1/faces", files=[("photo", ("1.pgm", _photo(orl_dir, "s1", 1)))], headers=headers)
    assert again.json()["skipped"] == 1 and again.json()["nothing_enrolled"] is True  # a retry adds nothing
    listed = client.get("/v1/people", headers=headers).json()["identities"]
    assert [(p["name"], p["templates"]) for p in listed] == [("s1", 3), ("s2", 3)]

    probe, other = orl_dir / "s1" / "9.pgm", orl_dir / "s3" / "9.pgm"
    identified = client.post("/v1/identify", files={"photo": ("9.pgm", probe.read_bytes())}, data={"top_k": "2"},
                             headers=headers).json()
    verified = client.post("/v1/verify", files={"photo": ("9.pgm", probe.read_bytes())}, data={"name": "s2"},
                           headers=headers).json()
    pair = {"a": ("a.pgm", probe.read_bytes()), "b": ("b.pgm", other.read_bytes())}
    compared = client.post("/v1/compare", files=pair, headers=headers).json()
    with Faces(Gallery(served["gallery"], read_only=True), model=str(model), detector="haar") as faces:
        expected = [faces.identify(probe, top_k=2).to_dict(), faces.verify("s2", probe).to_dict(),
                    compare(probe, other, pipeline=faces.pipeline).to_dict()]
    for got, want in zip([identified, verified, compared], expected):
        for key in want:
            if key not in ("face", "faces"):
                assert got[key] == pytest.approx(want[key], abs=1e-5) if key == "score" else got[key] == want[key], key
    assert identified["face"]["box"] == expected[0]["face"]["box"] and len(identified["candidates"]) == 2
    assert [f["box"] for f in compared["faces"]] == [f["box"] for f in expected[2]["faces"]]

    removed = client.delete("/v1/people/s2", headers=headers)
    assert removed.json() == {"name": "s2", "removed_templates": 3}
    assert client.get("/v1/people/s2", headers=headers).json()["type"] == "UnknownIdentityError"
    with sqlite3.connect(served["gallery"]) as db:
        assert db.execute("SELECT COUNT(*) FROM templates t JOIN identities i ON i.id = t.identity_id "
                          "WHERE i.name = 's2'").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM templates").fetchone()[0] == 3


def _bomb_png(side: int = 100_000) -> bytes:
    """A PNG header claiming ``side`` x ``side`` pixels (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize("case, status, kind, words", [
    ("not an image", 400, "ImageReadError", "not an image"),
    ("empty", 400, "ImageReadError", "empty"),
    ("bomb", 413, "ImageTooLargeError", "above the cap of 40,000,000 pixels"),
    ("huge top_k", 422, "InvalidParameter", "top_k must be an integer from 1 to 100"),
    ("nan threshold", 422, "InvalidParameter", "threshold must be a finite number"),
    ("fpir 2", 422, "InvalidParameter", "fpir must be between 0 and 1"),
    ("two photos", 422, "InvalidParameter", "must hold one photo, got 2"),
    ("too many photos", 413, "TooManyImages", "at most 3"),
    ("no face", 400, "NoFaceError", "no face"),
    ("not multipart", 400, "BadRequest", "multipart/form-data"),
])
def test_bad_input_is_refused_with_a_stable_type_and_no_traceback(served, orl_dir, case, status, kind, words):
    photo = ("p.pgm", _photo(orl_dir, "s5", 1))
    files, data = {"photo": photo}, {}
    if case in ("not an image", "empty", "bomb", "no face"):
        import cv2

        content = {"not an image": b"GIF? no", "empty": b"", "bomb": _bomb_png(),
                   "no face": cv2.imencode(".png", np.full((120, 120), 128, np.uint8))[1].tobytes()}[case]
        files = {"photo": ("p.png", content)}
    elif case == "huge top_k":
        data = {"top_k": "1000000"}
    elif case == "nan threshold":
        data = {"threshold": "nan"}
    elif case == "fpir 2":
        data = {"fpir": "2"}
    elif case in ("two photos", "too many photos"):
        files = [("photo", photo)] * (2 if case == "two photos" else 4)
    kwargs = {"content": b"photo=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}} \
        if case == "not multipart" else {"files": files, "data": data}
    headers = {**kwargs.pop("headers", {}), **_auth(served["tokens"]["read"])}
    response = served["client"].post("/v1/identify", headers=headers, **kwargs)
    body = response.json()
    assert (response.status_code, body["type"]) == (status, kind), body
    assert words in body["error"] and "Traceback" not in body["error"]


def test_odd_names_and_confusable_names_are_refused_as_the_cli_refuses_them(served, orl_dir):
    client, headers = served["client"], _auth(served["tokens"]["enroll"])
    files = {"photo": ("1.pgm", _photo(orl_dir, "s7", 1))}
    odd = client.post("/v1/people/bad%0Aname/faces", files=files, headers=headers)
    assert (odd.status_code, odd.json()["type"]) == (422, "GalleryInputError")
    assert "control character" in odd.json()["error"]
    assert client.post("/v1/people/paul/faces", files=files, headers=headers).status_code == 200
    confusable = client.post("/v1/people/раul/faces", files=files, headers=headers)  # Cyrillic р and а
    assert (confusable.status_code, confusable.json()["type"]) == (409, "ConfusableNameError")


def test_bodies_over_the_cap_are_refused_before_they_are_read(served):
    client, headers = served["client"], _auth(served["tokens"]["read"])
    declared = client.post("/v1/identify", content=b"x" * 400_000,
                           headers={**headers, "Content-Type": "multipart/form-data; boundary=b"})
    assert (declared.status_code, declared.json()["type"]) == (413, "RequestTooLarge")
    read = []

    def chunks():  # no Content-Length: the stream is cut once it passes the cap
        for _ in range(100):
            read.append(1)
            yield b"y" * 10_000

    streamed = client.post("/v1/identify", content=chunks(),
                           headers={**headers, "Content-Type": "multipart/form-data; boundary=b"})
    assert (streamed.status_code, streamed.json()["type"]) == (413, "RequestTooLarge")


def test_uploads_stay_in_memory(tmp_path, model, monkeypatch):
    """A 1.5 MB upload (above starlette's 1 MiB spool) is never rolled over to a temporary file."""
    import tempfile

    def no_disk(self):
        raise AssertionError("an upload was written to a temporary file")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", no_disk)
    app = create_app(tmp_path / "m.db", model=model, detector="haar", keys_required=False,
                     max_request_bytes=2_000_000)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/compare", files={"a": ("a.png", b"z" * 1_500_000), "b": ("b.png", b"z")})
    assert (response.status_code, response.json()["type"]) == (400, "ImageReadError")


def test_metrics_count_requests_errors_and_people(served):
    client, headers = served["client"], _auth(served["tokens"]["read"])
    client.get("/v1/people/nobody", headers=headers)
    text = client.get("/metrics", headers=headers).text
    assert 'kerascnn_requests_total{method="GET",route="/v1/people/{name}",status="404"}' in text
    assert 'kerascnn_errors_total{type="UnknownIdentityError"}' in text
    assert "kerascnn_gallery_people " in text and "kerascnn_model_calls_total " in text


def test_cors_is_closed_unless_origins_are_named(served, tmp_path, model):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    closed = served["client"].options("/v1/identify", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    app = create_app(tmp_path / "open.db", model=model, detector="haar", keys_required=False,
                     cors_origins=("https://door.example",))
    with TestClient(app) as client:
        allowed = client.options("/v1/identify", headers={**preflight, "Origin": "https://door.example"})
        refused = client.options("/v1/identify", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://door.example"
    assert "access-control-allow-origin" not in refused.headers


def test_a_server_without_any_key_refuses_to_start(tmp_path, model):
    with pytest.raises(ServiceError, match="holds no API key.*--insecure-no-auth"):
        create_app(tmp_path / "g.db", model=model, detector="haar")
    with Gallery(tmp_path / "g.db") as g:
        create_key(g, "k", "read")
        revoke_key(g, "k")
    with pytest.raises(ServiceError, match="holds no API key"):  # a revoked key is no key
        create_app(tmp_path / "g.db", model=model, detector="haar")


def test_keys_are_scoped_and_revocable_in_both_stores(location):
    with Gallery(location) as g:
        assert list_keys(g) == [] and not has_keys(g) and check_key(g, "kcnn_whatever") is None
        token = create_key(g, "door", "enroll")
        assert token.startswith("kcnn_") and len(token) > 40 and has_keys(g)
        key = check_key(g, token)
        assert (key.name, key.scope) == ("door", "enroll")
        assert key.allows("read") and key.allows("enroll") and not key.allows("admin")
        with pytest.raises(ApiKeyError, match="already has a key named 'door'"):
            create_key(g, "door", "read")
        with pytest.raises(ApiKeyError, match="unknown key scope 'root': expected one of read, enroll, admin"):
            create_key(g, "x", "root")
        with pytest.raises(ApiKeyError, match="key name is empty"):
            create_key(g, "", "read")
        with pytest.raises(UnknownApiKeyError, match="no key named 'nope'"):
            revoke_key(g, "nope")
        assert revoke_key(g, "door") is True and revoke_key(g, "door") is False
        assert check_key(g, token) is None and list_keys(g)[0].revoked is not None and not has_keys(g)


def test_only_a_keys_hash_is_stored(tmp_path):
    path = tmp_path / "k.db"
    with Gallery(path) as g:
        token = create_key(g, "door", "read")
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("k.db*"))
    assert token.encode() not in stored and hashlib.sha256(token.encode()).hexdigest().encode() in stored


def test_admin_keys_over_http(served):
    client, headers = served["client"], _auth(served["tokens"]["admin"])
    made = client.post("/v1/keys", data={"name": "kiosk", "scope": "read"}, files={"_": ("", b"")}, headers=headers)
    assert made.status_code == 200, made.json()
    token = made.json()["key"]
    assert client.get("/v1/people", headers=_auth(token)).status_code == 200
    names = [k["name"] for k in client.get("/v1/keys", headers=headers).json()["keys"]]
    assert "kiosk" in names and all("key" not in k for k in client.get("/v1/keys", headers=headers).json()["keys"])
    assert client.delete("/v1/keys/kiosk", headers=headers).json() == {"name": "kiosk", "revoked": True}
    assert client.get("/v1/people", headers=_auth(token)).status_code == 401


def test_the_micro_batcher_embeds_concurrent_callers_together():
    calls = []

    def embed(crops):
        calls.append(len(crops))
        return crops.reshape(len(crops), -1).astype(np.float32) * 2

    batcher = MicroBatcher(embed, wait_ms=50)
    inputs = [np.full((i % 3 + 1, 2, 2, 1), i, np.uint8) for i in range(12)]
    outputs = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def worker(i):
        barrier.wait()
        outputs[i] = batcher(inputs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert len(calls) < len(inputs) and sum(calls) == sum(len(x) for x in inputs)
    for x, y in zip(inputs, outputs):
        np.testing.assert_array_equal(y, x.reshape(len(x), -1) * 2)


def test_the_micro_batcher_passes_a_model_error_to_every_caller_and_lives_on():
    def embed(crops):
        if (crops == 7).any():
            raise RuntimeError("model broke")
        return crops.reshape(len(crops), -1).astype(np.float32)

    batcher = MicroBatcher(embed, wait_ms=0)
    with pytest.raises(RuntimeError, match="model broke"):
        batcher(np.full((1, 1), 7))
    np.testing.assert_array_equal(batcher(np.ones((2, 1))), np.ones((2, 1)))
    batcher.close()


def test_concurrent_identify_requests_share_model_calls_and_answer_as_alone(tmp_path, model, orl_dir):
    app = create_app(tmp_path / "b.db", model=model, detector="haar", keys_required=False, batch_wait_ms=200)
    probes = [_photo(orl_dir, f"s{k}", 10) for k in range(10, 18)]
    with TestClient(app) as client:
        client.post("/v1/people/a/faces", files=[("photo", ("1.pgm", _photo(orl_dir, "s10", 1)))])
        alone = [client.post("/v1/identify", files={"photo": ("p.pgm", p)}).json() for p in probes]
        before = app.state.pipeline.batcher.calls
        together = [None] * len(probes)
        barrier = threading.Barrier(len(probes))

        def worker(i):
            barrier.wait()
            together[i] = client.post("/v1/identify", files={"photo": ("p.pgm", probes[i])}).json()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(probes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls = app.state.pipeline.batcher.calls - before
    assert calls < len(probes)
    assert [r["score"] for r in together] == pytest.approx([r["score"] for r in alone], abs=1e-5)


@pytest.mark.parametrize("name", ["haar", "yunet"])
def test_a_detector_shared_by_threads_finds_each_threads_own_faces(name, orl_dir, lfw_dir):
    """Faces is shared by a server's threads: OpenCV's detectors keep state between calls (a race
    gave one thread another's boxes before they were locked)."""
    from kerascnn.data.folders import read_image
    from kerascnn.face.detect import get_detector

    detector = get_detector(name)
    images = [read_image(p) for p in sorted(lfw_dir.glob("A*/*_0001.jpg"))[:8]]
    alone = [[d.box for d in detector(image)] for image in images]
    together = [None] * len(images)
    barrier = threading.Barrier(len(images))

    def worker(i):
        barrier.wait()
        together[i] = [d.box for d in detector(images[i])]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
