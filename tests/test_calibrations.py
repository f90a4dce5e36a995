"""User calibration files (kerascnn.face.calibrations): preferred to the card, never written into it,
per detector and data set with their provenance, and never replaced by one measured on less data."""

from __future__ import annotations

import json

import pytest

from _face_helpers import digest
from kerascnn import __version__
from kerascnn.errors import CalibrationDowngradeError, FaceModelError
from kerascnn.face import model as fm
from kerascnn.face.calibrations import data_counts, find_calibration, store_calibration

ID = {"name": "tiny embedder", "input_size": [32, 32, 3], "embedding_dim": 16, "weights_sha256": "ab" * 32}
OTHER = {**ID, "weights_sha256": "cd" * 32}


def one_to_one(pairs: int, threshold: float = 0.5) -> dict:
    return {"metric": "cosine", "threshold": threshold, "num_genuine": pairs // 2, "num_impostor": pairs - pairs // 2}


def open_set(people: int, mated: int, non_mated: int) -> dict:
    points = [{"gallery_size": n, "fpir": f, "threshold": 0.9, "mated_searches": mated, "non_mated_searches": non_mated}
              for n in (10, 100) for f in (0.1, 0.01)]
    return {"metric": "cosine", "people": people, "operating_points": points}


def test_data_counts_count_each_gallery_size_once():
    assert data_counts("1:1", one_to_one(4200)) == {"pairs": 4200}
    assert data_counts("open-set", open_set(3959, 200, 40000)) == {"people": 3959, "searches": 2 * 40200}
    assert data_counts("1:1", {"metric": "cosine", "threshold": 0.4}) == {}  # a hand-written card says nothing


def test_the_user_calibration_is_preferred_per_detector_and_the_card_is_never_written(tmp_path, kerascnn_home):
    model = tmp_path / "m.keras"
    fm.save_calibration(model, one_to_one(600, 0.4))
    card = digest(model.with_suffix(".json"))
    shipped = find_calibration("1:1", ID, "haar", model)
    assert shipped.origin == "card" and shipped.path == model.with_suffix(".json") and shipped.counts == {"pairs": 600}

    path, replaced = store_calibration("1:1", one_to_one(1200, 0.7), ID, "haar", "/data/pairs.txt", model_path=model)
    assert path == kerascnn_home / "calibrations" / "tiny_embedder-abababababababab.json"
    assert replaced.origin == "card" and digest(model.with_suffix(".json")) == card
    used = find_calibration("1:1", ID, "haar", model)
    assert (used.origin, used.values["threshold"], used.detector) == ("user", 0.7, "haar")
    assert used.dataset == "/data/pairs.txt"
    assert used.version == __version__ and used.date[:2] == "20"
    assert used.describe().startswith(f"the user calibration {path} (1:1; detector haar; /data/pairs.txt; 1,200 pairs;")
    assert used.to_dict()["origin"] == "user" and used.to_dict()["counts"] == {"pairs": 1200}
    # another detector still gets the card's calibration
    assert find_calibration("1:1", ID, "yunet", model).origin == "card"
    assert find_calibration("open-set", ID, "haar", model) is None


def test_a_calibration_on_less_data_is_refused_without_force(tmp_path):
    model = tmp_path / "m.keras"
    path, _ = store_calibration("1:1", one_to_one(1200), ID, "yunet", "/data/lfw.txt", model_path=model)
    before = digest(path)
    with pytest.raises(CalibrationDowngradeError, match=r"this 1:1 calibration \(/data/two.txt: 12 pairs\) was measured "
                                                        r"on fewer pairs than the user calibration .* --force"):
        store_calibration("1:1", one_to_one(12), ID, "yunet", "/data/two.txt", model_path=model)
    assert digest(path) == before
    store_calibration("1:1", one_to_one(12, 0.8), ID, "yunet", "/data/two.txt", model_path=model, force=True)
    assert find_calibration("1:1", ID, "yunet", model).dataset == "/data/two.txt"
    # the entry of the same data set is not replaced by fewer pairs either, even when another is in use
    with pytest.raises(CalibrationDowngradeError, match="fewer pairs than the user calibration .*/data/lfw.txt"):
        store_calibration("1:1", one_to_one(600), ID, "yunet", "/data/lfw.txt", model_path=model)
    # nor the card's 3,959-people open-set calibration by one on two people: no file is created
    fm.save_open_set_calibration(model, open_set(3959, 200, 40000))
    with pytest.raises(CalibrationDowngradeError, match="fewer people and searches than the model card"):
        store_calibration("open-set", open_set(2, 5, 10), ID, "yunet", "/data/two", model_path=model)
    assert [e["kind"] for e in json.loads(path.read_text())["calibrations"]] == ["1:1", "1:1"]


def test_an_out_file_is_kept_apart_and_checked(tmp_path, kerascnn_home):
    out = tmp_path / "mine.json"
    path, replaced = store_calibration("1:1", one_to_one(40), ID, "haar", "/data/p.txt", out=out)
    assert path == out and replaced is None and not (kerascnn_home / "calibrations").exists()
    chosen = find_calibration("1:1", ID, "haar", tmp_path / "m.keras", file=out)
    assert chosen.origin == "file" and chosen.path == out
    assert find_calibration("1:1", ID, "yunet", tmp_path / "m.keras", file=out) is None
    with pytest.raises(FaceModelError, match="belongs to model 'tiny embedder' .* not to the model in use"):
        find_calibration("1:1", OTHER, "haar", file=out)
    with pytest.raises(FaceModelError, match="belongs to model"):
        store_calibration("1:1", one_to_one(400), OTHER, "haar", "/data/p.txt", out=out)
    with pytest.raises(FaceModelError, match="calibration file .*missing.json does not exist"):
        find_calibration("1:1", ID, "haar", file=tmp_path / "missing.json")
    for text in ("{", '{"threshold": 0.5}'):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(FaceModelError, match="calibration file"):
            store_calibration("1:1", one_to_one(40), ID, "haar", "/data/p.txt", out=bad)
        assert bad.read_text() == text
    with pytest.raises(FaceModelError, match="calibration threshold must be a finite number"):
        store_calibration("1:1", {**one_to_one(4000), "threshold": float("nan")}, ID, "haar", "/data/p.txt", out=out)
