"""The enrollment gallery: storage, search, export/import and every bad-input error."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from kerascnn.errors import (
    ConfusableNameError,
    EmptyGalleryError,
    GalleryCorruptError,
    GalleryInputError,
    GalleryLockedError,
    GalleryModelMismatchError,
    GalleryNotFoundError,
    UnknownIdentityError,
)
from kerascnn.face.gallery import Gallery, model_identity
from kerascnn.face.gallery.records import REQUIRED_IDENTITY_FIELDS

from _gallery_stores import location, new_location, postgres_server, raw_query, store  # noqa: F401 (fixtures)

DIM = 8
IDENTITY = {"name": "fake", "input_size": [16, 16, 3], "embedding_dim": DIM, "weights_sha256": "0" * 64}
EVIL = "Robert'); DROP TABLE identities;--"


def unit(rng, n, d=DIM):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's: these tests seed their own generators and need no Keras session
    reset (its garbage collection costs about a second per test)."""
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def gallery(location):
    """A new gallery of each store."""
    with Gallery(location, IDENTITY) as g:
        yield g


def at(gallery) -> str:
    """A regex matching the gallery's name in messages."""
    return re.escape(gallery.location)


def reference_search(templates: dict[str, np.ndarray], queries: np.ndarray, k: int):
    """Slow obvious reference: per identity the best cosine similarity over its templates."""
    names, scores = [], []
    for q in queries:
        per = {}
        for name, ts in templates.items():
            per[name] = max(float(np.dot(q, t) / (np.linalg.norm(q) * np.linalg.norm(t))) for t in ts)
        ranked = sorted(per.items(), key=lambda kv: -kv[1])[:k]
        names.append([n for n, _ in ranked])
        scores.append([s for _, s in ranked])
    return names, np.array(scores)


# --- model identity ---------------------------------------------------------------------------
def test_model_identity_fields_and_fingerprint():
    import keras

    def build():
        inputs = keras.Input((12, 12, 3))
        x = keras.layers.GlobalAveragePooling2D()(inputs)
        return keras.Model(inputs, keras.layers.Dense(5, name="emb")(x), name="tiny")

    a, b = build(), build()
    ida = model_identity(a)
    assert ida["name"] == "tiny" and ida["input_size"] == [12, 12, 3] and ida["embedding_dim"] == 5
    expected = hashlib.sha256(b"".join(np.asarray(w.numpy()).tobytes() for w in a.weights)).hexdigest()
    assert ida["weights_sha256"] == expected
    assert model_identity(b)["weights_sha256"] != ida["weights_sha256"]  # other random init
    b.set_weights(a.get_weights())
    assert model_identity(b) == ida


def test_model_identity_covers_template_options_and_input_scaling(tmp_path, rng):
    import keras

    def build(scale):
        inputs = keras.Input((12, 12, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(scale)(inputs))
        return keras.Model(inputs, keras.layers.Dense(DIM, name="emb", kernel_initializer="ones")(x), name="tiny")

    a, b = build(1 / 255), build(1 / 127.5)
    ida, idb = model_identity(a), model_identity(b)
    assert ida["weights_sha256"] == idb["weights_sha256"] and ida["options_sha256"] != idb["options_sha256"]
    flipped = model_identity(a, {"flip": "all"})
    assert model_identity(a, {}) == ida and flipped["options_sha256"] != ida["options_sha256"]
    with Gallery(tmp_path / "g.db", ida) as g:
        g.enroll("alice", unit(rng, 1))
        with pytest.raises(GalleryModelMismatchError, match="differs in options_sha256"):
            g.search(unit(rng, 1), model_identity=flipped)
    # a gallery made before options were recorded: its templates' options are unknown, not compared
    legacy = {k: ida[k] for k in REQUIRED_IDENTITY_FIELDS}
    with Gallery(tmp_path / "old.db", legacy) as g:
        g.enroll("alice", unit(rng, 1))
    with Gallery(tmp_path / "old.db", flipped) as g:
        assert g.search(unit(rng, 1))[0].tolist() == [["alice"]] and g.model_identity == legacy


# --- file, schema, permissions ----------------------------------------------------------------
def test_created_owner_only_in_wal_mode_with_metadata(tmp_path, rng):
    path = tmp_path / "g.db"
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", unit(rng, 2))
        assert g.model_identity == IDENTITY and g.embedding_dim == DIM
        for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(con.execute("SELECT key, value FROM metadata"))
    assert meta["format_version"] == "2" and json.loads(meta["model_identity"]) == IDENTITY
    blob, source = con.execute("SELECT embedding, source_sha256 FROM templates").fetchone()
    assert isinstance(blob, bytes) and len(blob) == DIM * 4 and source is None  # raw float32, no pickle
    con.close()


def test_missing_gallery_without_create(tmp_path):
    with pytest.raises(GalleryNotFoundError, match=r"gallery .*nope\.db does not exist"):
        Gallery(tmp_path / "nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(GalleryNotFoundError, match="its folder does not exist"):
        Gallery(tmp_path / "no" / "dir" / "g.db")


def test_random_bytes_file_is_corrupt_and_untouched(tmp_path):
    path = tmp_path / "g.db"
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    with pytest.raises(GalleryCorruptError, match=r"g\.db is not a kerascnn gallery: not a SQLite database"):
        Gallery(path, IDENTITY)
    assert path.read_bytes() == data


def test_damaged_sqlite_file_is_corrupt_and_untouched(tmp_path, rng):
    path = tmp_path / "g.db"
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", unit(rng, 2))
    data = bytearray(path.read_bytes())
    data[100:len(data)] = b"\xff" * (len(data) - 100)  # keep the magic, wreck the rest
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryCorruptError, match="g.db"):
        with Gallery(path, IDENTITY) as g:
            g.identities()
    assert path.read_bytes() == bytes(data)


def test_foreign_sqlite_schema_is_corrupt_and_untouched(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER, email TEXT)")
    con.execute("INSERT INTO users VALUES (1, 'a@b.c')")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(GalleryCorruptError, match=r"not a kerascnn gallery: expected tables .*found users"):
        Gallery(path, IDENTITY)
    assert path.read_bytes() == before


def test_newer_format_version_refused(location):
    Gallery(location, IDENTITY).close()
    raw_query(location, "UPDATE metadata SET value = '99' WHERE key = 'format_version'")
    with pytest.raises(GalleryCorruptError, match="format version 99, this kerascnn reads versions 1 to 2"):
        Gallery(location)
    assert raw_query(location, "SELECT value FROM metadata WHERE key = 'format_version'") == [("99",)]


def test_foreign_postgres_database_is_refused_and_untouched(postgres_server):
    database = postgres_server.new_database()
    url = postgres_server.url(database)
    raw_query(url, "CREATE TABLE users (id INTEGER, email TEXT)")
    raw_query(url, "INSERT INTO users VALUES (1, 'a@b.c')")
    with pytest.raises(GalleryCorruptError, match=r"is not a kerascnn gallery: expected tables .*found users "
                                                  r"\(the database was left untouched\)"):
        Gallery(url, IDENTITY)
    tables = raw_query(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert tables == [("users",)] and raw_query(url, "SELECT * FROM users") == [(1, "a@b.c")]
    postgres_server.drop_database(database)


def test_postgres_holds_raw_float32_and_the_model(postgres_server, rng):
    database = postgres_server.new_database()
    url = postgres_server.url(database)
    with Gallery(url, IDENTITY) as g:
        g.enroll("alice", unit(rng, 2), sources=[b"a", None])
        assert "s3cret" not in g.location and "***" in g.location and "s3cret" not in repr(g)
    meta = dict(raw_query(url, "SELECT key, value FROM metadata"))
    assert meta["format_version"] == "2" and json.loads(meta["model_identity"]) == IDENTITY
    rows = raw_query(url, "SELECT embedding, source_sha256 FROM templates ORDER BY id")
    assert [len(bytes(b)) for b, _ in rows] == [DIM * 4] * 2  # raw float32, no pickle
    assert rows[0][1] == hashlib.sha256(b"a").hexdigest() and rows[1][1] is None
    postgres_server.drop_database(database)


def test_empty_database_without_create_is_not_found(location):
    if isinstance(location, Path):
        location.touch()
    with pytest.raises(GalleryNotFoundError, match="has no gallery tables"):
        Gallery(location, create=False)


# --- enroll, list, templates, remove, rename --------------------------------------------------
def test_enroll_several_templates_and_read_back(gallery, rng, tmp_path):
    a, b = unit(rng, 3), unit(rng, 1)[0]  # (n, d) and (d,)
    img = tmp_path / "x.jpg"
    img.write_bytes(b"image bytes")
    assert gallery.enroll("alice", a, sources=[img, b"raw", None]) == 3
    assert gallery.enroll("bob", b.astype(np.float64)) == 1
    assert gallery.enroll("alice", a[:2], sources=[img, b"raw"]) == 0  # same sources: nothing new
    infos = gallery.list()
    assert [(i.name, i.templates) for i in infos] == [("alice", 3), ("bob", 1)]
    assert all(i.created.endswith("+00:00") for i in infos)
    np.testing.assert_array_equal(gallery.templates("alice"), a)
    np.testing.assert_array_equal(gallery.templates("bob"), b[None])
    assert len(gallery) == 4 and "alice" in gallery and "carol" not in gallery
    sources = [r[0] for r in raw_query(gallery.path, "SELECT source_sha256 FROM templates ORDER BY id")]
    assert sources[:3] == [hashlib.sha256(b"image bytes").hexdigest(), hashlib.sha256(b"raw").hexdigest(), None]


def test_names_are_data_not_sql(gallery, rng):
    names = [EVIL, "Zoë Ñúñez", 'quote " and \\ backslash', "x' OR '1'='1"]
    for name in names:
        gallery.enroll(name, unit(rng, 1))
    assert sorted(i.name for i in gallery.identities()) == sorted(names)
    gallery.rename(EVIL, EVIL + "2")
    assert gallery.templates(EVIL + "2").shape == (1, DIM)
    assert gallery.remove("x' OR '1'='1") == 1
    assert len(gallery.identities()) == 3  # nothing else removed; tables intact


def test_remove_and_rename(gallery, rng):
    gallery.enroll("alice", unit(rng, 2))
    gallery.enroll("bob", unit(rng, 1))
    gallery.rename("alice", "alicia")
    assert [i.name for i in gallery.identities()] == ["alicia", "bob"]
    with pytest.raises(GalleryInputError, match="cannot rename 'bob' to 'alicia': 'alicia' is already enrolled"):
        gallery.rename("bob", "alicia")
    assert gallery.remove("alicia") == 2
    assert [i.name for i in gallery.identities()] == ["bob"] and len(gallery) == 1


@pytest.mark.parametrize("call", ["remove", "rename", "templates"])
def test_unknown_identity(gallery, rng, call):
    gallery.enroll("alice", unit(rng, 1))
    args = ("carol", "dave") if call == "rename" else ("carol",)
    with pytest.raises(UnknownIdentityError, match=rf"^'carol' is not enrolled in gallery {at(gallery)}$"):
        getattr(gallery, call)(*args)
    assert [i.name for i in gallery.identities()] == ["alice"]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, DIM + 1), np.float32) + 1, rf"embeddings have dimension {DIM + 1}, gallery .* holds {DIM}-d"),
    (np.ones((2, DIM), np.int64), r"must be floating point, got dtype int64 with shape \(2, 8\)"),
    (np.ones((1, 2, DIM), np.float32), r"must have shape \(n, d\) or \(d,\) .*got shape \(1, 2, 8\)"),
    (np.zeros((0, DIM), np.float32), r"got shape \(0, 8\)"),
    (np.array([[np.nan] * DIM, [1.0] * DIM], np.float32), r"of shape \(2, 8\) contain NaN or infinity \(rows \[0\]\)"),
    (np.zeros((1, DIM), np.float32), "all-zero vector"),
    (["a"] * DIM, "must be floating point, got dtype <U1"),
])
def test_bad_embeddings_rejected_nothing_written(gallery, rng, bad, message):
    gallery.enroll("alice", unit(rng, 1))
    with pytest.raises(GalleryInputError, match=message):
        gallery.enroll("alice", bad)
    with pytest.raises(ValueError):  # the built-in a user would catch
        gallery.enroll("bob", bad)
    assert [(i.name, i.templates) for i in gallery.identities()] == [("alice", 1)]


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "x" * 257, 42, None])
def test_bad_names(gallery, rng, name):
    with pytest.raises(GalleryInputError, match="identity name"):
        gallery.enroll(name, unit(rng, 1))
    assert gallery.identities() == []


CYRILLIC_ALICE = "\u0430lice"  # "аlice", its first letter a Cyrillic а


def test_confusable_names_are_refused_unless_allowed(gallery, rng, tmp_path, new_location):
    """A new name with the UTS #39 skeleton of an enrolled one is refused by enroll, rename and
    import, naming both and the first differing code points; allow_confusable overrides."""
    gallery.enroll("alice", unit(rng, 1))
    gallery.enroll("Alice", unit(rng, 1))  # another letter case is another name
    gallery.enroll("carol", unit(rng, 1))
    gallery.rename("carol", "caroI")  # looks only like itself: no conflict
    message = (r"^identity name 'аlice' looks like the enrolled 'alice' \(the same Unicode confusables skeleton\): "
               r"they differ first at character 1, U\+0430 \(CYRILLIC SMALL LETTER A\) against U\+0061 \(LATIN "
               r"SMALL LETTER A\); pass --allow-confusable \(allow_confusable=True\) to enroll both$")
    with pytest.raises(ConfusableNameError, match=message):
        gallery.enroll(CYRILLIC_ALICE, unit(rng, 1))
    with pytest.raises(ConfusableNameError, match="'aIice' looks like the enrolled 'alice'.*U\\+0049 .*U\\+006C "):
        gallery.rename("Alice", "aIice")  # a capital I for the l
    assert [(i.name, i.templates) for i in gallery.identities()] == [("Alice", 1), ("alice", 1), ("caroI", 1)]

    gallery.enroll(CYRILLIC_ALICE, unit(rng, 1), allow_confusable=True)
    gallery.enroll("alice", unit(rng, 1))  # an enrolled name still takes templates
    gallery.rename("Alice", "aIice", allow_confusable=True)
    assert [i.name for i in gallery.identities()] == ["aIice", "alice", "caroI", CYRILLIC_ALICE]
    gallery.export(tmp_path / "e.json")
    with Gallery(new_location("empty"), IDENTITY) as empty:  # names of the file that look like each other
        with pytest.raises(ConfusableNameError, match="^identity name 'alice' looks like the new 'aIice'"):
            empty.import_(tmp_path / "e.json")
        assert empty.identities() == []
    with Gallery(new_location("other"), IDENTITY) as other:
        other.enroll("alice", unit(rng, 1))
        with pytest.raises(ConfusableNameError, match="'aIice' looks like the enrolled 'alice'"):
            other.import_(tmp_path / "e.json")
        assert [(i.name, i.templates) for i in other.identities()] == [("alice", 1)]  # nothing imported
        assert other.import_(tmp_path / "e.json", allow_confusable=True) == 5
        assert [i.name for i in other.identities()] == ["aIice", "alice", "caroI", CYRILLIC_ALICE]


def test_sources_count_must_match(gallery, rng):
    with pytest.raises(GalleryInputError, match="got 1 sources for 2 embeddings"):
        gallery.enroll("alice", unit(rng, 2), sources=[b"x"])


def test_model_mismatch_names_the_field(location, rng):
    path = location
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", unit(rng, 1))
    other = dict(IDENTITY, weights_sha256="f" * 64)
    with pytest.raises(GalleryModelMismatchError, match=r"differs in weights_sha256: gallery \"0000"):
        Gallery(path, other)
    with Gallery(path) as g:  # no model given: listing works
        assert len(g.identities()) == 1
        with pytest.raises(GalleryModelMismatchError, match="differs in embedding_dim: gallery 8, model 4"):
            g.enroll("bob", unit(rng, 1, 4), model_identity=dict(IDENTITY, embedding_dim=4))
        with pytest.raises(GalleryModelMismatchError, match="differs in name"):
            g.search(unit(rng, 1), model_identity=dict(IDENTITY, name="other"))
        assert len(g) == 1


def test_gallery_without_model_adopts_first_model(location, rng):
    with Gallery(location) as g:
        assert g.model_identity is None and g.embedding_dim is None
        g.enroll("alice", unit(rng, 1), model_identity=IDENTITY)
        assert g.model_identity == IDENTITY and g.embedding_dim == DIM


# --- search -----------------------------------------------------------------------------------------
def test_search_matches_slow_reference(gallery, rng):
    people = {f"p{i}": unit(rng, int(rng.integers(1, 4))) for i in range(7)}
    for name, ts in people.items():
        gallery.enroll(name, ts * rng.uniform(0.5, 2.0))  # scale must not matter: cosine
    queries = rng.normal(size=(5, DIM)).astype(np.float32)
    queries[0] = people["p3"][0] * 3
    for k in (1, 3, 7, 50):
        names, scores = gallery.search(queries, k=k)
        ref_names, ref_scores = reference_search(people, queries, k)
        assert names.shape == scores.shape == (5, min(k, 7)) and scores.dtype == np.float32
        assert names.tolist() == ref_names
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert gallery.search(queries[0], k=1)[0].tolist() == [["p3"]]
    # batched answers equal one-by-one answers
    one_by_one = np.concatenate([gallery.search(q[None], k=3)[1] for q in queries])
    np.testing.assert_allclose(gallery.search(queries, k=3)[1], one_by_one, atol=1e-6)


def test_search_in_chunks_equals_whole(gallery, rng, monkeypatch):
    import kerascnn.face.gallery.index as module

    for i in range(5):
        gallery.enroll(f"p{i}", unit(rng, 2))
    queries = unit(rng, 9)
    whole = gallery.search(queries, k=2)
    monkeypatch.setattr(module, "_SEARCH_CHUNK", 25)  # 2 queries x 10 templates per product
    gallery._cache = None
    chunked = gallery.search(queries, k=2)
    assert chunked[0].tolist() == whole[0].tolist()
    np.testing.assert_allclose(chunked[1], whole[1], atol=1e-6)


def test_search_matrix_reloads_when_file_changes(location, rng):
    path = location
    with Gallery(path, IDENTITY) as reader, Gallery(path, IDENTITY) as writer:
        a, b = unit(rng, 1), unit(rng, 1)
        writer.enroll("alice", a)
        assert reader.search(b)[0].tolist() == [["alice"]]
        cache = reader._cache
        reader.search(b)
        assert reader._cache is cache  # unchanged file: no reload
        writer.enroll("bob", b)  # another connection writes
        assert reader.search(b)[0].tolist() == [["bob"]]
        reader.remove("bob")  # own write
        assert reader.search(b)[0].tolist() == [["alice"]]
        writer.rename("alice", "ann")
        assert reader.search(a)[0].tolist() == [["ann"]]


def test_search_errors(gallery, rng):
    with pytest.raises(EmptyGalleryError, match=rf"gallery {at(gallery)} is empty: enroll someone before searching"):
        gallery.search(unit(rng, 1))
    gallery.enroll("alice", unit(rng, 1))
    with pytest.raises(GalleryInputError, match=r"queries have dimension 4, gallery .* holds 8-d templates \(queries shape \(2, 4\)\)"):
        gallery.search(unit(rng, 2, 4))
    with pytest.raises(GalleryInputError, match=r"queries of shape \(1, 8\) contain NaN"):
        gallery.search(np.full(DIM, np.nan))
    with pytest.raises(GalleryInputError, match="k must be a positive integer, got 0"):
        gallery.search(unit(rng, 1), k=0)
    gallery.remove("alice")
    with pytest.raises(EmptyGalleryError):
        gallery.search(unit(rng, 1))


def test_faiss_index_same_api(location, rng):
    pytest.importorskip("faiss")
    path = location
    with Gallery(path, IDENTITY) as exact:
        for i in range(12):
            exact.enroll(f"p{i}", unit(rng, 2))
        queries = unit(rng, 6)
        with Gallery(path, IDENTITY, index="faiss") as approx:
            names, scores = approx.search(queries, k=3)
        ref_names, ref_scores = exact.search(queries, k=3)
    assert names.tolist() == ref_names.tolist()
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


@pytest.mark.slow
def test_faiss_inverted_lists_recall(tmp_path, rng):
    pytest.importorskip("faiss")
    n = 12_000  # above the size where the inverted-list index is used
    templates = unit(rng, n, 32)
    with Gallery(tmp_path / "g.db", index="faiss") as g:
        g.import_(_export_file(tmp_path, templates))
        queries = templates[:200] + 0.05 * unit(rng, 200, 32)
        names, _ = g.search(queries, k=1)
        assert type(g._cache._faiss).__name__ == "IndexIVFFlat"
    recall = np.mean(names[:, 0] == np.array([f"p{i}" for i in range(200)], dtype=object))
    assert recall >= 0.9


def _export_file(tmp_path, templates):
    """A JSON export with one identity per template (a fast way to fill a gallery)."""
    path = tmp_path / "many.npz"
    n, d = templates.shape
    identity = {"name": "fake", "input_size": [16, 16, 3], "embedding_dim": d, "weights_sha256": "0" * 64}
    meta = {"format": "kerascnn-gallery", "version": 1, "model_identity": identity, "embedding_dim": d,
            "created": "2026-01-01T00:00:00+00:00", "empty_identities": []}
    np.savez(path, metadata=np.array(json.dumps(meta)), names=np.array([f"p{i}" for i in range(n)]),
             identity_created=np.array(["t"] * n), embeddings=templates, sources=np.array([""] * n),
             created=np.array(["t"] * n))
    return path


# --- locked and read-only ---------------------------------------------------------------------------
def test_locked_by_another_writer(location, rng):
    path = location
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", unit(rng, 1))
    if isinstance(path, Path):
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock
    else:
        import psycopg

        holder = psycopg.connect(path, autocommit=True)
        holder.execute("BEGIN")  # another process's write lock: the gallery's advisory lock
        holder.execute("SELECT pg_advisory_xact_lock(hashtext('kerascnn-gallery:' || current_schema()))")
    try:
        with Gallery(path, IDENTITY, timeout=0.2) as g:
            with pytest.raises(GalleryLockedError, match=rf"{at(g)} is locked by another process \(waited 0.2 s\)"):
                g.enroll("bob", unit(rng, 1))
            assert [i.name for i in g.identities()] == ["alice"]  # reads still work
            assert g.search(unit(rng, 1))[0].tolist() == [["alice"]]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Gallery(path, IDENTITY) as g:
        assert g.enroll("bob", unit(rng, 1)) == 1


def test_read_only_gallery_refuses_writes(location, rng):
    with Gallery(location, IDENTITY) as g:
        g.enroll("alice", unit(rng, 2))
    with Gallery(location, IDENTITY, read_only=True, create=False) as g:
        assert g.search(unit(rng, 1))[0].tolist() == [["alice"]]
        with pytest.raises(GalleryLockedError, match=rf"{at(g)} is read-only: it can be searched and listed"):
            g.remove("alice")
    with Gallery(location, create=False) as g:
        assert [(i.name, i.templates) for i in g.identities()] == [("alice", 2)]


def test_read_only_file_reads_but_refuses_writes(tmp_path, rng):
    path = tmp_path / "g.db"
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", unit(rng, 2))
    os.chmod(path, 0o400)
    try:
        before = path.read_bytes()
        with Gallery(path, IDENTITY) as g:
            assert g.read_only
            assert [i.name for i in g.identities()] == ["alice"]
            assert g.search(unit(rng, 1))[0].tolist() == [["alice"]]
            for call, args in [("enroll", ("bob", unit(rng, 1))), ("remove", ("alice",)),
                               ("rename", ("alice", "ann"))]:
                with pytest.raises(GalleryLockedError, match=r"g\.db is read-only: it can be searched and listed"):
                    getattr(g, call)(*args)
        assert path.read_bytes() == before
    finally:
        os.chmod(path, 0o600)


# --- export and import ------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".json", ".npz"])
def test_export_import_round_trip(gallery, rng, tmp_path, new_location, ext):
    gallery.enroll(EVIL, unit(rng, 2), sources=[b"a", b"b"])
    gallery.enroll("bob", unit(rng, 1))
    out = tmp_path / f"export{ext}"
    assert gallery.export(out) == 3
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    if ext == ".npz":
        with np.load(out, allow_pickle=False) as data:  # loads without pickle
            assert data["embeddings"].dtype == np.float32 and data["embeddings"].shape == (3, DIM)
    with Gallery(new_location("copy")) as copy:
        assert copy.import_(out) == 3
        assert copy.import_(out) == 0  # importing twice adds nothing
        assert copy.model_identity == IDENTITY
        assert [(i.name, i.templates, i.created) for i in copy.identities()] == \
            [(i.name, i.templates, i.created) for i in gallery.identities()]
        for name in (EVIL, "bob"):
            np.testing.assert_array_equal(copy.templates(name), gallery.templates(name))
        copy.export(tmp_path / f"again{ext}")
    if ext == ".json":
        again, first = json.loads((tmp_path / "again.json").read_text()), json.loads(out.read_text())
        assert again.pop("created") >= first.pop("created")  # each gallery's own creation time
        assert again == first


def test_import_refuses_other_model_and_bad_files(gallery, rng, tmp_path, new_location):
    with Gallery(new_location("other"), dict(IDENTITY, name="other")) as other:
        other.enroll("zed", unit(rng, 1))
        other.export(tmp_path / "other.json")
    with pytest.raises(GalleryModelMismatchError, match="differs in name"):
        gallery.import_(tmp_path / "other.json")
    (tmp_path / "junk.npz").write_bytes(b"\x00" * 100)
    with pytest.raises(GalleryCorruptError, match=r"junk\.npz is not a kerascnn gallery export"):
        gallery.import_(tmp_path / "junk.npz")
    (tmp_path / "foreign.json").write_text(json.dumps({"people": []}))
    with pytest.raises(GalleryCorruptError, match=r"foreign\.json is not a kerascnn gallery export"):
        gallery.import_(tmp_path / "foreign.json")
    with pytest.raises(GalleryNotFoundError, match=r"gallery export .*missing\.json does not exist"):
        gallery.import_(tmp_path / "missing.json")
    with pytest.raises(GalleryInputError, match=r"must end in \.json or \.npz, got '\.txt'"):
        gallery.export(tmp_path / "out.txt")
    assert gallery.identities() == []


def test_import_with_a_bad_template_writes_nothing(gallery, rng, tmp_path):
    gallery.enroll("alice", unit(rng, 1))
    gallery.export(tmp_path / "e.json")
    data = json.loads((tmp_path / "e.json").read_text())
    good = dict(data["templates"][0], name="bob")
    bad = dict(data["templates"][0], name="carol", embedding=[float("nan")] * DIM)
    data["templates"] = [good, bad]
    (tmp_path / "e.json").write_text(json.dumps(data))
    with pytest.raises(GalleryInputError, match="NaN"):
        gallery.import_(tmp_path / "e.json")
    assert [i.name for i in gallery.identities()] == ["alice"]


class _RacingConnection:
    """A sqlite3 connection whose first ``fails`` journal-mode switches fail at once, the way
    SQLite answers a switch racing another connection (no busy wait)."""

    def __init__(self, conn, fails):
        self._conn, self.fails, self.tries = conn, fails, 0

    def execute(self, sql, *args):
        if sql.startswith("PRAGMA journal_mode"):
            self.tries += 1
            if self.tries <= self.fails:
                raise sqlite3.OperationalError("database is locked")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


@pytest.mark.parametrize("fails", [3, 10_000])
def test_journal_mode_switch_racing_another_process_is_retried(tmp_path, monkeypatch, fails):
    import kerascnn.face.gallery.sqlite as module

    connections = []
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        connections.append(_RacingConnection(real_connect(*args, **kwargs), fails))
        return connections[-1]

    monkeypatch.setattr(module.sqlite3, "connect", connect)
    if fails == 3:  # a passing race: retried until the switch succeeds
        with Gallery(tmp_path / "g.db", IDENTITY, timeout=5) as g:
            g.enroll("alice", np.ones((1, DIM), np.float32))
        assert connections[0].tries == 4
    else:  # a lock that never goes: the timeout, then the usual message
        with pytest.raises(GalleryLockedError, match=r"g\.db is locked by another process \(waited 0.2 s\)"):
            Gallery(tmp_path / "g.db", IDENTITY, timeout=0.2)
        assert connections[0].tries > 3


# --- compact exact search and incremental updates ------------------------------------------------
def test_8bit_error_bound_holds():
    pytest.importorskip("faiss")
    from kerascnn.face.gallery.index import _encode, _scalar_quantizer

    rng = np.random.default_rng(3)
    templates, queries = unit(rng, 500, 64), unit(rng, 50, 64)
    codes = _scalar_quantizer(64)
    errors = np.concatenate([_encode(codes, templates[:1]), _encode(codes, templates[1:])])  # range from 1 row
    assert codes.ntotal == 500 and codes.sa_code_size() == 64  # one byte per component
    decoded = codes.sa_decode(codes.sa_encode(templates)).astype(np.float64)
    exact = queries.astype(np.float64) @ templates.T.astype(np.float64)
    approx = queries.astype(np.float64) @ decoded.T
    assert (np.abs(exact - approx) <= errors + 1e-6).all()
    assert 0 < np.median(errors) < 0.05  # a real, small error
    scores, _ = codes.search(queries, 500)  # faiss's scan scores the decoded templates
    np.testing.assert_allclose(np.sort(scores, axis=1), np.sort(approx, axis=1), atol=1e-5)


@pytest.mark.parametrize("per_identity", [1, 3])
@pytest.mark.slow
def test_compact_search_equals_float32_and_slow_reference(per_identity, monkeypatch):
    pytest.importorskip("faiss")
    from kerascnn.face.gallery import index as module
    from kerascnn.face.gallery.index import SearchIndex

    rng = np.random.default_rng(per_identity)
    n, d = 3000, 32
    templates = unit(rng, n, d)
    owners = np.arange(n) // per_identity
    index = SearchIndex(d, compact=True)
    names = {int(o): f"id{o}" for o in owners}
    index.replace(1, [], owners[:10], names, templates[:10])  # the quantizer's range: from 10 rows
    index.replace(2, [], owners[10:], names, templates[10:])
    picked = rng.integers(0, n, 40)
    probes = np.concatenate([templates[picked] + 0.6 * unit(rng, 40, d), unit(rng, 10, d)])  # noisy, and near no one
    probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
    for k in (1, 5):
        monkeypatch.setattr(module, "COMPACT_MAX_QUERIES", 0)  # every chunk: the float32 product
        names_f, scores_f = index.search_exact(probes, k)
        monkeypatch.setattr(module, "COMPACT_MAX_QUERIES", 64)  # every chunk: the 8-bit scan and re-rank
        monkeypatch.setattr(module, "COMPACT_MIN_TEMPLATES", 0)
        with monkeypatch.context() as m:
            m.setattr(SearchIndex, "_top_float32", None)  # (not used)
            names_c, scores_c = index.search_exact(probes, k)
        assert names_c.tolist() == names_f.tolist()  # recall@k = 1.0 against float32 exact search
        np.testing.assert_allclose(scores_c, scores_f, atol=1e-6)
        people = {f"id{o}": templates[owners == o] for o in range(owners.max() + 1)}
        ref_names, ref_scores = reference_search(people, probes[::5], k)  # slow, obvious, float64
        assert names_c[::5].tolist() == ref_names
        np.testing.assert_allclose(scores_c[::5], ref_scores, atol=1e-5)
    assert (names_c[:40, 0] == np.array([f"id{o}" for o in owners[picked]], dtype=object)).all()


@pytest.mark.parametrize("per_identity", [1, 3])
@pytest.mark.slow
def test_batch_search_of_a_wide_index_equals_the_slow_reference(per_identity):
    """A batch against 24,000 templates: the blocked top-k (block maxima, then the few blocks that
    can hold the answer) and the first-k-owners step give the obvious reference's answer."""
    from kerascnn.face.gallery.index import SearchIndex

    rng = np.random.default_rng(10 + per_identity)
    n, d = 24_000, 16
    templates = unit(rng, n, d)
    owners = np.arange(n) // per_identity
    index = SearchIndex(d, compact=False)
    index.replace(1, [], owners, {int(o): f"id{o}" for o in owners}, templates)
    picked = rng.integers(0, n, 30)
    probes = np.concatenate([templates[picked] + 0.3 * unit(rng, 30, d), unit(rng, 10, d)])
    probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
    people = {f"id{o}": templates[o * per_identity:(o + 1) * per_identity] for o in range(owners.max() + 1)}
    for k in (1, 4):
        names, scores = index.search_exact(probes, k)
        ref_names, ref_scores = reference_search(people, probes[::4], k)  # slow and obvious: a subset
        assert names[::4].tolist() == ref_names
        np.testing.assert_allclose(scores[::4], ref_scores, atol=1e-5)


def test_compact_scan_widens_when_the_top_is_crowded(monkeypatch):
    """1,500 near-copies of one template: the scan's first 1,024 approximate scores cannot settle
    the top 15, so it asks for more, and the answer is still the float32 one."""
    pytest.importorskip("faiss")
    from kerascnn.face.gallery import index as module
    from kerascnn.face.gallery.index import SearchIndex

    rng = np.random.default_rng(5)
    crowd = unit(rng, 1, 32) + 0.02 * unit(rng, 1500, 32)
    templates = np.concatenate([unit(rng, 2000, 32), crowd / np.linalg.norm(crowd, axis=1, keepdims=True)])
    index = SearchIndex(32, compact=True)
    index.replace(1, [], np.arange(len(templates)), {i: f"id{i}" for i in range(len(templates))}, templates)
    sizes = []
    scan = index._codes

    class Spy:
        def search(self, queries, m):
            sizes.append(m)
            return scan.search(queries, m)

    index._codes = Spy()
    probe = templates[-1:]
    monkeypatch.setattr(module, "COMPACT_MIN_TEMPLATES", 0)
    names_c, scores_c = index.search_exact(probe, 15)
    monkeypatch.setattr(module, "COMPACT_MAX_QUERIES", 0)
    names_f, scores_f = index.search_exact(probe, 15)
    assert sizes[0] == 1024 and max(sizes) > 1024  # widened
    assert names_c.tolist() == names_f.tolist()
    np.testing.assert_allclose(scores_c, scores_f, atol=1e-6)


def test_index_follows_changes_incrementally(location, rng, monkeypatch):
    from kerascnn.face.gallery import index as module

    monkeypatch.setattr(module, "COMPACT_MIN_TEMPLATES", 0)  # the 8-bit codes are searched too (with faiss)
    with Gallery(location, IDENTITY) as reader, Gallery(location, IDENTITY) as writer:
        people = {f"p{i}": unit(rng, 2) for i in range(6)}
        for name, ts in people.items():
            writer.enroll(name, ts)
        assert reader.search(people["p0"][0])[0].tolist() == [["p0"]]
        index = reader._cache
        assert index.last_fetched == 12  # the first search loads everything
        writer.enroll("new", unit(rng, 3))
        writer.enroll("p1", unit(rng, 1))  # one more template of an enrolled identity
        writer.remove("p2")
        writer.rename("p3", "ann")
        names, _ = reader.search(np.concatenate([people["p2"], people["p3"]]), k=7)
        assert reader._cache is index and index.last_fetched == 3 + 3 + 0 + 2  # only what changed is read
        assert "p2" not in names.ravel() and "p3" not in names.ravel() and names[2, 0] == "ann"
        fresh = Gallery(location, IDENTITY)
        queries = np.concatenate([unit(rng, 4), people["p4"], people["p5"]])
        for k in (1, 4):
            expected = fresh.search(queries, k=k)
            got = reader.search(queries, k=k)
            assert got[0].tolist() == expected[0].tolist()
            np.testing.assert_allclose(got[1], expected[1], atol=1e-6)
        fresh.close()
        for name in list(people)[:2] + ["new", "ann", "p4", "p5"]:
            writer.remove(name)
        with pytest.raises(EmptyGalleryError):
            reader.search(queries)


def test_version_1_gallery_is_upgraded_when_opened_writable(tmp_path, rng):
    path = tmp_path / "g.db"
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", unit(rng, 1))
    raw_query(path, "DROP TABLE changes")  # what version 1 wrote
    raw_query(path, "UPDATE metadata SET value = '1' WHERE key = 'format_version'")
    os.chmod(path, 0o400)
    try:
        with Gallery(path, IDENTITY) as old:  # read-only: searched as it is, reloaded on change
            assert old.read_only and old.search(unit(rng, 1))[0].tolist() == [["alice"]]
            assert old._store.change_log is False
    finally:
        os.chmod(path, 0o600)
    with Gallery(path, IDENTITY) as g:
        assert g._store.change_log and g.enroll("bob", unit(rng, 1)) == 1
    assert raw_query(path, "SELECT value FROM metadata WHERE key = 'format_version'") == [("2",)]
    assert len(raw_query(path, "SELECT * FROM changes")) == 1


def test_postgres_schemas_are_separate_galleries(postgres_server, rng):
    """One gallery per schema of one database (the shards of docs/galleries.md): separate
    contents, and a writer holding one schema's lock does not block the other's."""
    import psycopg

    database = postgres_server.new_database()
    url = postgres_server.url(database)
    raw_query(url, "CREATE SCHEMA shard_a")
    raw_query(url, "CREATE SCHEMA shard_b")
    urls = [f"{url}?options=-csearch_path%3D{schema}" for schema in ("shard_a", "shard_b")]
    with Gallery(urls[0], IDENTITY) as a, Gallery(urls[1], IDENTITY, timeout=0.2) as b:
        a.enroll("alice", unit(rng, 1))
        b.enroll("bob", unit(rng, 2))
        assert [i.name for i in a.identities()] == ["alice"] and [i.name for i in b.identities()] == ["bob"]
        with psycopg.connect(urls[0], autocommit=True) as holder:  # shard_a's writer, mid-transaction
            holder.execute("BEGIN")
            holder.execute("SELECT pg_advisory_xact_lock(hashtext('kerascnn-gallery:' || current_schema()))")
            assert b.enroll("carol", unit(rng, 1)) == 1  # shard_b does not wait
            with Gallery(urls[0], IDENTITY, timeout=0.2) as a2, pytest.raises(GalleryLockedError):
                a2.enroll("dave", unit(rng, 1))  # shard_a's does
            holder.execute("ROLLBACK")
    assert raw_query(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'") == []
    postgres_server.drop_database(database)
