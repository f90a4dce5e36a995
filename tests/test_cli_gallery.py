"""The gallery commands: enroll, list, remove, rename, export, import (text, --json, exit codes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kerascnn.cli import EXIT_ERROR, EXIT_OK, main
from kerascnn.face.gallery import Gallery

from _gallery_stores import location, new_location, postgres_server, raw_query, store  # noqa: F401 (fixtures)

IDENTITY = {"name": "fake", "input_size": [16, 16, 3], "embedding_dim": 4, "weights_sha256": "0" * 64}


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's: these tests seed their own generators (no Keras session to reset)."""
    yield


@pytest.fixture
def gallery_path(location):
    """A gallery of two people in each store."""
    path = location
    rng = np.random.default_rng(0)
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", rng.normal(size=(2, 4)))
        g.enroll("bob", rng.normal(size=(1, 4)))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(path):
    """Everything a gallery holds, to check it is left as it was."""
    return (raw_query(path, "SELECT * FROM identities ORDER BY id"),
            [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
             for row in raw_query(path, "SELECT * FROM templates ORDER BY id")])


def assert_one_line_error(code, err, command, pattern):
    assert code == EXIT_ERROR
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kerascnn {command}: error: "), err
    assert pattern in lines[0], lines[0]


def test_list_text_and_json(capsys, gallery_path):
    code, out, _ = run(capsys, "list", "--gallery", gallery_path)
    assert code == EXIT_OK
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "TEMPLATES", "CREATED"]
    assert [line.split()[:2] for line in lines[1:3]] == [["alice", "2"], ["bob", "1"]]
    assert lines[-1] == "2 identities, 3 templates (model fake)"
    code, out, _ = run(capsys, "list", "--gallery", gallery_path, "--json")
    data = json.loads(out)
    assert code == EXIT_OK and data["templates"] == 3 and data["model_identity"] == IDENTITY
    assert [(i["name"], i["templates"]) for i in data["identities"]] == [("alice", 2), ("bob", 1)]


def test_remove_and_rename(capsys, gallery_path):
    code, out, _ = run(capsys, "rename", "--gallery", gallery_path, "alice", "Robert'); DROP TABLE templates;--")
    assert code == EXIT_OK and out.strip() == "renamed alice to Robert'); DROP TABLE templates;--"
    code, out, _ = run(capsys, "remove", "--gallery", gallery_path, "bob", "--json")
    assert code == EXIT_OK and json.loads(out) == {"removed": "bob", "templates": 1}
    with Gallery(gallery_path, create=False) as g:
        assert [(i.name, i.templates) for i in g.identities()] == [("Robert'); DROP TABLE templates;--", 2)]


def test_export_import_round_trip(capsys, gallery_path, tmp_path, new_location):
    out_file = tmp_path / "faces.npz"
    code, out, _ = run(capsys, "export", "--gallery", gallery_path, out_file)
    assert code == EXIT_OK and out.strip() == f"exported 3 templates to {out_file}"
    copy = new_location("copy")
    code, out, _ = run(capsys, "import", "--gallery", copy, out_file, "--json")
    assert code == EXIT_OK and json.loads(out) == {"imported": str(out_file), "templates": 3}
    assert snapshot(copy)[1] == snapshot(gallery_path)[1]


@pytest.mark.parametrize("argv, command, pattern", [
    (["remove", "{g}", "carol"], "remove", "'carol' is not enrolled in gallery"),
    (["rename", "{g}", "carol", "dave"], "rename", "'carol' is not enrolled in gallery"),
    (["rename", "{g}", "alice", "bob"], "rename", "'bob' is already enrolled"),
    (["rename", "{g}", "bob", "\u0430lice"], "rename", "'аlice' looks like the enrolled 'alice' (the same Unicode "
     "confusables skeleton): they differ first at character 1, U+0430 (CYRILLIC SMALL LETTER A) against U+0061"),
    (["import", "{g}", "{tmp}/missing.json"], "import", "missing.json does not exist"),
    (["export", "{g}", "{tmp}/out.csv"], "export", "must end in .json or .npz"),
])
def test_errors_leave_the_gallery_as_it_was(capsys, gallery_path, tmp_path, argv, command, pattern):
    before = snapshot(gallery_path)
    argv = [a.format(tmp=tmp_path, g=gallery_path) for a in argv]
    argv[1:2] = ["--gallery", str(gallery_path)]
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, command, pattern)
    assert snapshot(gallery_path) == before


def test_allow_confusable_overrides_on_rename_and_import(capsys, gallery_path, tmp_path, new_location):
    code, out, _ = run(capsys, "rename", "--gallery", gallery_path, "bob", "\u0430lice", "--allow-confusable")
    assert code == EXIT_OK and out.strip() == "renamed bob to \u0430lice"
    run(capsys, "export", "--gallery", gallery_path, tmp_path / "e.json")
    copy = new_location("copy")
    with Gallery(copy, IDENTITY) as g:
        g.enroll("alice", np.ones((1, 4)))
    before = snapshot(copy)
    code, _, err = run(capsys, "import", "--gallery", copy, tmp_path / "e.json")
    assert_one_line_error(code, err, "import", "'аlice' looks like the enrolled 'alice'")
    assert snapshot(copy) == before
    code, out, _ = run(capsys, "import", "--gallery", copy, tmp_path / "e.json", "--allow-confusable")
    with Gallery(copy) as g:
        shown = g.location  # a database password is never printed
    assert code == EXIT_OK and out.strip() == f"imported 3 templates into {shown}"


def test_missing_corrupt_and_read_only_galleries(capsys, tmp_path):
    gallery_path = tmp_path / "g.db"
    with Gallery(gallery_path, IDENTITY) as g:
        g.enroll("alice", np.ones((3, 4)))
    missing = tmp_path / "missing.db"
    code, _, err = run(capsys, "list", "--gallery", missing)
    assert_one_line_error(code, err, "list", "missing.db does not exist")
    assert not missing.exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 10)
    code, _, err = run(capsys, "remove", "--gallery", junk, "alice")
    assert_one_line_error(code, err, "remove", "junk.db is not a kerascnn gallery: not a SQLite database")
    assert junk.read_bytes() == b"not a database at all" * 10
    before = snapshot(gallery_path)
    os.chmod(gallery_path, 0o400)
    try:
        code, _, err = run(capsys, "remove", "--gallery", gallery_path, "alice")
        assert_one_line_error(code, err, "remove", "is read-only")
        code, out, _ = run(capsys, "list", "--gallery", gallery_path, "--json")  # reads still work
        assert code == EXIT_OK and json.loads(out)["templates"] == 3
    finally:
        os.chmod(gallery_path, 0o600)
    assert snapshot(gallery_path) == before


def test_postgres_server_problems_are_one_line_errors(capsys, postgres_server, tmp_path):
    """Wrong password, missing database, no server: exit 2 with a message that names the problem
    (and never the password)."""
    database = postgres_server.new_database()
    cases = [
        (postgres_server.url(database, password="wrong-pw"), "the server refused the credentials"),
        (postgres_server.url("no_such_db"), "the database does not exist"),
        (postgres_server.url(database).replace(f":{postgres_server.port}/", ":1/"), "cannot reach the server"),
        (postgres_server.url(database), "has no gallery tables"),
    ]
    for url, pattern in cases:
        code, _, err = run(capsys, "list", "--gallery", url, "--timeout", "2")
        assert_one_line_error(code, err, "list", pattern)
        assert "wrong-pw" not in err and "s3cret" not in err
        assert "rolled back" not in err  # a read has nothing to roll back, and says so
        unreachable = pattern == "cannot reach the server"
        assert ("nothing was written: run it again once the server is back" in err) == unreachable
    postgres_server.drop_database(database)


def test_import_of_a_bad_file_creates_no_gallery(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    target = tmp_path / "new.db"
    code, _, err = run(capsys, "import", "--gallery", target, bad)
    assert_one_line_error(code, err, "import", "bad.json is not a kerascnn gallery export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_enroll_needs_name_and_images_or_folder(capsys, tmp_path):
    code, _, err = run(capsys, "enroll", "--gallery", tmp_path / "g.db")
    assert_one_line_error(code, err, "enroll", "enroll needs either NAME IMG... or --folder DIR")
    code, _, err = run(capsys, "enroll", "--gallery", tmp_path / "g.db", "alice")
    assert_one_line_error(code, err, "enroll", "enroll alice: give at least one image")
    assert list(tmp_path.iterdir()) == []


# --- enrollment through the real face pipeline (TensorFlow) --------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two small unit-vector embedders saved as .keras (random weights differ)."""
    import keras

    paths = []
    for i in range(2):
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(4, 3, strides=4)(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.UnitNormalization()(keras.layers.Dense(8)(x))
        path = tmp_path_factory.mktemp("models") / f"tiny{i}.keras"
        keras.Model(inputs, x, name="tiny").save(path)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_enroll_images_and_folder(capsys, tmp_path, lfw_dir, tiny_models):
    people = ["Aaron_Peirsol", "Abdullah"]  # Haar finds a face in their first images
    images = {p: sorted((lfw_dir / p).iterdir())[:2] for p in people}
    gallery = tmp_path / "g.db"
    code, out, err = run(capsys, "enroll", "--gallery", gallery, people[0], *images[people[0]],
                         "--model", tiny_models[0])
    assert code == EXIT_OK, err
    assert out.strip() == f"enrolled 1 identities, 2 templates into {gallery}"

    # a non-image among the photos: exit 2, nothing enrolled
    junk = tmp_path / "notes.jpg"
    junk.write_text("not an image")
    before = snapshot(gallery)
    code, _, err = run(capsys, "enroll", "--gallery", gallery, people[1], images[people[1]][0], junk,
                       "--model", tiny_models[0])
    assert_one_line_error(code, err, "enroll", "notes.jpg")
    assert snapshot(gallery) == before
    # another model: refused before any work
    code, _, err = run(capsys, "enroll", "--gallery", gallery, people[1], images[people[1]][0],
                       "--model", tiny_models[1])
    assert_one_line_error(code, err, "enroll", "differs in weights_sha256")
    assert snapshot(gallery) == before
    # a failed first enrollment leaves an empty gallery (created first, so a killed enrollment keeps its commits)
    code, _, err = run(capsys, "enroll", "--gallery", tmp_path / "new.db", "x", junk, "--model", tiny_models[0])
    assert code == EXIT_ERROR
    with Gallery(tmp_path / "new.db", create=False) as new:
        assert len(new) == 0 and new.identities() == []

    # the whole folder: already enrolled images skipped, the bad file reported
    folder = tmp_path / "faces"
    for person, paths in images.items():
        (folder / person).mkdir(parents=True)
        for path in paths:
            (folder / person / path.name).symlink_to(path)
    (folder / people[1] / "notes.jpg").write_text("not an image")
    code, out, err = run(capsys, "enroll", "--gallery", gallery, "--folder", folder, "--model", tiny_models[0],
                         "--json")
    assert code == EXIT_OK, err
    report = json.loads(out)
    assert report["enrolled"] == {people[1]: 2} and report["skipped"] == 2
    assert [f["path"] for f in report["failures"]] == [str(folder / people[1] / "notes.jpg")]
    with Gallery(gallery, create=False) as g:
        assert [(i.name, i.templates) for i in g.identities()] == [(people[0], 2), (people[1], 2)]

    # a name that only looks like an enrolled one (a Cyrillic А): refused before any image is read, unless allowed
    lookalike = "\u0410" + people[0][1:]
    before = snapshot(gallery)
    code, _, err = run(capsys, "enroll", "--gallery", gallery, lookalike, junk, "--model", tiny_models[0])
    assert_one_line_error(code, err, "enroll", f"'{lookalike}' looks like the enrolled '{people[0]}'")
    assert snapshot(gallery) == before
    code, out, err = run(capsys, "enroll", "--gallery", gallery, lookalike, images[people[0]][0], "--model",
                         tiny_models[0], "--allow-confusable")
    assert code == EXIT_OK, err
    with Gallery(gallery, create=False) as g:
        assert [i.name for i in g.identities()] == [people[0], people[1], lookalike]
