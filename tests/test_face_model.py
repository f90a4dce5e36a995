"""The small shipped face model (`load_face_model("small")`), its card and calibration, the embedder
architecture, the trainer. The default (dlib) model is tested in test_dlib_resnet.py."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerascnn.errors import DatasetError, FaceModelError
from kerascnn.face import model as fm
from kerascnn.distillation import centred_targets
from kerascnn.evaluation import impostor_genuine_scores
from kerascnn.facetrain import trainer
from kerascnn.facetrain.data import FaceData


# --- the shipped model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    return fm.load_face_model("small")


def test_shipped_model_maps_images_to_unit_128d_vectors(shipped):
    size = shipped.input_shape[1]
    assert shipped.input_shape == (None, size, size, 3)
    images = np.random.default_rng(0).uniform(0, 255, (3, size, size, 3)).astype("float32")
    out = np.asarray(shipped(images))
    assert out.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_shipped_model_round_trips_in_safe_mode(shipped, tmp_path):
    path = tmp_path / "copy.keras"
    shipped.save(path)
    again = fm.load_face_model(path)
    images = np.random.default_rng(1).uniform(0, 255, (2,) + shipped.input_shape[1:]).astype("float32")
    np.testing.assert_allclose(np.asarray(again(images)), np.asarray(shipped(images)), atol=1e-6)


def test_shipped_card_describes_the_model(shipped):
    card = fm.load_face_model_card("small")
    assert card["input"]["size"] == list(shipped.input_shape[1:])
    assert card["output"]["embedding_dim"] == shipped.output_shape[-1]
    assert card["parameters"] == shipped.count_params()
    assert fm.FACE_MODELS["small"].stat().st_size < 20e6
    calibration = fm.load_calibration("small")
    assert calibration["metric"] == "cosine"
    assert -1.0 < calibration["threshold"] < calibration["threshold_far_1e-3"] < 1.0
    # the 600 held-out pairs are a coarse measure (folds range 78-98%); every pair of the held-out
    # people's images (17k genuine, 1.1M impostor) is the one that separates models
    student = card["accuracy"]["student"]
    assert student["accuracy"] >= 0.85 and 0.0 < student["tar_at_far"]["0.01"] <= 1.0
    every = card["accuracy"]["all_pairs"]
    assert every["genuine_pairs"] > 10_000 and every["impostor_pairs"] > 1_000_000
    assert every["auc"] >= 0.97 and every["balanced_accuracy_at_threshold"] >= 0.9
    assert every["threshold"] == calibration["threshold"]
    assert card["data"]["training_images"] < card["data"]["images"]  # the held-out fold is not trained on


def test_shipped_model_verifies_held_out_lfw_pairs(shipped, lfw_pairs, lfw_dir, yunet_path):
    """20 genuine + 20 impostor pairs of fold 7 (people never trained on), the card's threshold."""
    from kerascnn.data.folders import read_image
    from kerascnn.data.lfw import read_pairs
    from kerascnn.face.align import align_face
    from kerascnn.face.detect import YuNetDetector
    from kerascnn.facetrain.data import _central_face

    pairs = read_pairs(lfw_pairs, lfw_dir)
    fold = np.flatnonzero(pairs.fold == 6)
    chosen = np.concatenate([fold[pairs.same[fold]][:20], fold[~pairs.same[fold]][:20]])
    detector, size = YuNetDetector(yunet_path, score_threshold=0.5), shipped.input_shape[1]

    def crop(path):
        image = read_image(path)
        return align_face(image, _central_face(image, detector)[4:14].reshape(5, 2), size)

    left = np.stack([crop(pairs.left[i]) for i in chosen]).astype("float32")
    right = np.stack([crop(pairs.right[i]) for i in chosen]).astype("float32")
    similarity = np.sum(np.asarray(shipped(left)) * np.asarray(shipped(right)), axis=1)
    decided = similarity >= fm.load_calibration("small")["threshold"]
    accuracy = np.mean(decided == pairs.same[chosen])
    assert accuracy >= 0.8, f"accuracy {accuracy} on 40 held-out pairs"


# --- loading errors, card and calibration I/O ------------------------------------------------------
def test_missing_model_file_names_it(tmp_path):
    with pytest.raises(FaceModelError, match="nope.keras does not exist"):
        fm.load_face_model(tmp_path / "nope.keras")


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    with pytest.raises(FaceModelError, match="cannot load face model .*bad.keras"):
        fm.load_face_model(bad)


def test_model_that_is_not_an_embedder(tmp_path):
    inputs = keras.Input((4,))
    path = tmp_path / "dense.keras"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)
    with pytest.raises(FaceModelError, match=r"must map \(batch, h, w, 3\) images"):
        fm.load_face_model(path)


def test_calibration_round_trip_keeps_the_card(tmp_path):
    model_path = tmp_path / "mine.keras"
    (tmp_path / "mine.json").write_text(json.dumps({"seed": 3}))
    calibration = {"metric": "euclidean", "threshold": 0.9, "threshold_far_1e-3": 0.7, "pairs": 40}
    assert fm.save_calibration(model_path, calibration) == tmp_path / "mine.json"
    assert fm.load_calibration(model_path) == calibration
    assert fm.load_face_model_card(model_path)["seed"] == 3


def test_calibration_written_without_a_card(tmp_path):
    fm.save_calibration(tmp_path / "m.keras", {"metric": "cosine", "threshold": 0.3})
    assert fm.load_face_model_card(tmp_path / "m.keras") == {"model": "m.keras", "calibration": {"metric": "cosine", "threshold": 0.3}}


@pytest.mark.parametrize("calibration, message", [
    ({"metric": "manhattan", "threshold": 1.0}, "metric must be one of .* got 'manhattan'"),
    ({"metric": "cosine", "threshold": float("nan")}, "threshold must be a finite number, got nan"),
    ({"metric": "cosine"}, "threshold must be a finite number, got None"),
    ({"metric": "cosine", "threshold": 0.5, "threshold_far_1e-3": "high"}, "threshold_far_1e-3 must be a finite number"),
    ([0.5], "calibration must be a dict, got list"),
])
def test_bad_calibration_is_refused(tmp_path, calibration, message):
    with pytest.raises(FaceModelError, match=message):
        fm.save_calibration(tmp_path / "m.keras", calibration)
    assert not (tmp_path / "m.json").exists()


def test_card_errors(tmp_path):
    with pytest.raises(FaceModelError, match="model card .*none.json does not exist"):
        fm.load_face_model_card(tmp_path / "none.keras")
    (tmp_path / "a.json").write_text("{broken")
    with pytest.raises(FaceModelError, match="cannot read model card .*a.json"):
        fm.load_calibration(tmp_path / "a.keras")
    (tmp_path / "b.json").write_text("[1, 2]")
    with pytest.raises(FaceModelError, match="must hold a JSON object, got list"):
        fm.load_face_model_card(tmp_path / "b.keras")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(FaceModelError, match="has no 'calibration' entry"):
        fm.load_calibration(tmp_path / "c.keras")


# --- architecture ----------------------------------------------------------------------------------
def test_embedder_architecture_and_errors():
    model = fm.build_face_embedder(32, 16, widths=(8, 16), depths=(1, 1))
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 16)
    assert [layer.name for layer in model.layers][-3:] == ["embedding", "embedding_bn", "unit"]
    with pytest.raises(ValueError, match=r"same length, got \(8, 16\) and \(1,\)"):
        fm.build_face_embedder(32, widths=(8, 16), depths=(1,))
    with pytest.raises(ValueError, match="input_size 3 is too small for 2 stride-2 stages"):
        fm.build_face_embedder(3, widths=(8, 16), depths=(1, 1))


# --- trainer pieces -----------------------------------------------------------------------------
def _faces(n=12, canvas=40, size=32, seed=0):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(n, 128)).astype("float32") + 3.0
    return FaceData(
        [f"/x/p{i // 3}/{i}.jpg" for i in range(n)], np.arange(n) // 3, [f"p{i}" for i in range(n // 3)],
        rng.integers(0, 255, (n, canvas, canvas, 3), dtype=np.uint8), np.zeros((n, 5, 2), np.float32),
        np.ones(n, bool), teacher / np.linalg.norm(teacher, axis=1, keepdims=True), size,
    )


def test_centred_targets_are_unit_and_centred():
    teacher = _faces().teacher
    targets, mean = centred_targets(teacher)
    np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(mean, teacher.mean(0), atol=1e-6)
    assert np.mean(teacher @ teacher.T) > 0.8 > np.mean(targets @ targets.T)


@pytest.mark.slow
def test_distillation_training_runs_and_round_trips(tmp_path):
    data = _faces()
    data.teacher[:3] = np.nan  # not described yet: skipped
    config = trainer.FaceTrainConfig(input_size=32, canvas=40, widths=(8, 16), depths=(1, 1), epochs=2, batch_size=4)
    embedder, history, seconds, rate = trainer.train_face_model(config, data, np.arange(12), tmp_path, verbose=0)
    assert len(history["loss"]) == 2 and np.all(np.isfinite(history["loss"]))
    assert (tmp_path / "training_log.csv").read_text().count("\n") == 3
    embedder.save(tmp_path / "e.keras")
    again = keras.saving.load_model(tmp_path / "e.keras", safe_mode=True)
    e1, e2 = trainer.embed_crops(embedder, data.crops), trainer.embed_crops(again, data.crops)
    np.testing.assert_allclose(e1, e2, atol=1e-6)
    assert e1.shape == (12, 128) and rate > 0 and seconds > 0


def test_distillation_needs_a_teacher(tmp_path):
    data = _faces()
    data.teacher = None
    config = trainer.FaceTrainConfig(input_size=32, canvas=40, widths=(8, 16), depths=(1, 1), epochs=1)
    with pytest.raises(DatasetError, match="distillation needs teacher embeddings"):
        trainer.train_face_model(config, data, np.arange(12), tmp_path, verbose=0)


def test_holdout_split_removes_the_fold_people(lfw_pairs, lfw_dir):
    from kerascnn.data.lfw import read_pairs

    pairs = read_pairs(lfw_pairs, lfw_dir, check_files=False)
    paths = sorted(set(pairs.left) | set(pairs.right))
    names = sorted({p.split("/")[-2] for p in paths})
    labels = np.array([names.index(p.split("/")[-2]) for p in paths])
    data = FaceData(paths, labels, [f"lfw/{n}" for n in names], None, None, None, None, 32)
    train, left, right, same = trainer.holdout_split(data, lfw_pairs, lfw_dir, 6)
    held = {f"lfw/{n}" for n in pairs.people_of_fold(6)}
    assert not {data.class_names[labels[i]] for i in train} & held
    assert len(left) == len(right) == 600 and same.sum() == 300
    assert [paths[i] for i in left[:3]] == pairs.select(pairs.fold == 6).left[:3]
    with pytest.raises(DatasetError, match="has folds 0..6 .* got holdout fold 7"):
        trainer.holdout_split(data, lfw_pairs, lfw_dir, 7)


def test_calibration_from_held_out_embeddings():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 3)
    centres = rng.normal(size=(40, 16))
    emb = centres[labels] + 0.3 * rng.normal(size=(120, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores, same = impostor_genuine_scores(emb, labels)
    assert len(scores) == 120 * 119 // 2 and same.sum() == 40 * 3
    calibration = trainer.calibrate_holdout(emb, labels, {"threshold": 0.5})
    assert calibration["metric"] == "cosine" and calibration["threshold"] == 0.5
    far = np.mean(scores[~same] >= calibration["threshold_far_1e-3"])
    assert far <= 1e-3


def test_distillation_targets_stay_the_same_across_epochs():
    """Regression: without a refreshing teacher, the end of an epoch re-centred the already
    centred targets, collapsing them onto one direction (and the model onto a constant)."""
    from kerascnn.facetrain.trainer import _DistillBatches

    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(40, 8)) + 3.0  # an offset mean, as real embeddings have
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    crops = np.zeros((40, 4, 4, 3), np.uint8)
    batches = _DistillBatches(crops, teacher, batch_size=8, seed=0)
    expected, _ = centred_targets(teacher)
    for _ in range(3):
        batches.on_epoch_end()
        np.testing.assert_allclose(batches.targets, expected, atol=1e-6)
    # the targets keep their spread: far from all pointing one way
    assert np.abs(batches.targets.mean(0)).max() < 0.5
