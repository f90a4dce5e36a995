"""kerascnn.face: compare, open and Faces (the high-level API over FacePipeline and Gallery)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kerascnn import face
from kerascnn.errors import (
    ConfusableNameError,
    EmptyGalleryError,
    FaceModelError,
    GalleryInputError,
    GalleryModelMismatchError,
    UnknownIdentityError,
)
from kerascnn.face.faces import Faces
from kerascnn.face.gallery import Gallery

from _face_helpers import FakePipeline, make_folder
from _gallery_stores import location, new_location, postgres_server, raw_query, store  # noqa: F401 (fixtures)

DIM = 8
CYRILLIC_ALICE = "\u0430lice"  # "аlice", its first letter a Cyrillic а


# --- enrollment ----------------------------------------------------------------------------------
def test_enroll_strict_and_lenient(tmp_path, location):
    folder = make_folder(tmp_path / "faces", {"alice": 3}, bad=("alice/1",))
    paths = sorted((folder / "alice").iterdir())
    pipeline = FakePipeline()
    faces = Faces(location, pipeline=pipeline)
    with pytest.raises(GalleryModelMismatchError, match="differs in name"):  # checked when opened
        Faces(Gallery(faces.gallery.path), pipeline=FakePipeline(name="another"))
    with pytest.raises(GalleryInputError, match="no face in"):
        faces.enroll("alice", paths, strict=True)
    assert faces.people() == []
    report = faces.enroll("alice", paths, strict=False)
    assert report.enrolled == {"alice": 2} and report.failures == [(str(paths[1]), f"no face found in {paths[1]}")]
    expected = np.stack([pipeline.embedding_of(paths[0]), pipeline.embedding_of(paths[2])])
    np.testing.assert_allclose(faces.gallery.templates("alice"), expected)
    again = faces.enroll("alice", paths, strict=False)
    assert again.enrolled == {} and again.skipped == 2 and pipeline.calls[-1] == [str(paths[1])]
    assert faces.enroll("alice", paths[0]).skipped == 1  # one path is a list of one
    faces.close()


def test_enroll_refuses_an_empty_list(location):
    pipeline = FakePipeline()
    with Faces(location, pipeline=pipeline) as faces:
        with pytest.raises(GalleryInputError, match=r"^enroll\('alice'\) got no photo: give at least one image file"):
            faces.enroll("  alice ", [])
        assert faces.people() == [] and pipeline.calls == []


def test_confusable_names_are_refused_before_their_images_are_embedded(tmp_path, location):
    pipeline = FakePipeline()
    with Faces(location, pipeline=pipeline) as faces:
        faces.enroll("alice", [make_folder(tmp_path / "a", {"alice": 1}) / "alice" / "0.jpg"])
        folder = make_folder(tmp_path / "faces", {CYRILLIC_ALICE: 2, "bob": 1})
        with pytest.raises(ConfusableNameError, match="'аlice' looks like the enrolled 'alice'"):
            faces.enroll(CYRILLIC_ALICE, sorted((folder / CYRILLIC_ALICE).iterdir()))
        assert len(pipeline.calls) == 1  # only alice's image was embedded
        report = faces.enroll_folder(folder, progress=False)  # the folder's other people are enrolled
        assert report.enrolled == {"bob": 1} and len(pipeline.calls) == 2
        assert report.failures == [(str(folder / CYRILLIC_ALICE), report.failures[0][1])]
        assert report.failures[0][1].startswith("not enrolled: identity name 'аlice' looks like the enrolled 'alice'")
        report = faces.enroll_folder(folder, progress=False, allow_confusable=True)
        assert report.enrolled == {CYRILLIC_ALICE: 2} and report.skipped == 1
        assert faces.people() == ["alice", "bob", CYRILLIC_ALICE]


def test_enroll_folder_commits_per_identity_and_resumes(tmp_path, location, capsys):
    folder = make_folder(tmp_path / "faces", {"ann": 2, "bob": 3, "cat": 1}, bad=("bob/0",))
    (folder / "empty").mkdir()
    pipeline = FakePipeline()
    with Faces(location, pipeline=pipeline) as faces:
        report = faces.enroll_folder(folder, progress=True)
        assert report.enrolled == {"ann": 2, "bob": 2, "cat": 1} and report.templates == 5
        assert [p for p, _ in report.failures] == [str(folder / "bob" / "0.jpg")]
        assert "enroll" in capsys.readouterr().err  # the progress bar
        assert len(pipeline.calls) == 3  # one batch per identity
        (folder / "cat" / "1.jpg").write_bytes(b"a new photo of cat")
        again = faces.enroll_folder(folder, progress=False)
        assert again.enrolled == {"cat": 1} and again.skipped == 5
        assert [(i.name, i.templates) for i in faces.identities()] == [("ann", 2), ("bob", 2), ("cat", 2)]


def test_remove_forgets_every_template(tmp_path, location):
    folder = make_folder(tmp_path / "faces", {"ann": 3, "bob": 1})
    with Faces(location, pipeline=FakePipeline()) as faces:
        faces.enroll_folder(folder, progress=False)
        assert "ann" in faces and len(faces) == 2
        assert faces.remove("ann") == 3
        assert "ann" not in faces and faces.people() == ["bob"] and len(faces.gallery) == 1
        with pytest.raises(UnknownIdentityError):
            faces.remove("ann")


# --- decisions -------------------------------------------------------------------------------------
def test_verify_and_identify_take_their_thresholds_and_say_where_from(tmp_path, location):
    folder = make_folder(tmp_path / "faces", {"ann": 2, "bob": 2})
    pipeline = FakePipeline()
    with Faces(location, pipeline=pipeline) as faces:
        with pytest.raises(EmptyGalleryError):
            faces.identify(folder / "ann" / "0.jpg", threshold=0.5)
        faces.enroll_folder(folder, progress=False)
        yes = faces.verify("ann", folder / "ann" / "0.jpg", threshold=0.99)  # an enrolled photo: cosine 1
        assert yes.match and yes.score == pytest.approx(1.0, abs=1e-5) and yes.threshold == 0.99
        assert yes.threshold_source["origin"] == "--threshold" and yes.to_dict()["face"] == {
            "source": str(folder / "ann" / "0.jpg")}
        no = faces.verify("bob", folder / "ann" / "0.jpg", threshold=0.99)
        assert not no.match and no.score < 0.99
        with pytest.raises(UnknownIdentityError, match="'carol' is not enrolled"):
            faces.verify("carol", folder / "ann" / "0.jpg", threshold=0.5)
        who = faces.identify(folder / "bob" / "1.jpg", threshold=0.99, top_k=2)
        assert who.recognized and who.name == "bob" and [c.name for c in who.candidates][0] == "bob"
        assert who.operating_point == {"threshold": 0.99, "metric": "cosine", "how": "--threshold"}
        stranger = tmp_path / "stranger.jpg"
        stranger.write_bytes(b"someone else")
        assert faces.identify(stranger, threshold=0.99).name is None
        with pytest.raises(FaceModelError, match="no 1:1 calibration of this model for detector"):
            faces.verify("ann", folder / "ann" / "0.jpg")  # a model without card nor calibration


def test_verify_and_identify_take_a_metric_and_keep_the_threshold_used(tmp_path, location):
    folder = make_folder(tmp_path / "faces", {"ann": 2, "bob": 2})
    pipeline = FakePipeline()
    with Faces(location, pipeline=pipeline) as faces:
        with pytest.raises(EmptyGalleryError, match=r"is empty: enroll someone before identifying$"):
            faces.identify(folder / "ann" / "0.jpg", threshold=0.5)
        assert pipeline.calls == []  # refused before the photo is read
        faces.enroll_folder(folder, progress=False)
        yes = faces.verify("ann", folder / "ann" / "0.jpg", threshold=0.01, metric="euclidean")
        assert yes.match and yes.metric == "euclidean" and yes.score == pytest.approx(0.0, abs=1e-3)
        assert yes.decision_threshold.source.describe() == "--threshold" and "decision_threshold" not in yes.to_dict()
        assert not faces.verify("bob", folder / "ann" / "0.jpg", threshold=0.01, metric="euclidean").match
        who = faces.identify(folder / "bob" / "1.jpg", threshold=0.01, metric="euclidean")
        assert who.name == "bob" and who.metric == "euclidean"
        assert who.decision_threshold.description == "1:N threshold: euclidean 0.0100 (--threshold)"


def test_one_faces_object_serves_many_threads(tmp_path):
    folder = make_folder(tmp_path / "faces", {f"p{i}": 2 for i in range(8)})
    errors = []
    with Faces(tmp_path / "g.db", pipeline=FakePipeline()) as faces:
        def work(i):
            try:
                faces.enroll(f"p{i}", sorted((folder / f"p{i}").iterdir()))
                for _ in range(5):
                    assert faces.identify(folder / f"p{i}" / "0.jpg", threshold=0.99).name == f"p{i}"
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(faces) == 8 and len(faces.gallery) == 16


@pytest.mark.slow
def test_compare_and_open_on_real_faces_with_the_default_model(tmp_path, orl_dir, monkeypatch):
    from kerascnn.face.gallery import records

    hashed = []
    real_identity = records.model_identity
    monkeypatch.setattr(records, "model_identity", lambda *a, **k: hashed.append(1) or real_identity(*a, **k))
    same = face.compare(orl_dir / "s1" / "1.pgm", orl_dir / "s1" / "2.pgm")
    other = face.compare(orl_dir / "s1" / "1.pgm", orl_dir / "s2" / "1.pgm")
    assert same.match and not other.match and same.score > other.score
    assert same.threshold == other.threshold and same.threshold_source["origin"] == "card"
    assert [f.ok for f in same.faces] == [True, True]
    with face.open(tmp_path / "faces.db") as faces:
        faces.enroll("alice", [orl_dir / "s1" / f"{i}.pgm" for i in (1, 2, 3)])
        faces.enroll("bob", [orl_dir / "s2" / f"{i}.pgm" for i in (1, 2, 3)])
        assert faces.verify("alice", orl_dir / "s1" / "5.pgm").match
        assert faces.identify(orl_dir / "s2" / "6.pgm").name == "bob"
        stranger = faces.identify(orl_dir / "s30" / "1.pgm")
        assert stranger.name is None and stranger.operating_point["gallery_size"] == 2
        before = len(hashed)
        for _ in range(3):  # a service's requests: the weights are hashed once per pipeline, not per call
            faces.verify("alice", orl_dir / "s1" / "5.pgm")
            faces.identify(orl_dir / "s2" / "6.pgm")
        assert len(hashed) == before
