"""Online distillation (kerascnn.facetrain.distill): the teacher describes every augmented view,
the same augmentation reaches the student's crop and the teacher's chip, and the trainer runs it."""

from __future__ import annotations

from dataclasses import replace

import cv2
import keras
import numpy as np
import pytest
from _face_helpers import tiny_embedder

from kerascnn.errors import DatasetError, FaceModelError, WeightsMismatchError
from kerascnn.distillation import centred_targets
from kerascnn.facetrain import trainer
from kerascnn.face.align import DEFAULT_TEMPLATE, template
from kerascnn.facetrain.data import FaceData
from kerascnn.face.model import load_alignment
from kerascnn.facetrain.distill import OnlineDistillBatches, PairedAugment, ViewAugment, describe

CANVAS, SIZE, CHIP = 40, 32, 48
STILL = ViewAugment(flip=0.0, rotation=0.0, zoom=0.0, shift=0.0, brightness=0.0, contrast=0.0,
                    saturation=(0.5, 0.5), grey=0.0, blur=0.0)  # the identity


def _images(n, side, seed):
    """Smooth random RGB images (so that a mirror or a warp changes them visibly)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (n, 6, 6, 3)).astype(np.float32)
    big = np.stack([cv2.resize(s, (side, side), interpolation=cv2.INTER_CUBIC) for s in small])
    return big.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def teacher():
    keras.utils.set_random_seed(1)
    return tiny_embedder(CHIP, dim=16, name="tiny_teacher")


def test_flipped_views_get_the_teacher_embedding_of_the_flipped_chip(teacher):
    canvases, chips = _images(16, CANVAS, 0), _images(16, CHIP, 1)
    flip_only = ViewAugment(**{**STILL.__dict__, "flip": 0.5})
    augment = PairedAugment(CANVAS, SIZE, CHIP, DEFAULT_TEMPLATE.points("landmarks", CHIP), flip_only)
    mean = describe(teacher, chips).mean(0)
    batches = OnlineDistillBatches(canvases, chips, teacher, augment, batch_size=16, mean=mean, seed=3)
    idx, views, _, params = batches.views(0)
    _, targets = batches[0]
    flipped = params["flip"]
    assert 0 < flipped.sum() < 16  # both kinds in the batch
    margin = (CANVAS - SIZE) // 2
    centre = canvases[idx, margin:margin + SIZE, margin:margin + SIZE]
    np.testing.assert_allclose(views[flipped], centre[flipped][:, :, ::-1], atol=1e-3)
    np.testing.assert_allclose(views[~flipped], centre[~flipped], atol=1e-3)
    # the reference: the teacher's own embedding of the mirrored (or plain) chip, centred
    plain = np.where(flipped[:, None, None, None], chips[idx][:, :, ::-1], chips[idx])
    expected, _ = centred_targets(describe(teacher, plain), mean)
    np.testing.assert_allclose(targets, expected, atol=1e-5)
    unflipped_targets, _ = centred_targets(describe(teacher, chips[idx]), mean)
    assert np.abs(targets[flipped] - unflipped_targets[flipped]).max() > 1e-3  # the flip mattered
    # same seed, same views and targets; a later epoch draws other views
    again = OnlineDistillBatches(canvases, chips, teacher, augment, batch_size=16, mean=mean, seed=3)
    np.testing.assert_array_equal(again[0][1], targets)
    again.on_epoch_end()
    assert not np.array_equal(again.views(0)[3]["flip"], flipped)


def _centroid(image):
    weight = image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


def test_rotation_zoom_and_shift_move_the_face_the_same_way_in_both_crops():
    """A blob drawn on the student's canvas and on the teacher's chip (the same point of the face,
    through the fixed template-to-template similarity) lands on the same point after augmenting."""
    alignment = load_alignment("dlib")  # a template other than the student's
    points = alignment.points("landmarks", 150)
    augment = PairedAugment(80, 64, 150, points, ViewAugment(**{**STILL.__dict__, "rotation": 0.05,
                                                                 "zoom": 0.1, "shift": 0.05}))
    frame = augment.frame
    src = template(64) + 8  # the student's template on its canvas
    # reference: least squares over [[a, -b, tx], [b, a, ty]] mapping src onto the teacher's points
    rows = np.concatenate([np.c_[src[:, 0], -src[:, 1], np.ones(5), np.zeros(5)],
                           np.c_[src[:, 1], src[:, 0], np.zeros(5), np.ones(5)]])
    a, b, tx, ty = np.linalg.lstsq(rows, np.concatenate([points[:, 0], points[:, 1]]), rcond=None)[0]
    np.testing.assert_allclose(frame[:2], [[a, -b, tx], [b, a, ty]], atol=1e-3)
    canvas = np.zeros((80, 80, 3), np.float32)
    cv2.circle(canvas, (30, 47), 3, (255, 255, 255), -1)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 2.0)
    chip = cv2.warpAffine(canvas, frame[:2], (150, 150), flags=cv2.INTER_LINEAR)
    student, teacher, params = augment(canvas[None].repeat(4, 0), chip[None].repeat(4, 0), np.random.default_rng(0))
    for i in range(4):
        seen = _centroid(student[i]) + 8  # back in canvas pixels
        np.testing.assert_allclose(frame[:2] @ np.append(seen, 1), _centroid(teacher[i]), atol=0.5)
        assert np.linalg.norm(seen - _centroid(canvas)) > 1.0  # the view really moved
    assert len(set(np.round(params["angle"], 6))) == 4


def test_photometric_changes_are_the_same_for_both_crops():
    colours = np.array([[200, 40, 90], [30, 160, 220], [120, 120, 60], [250, 250, 10]], np.uint8)
    canvases = np.broadcast_to(colours[:, None, None], (4, CANVAS, CANVAS, 3)).copy()
    chips = np.broadcast_to(colours[:, None, None], (4, CHIP, CHIP, 3)).copy()
    colour = ViewAugment(flip=0.0, rotation=0.0, zoom=0.0, shift=0.0, grey=0.5)
    augment = PairedAugment(CANVAS, SIZE, CHIP, DEFAULT_TEMPLATE.points("landmarks", CHIP), colour)
    student, teacher, params = augment(canvases, chips, np.random.default_rng(2))
    np.testing.assert_allclose(student.mean((1, 2)), teacher.mean((1, 2)), atol=1e-2)
    assert np.abs(student.mean((1, 2)) - colours).max() > 5  # the colours did change
    grey = params["grey"]
    assert np.ptp(teacher[grey], axis=-1).max() < 1e-3 and np.ptp(teacher[~grey], axis=-1).max() > 1


@pytest.mark.slow
def test_online_training_starts_from_given_weights_and_runs(tmp_path, teacher):
    from kerascnn.face.model import build_face_embedder

    n = 12
    data = FaceData([f"/x/{i}.jpg" for i in range(n)], np.arange(n) // 3, [f"p{i}" for i in range(4)],
                    _images(n, CANVAS, 0), np.zeros((n, 5, 2), np.float32), np.ones(n, bool), None, SIZE,
                    _images(n, CHIP, 1))
    start = build_face_embedder(SIZE, 16, (8, 16), (1, 1))
    start.save(tmp_path / "start.keras")
    config = trainer.FaceTrainConfig(input_size=SIZE, canvas=CANVAS, embedding_dim=16, widths=(8, 16), depths=(1, 1),
                                     epochs=1, batch_size=4, online_teacher="tiny",
                                     init_weights=str(tmp_path / "start.keras"), learning_rate=0.0)
    online = (teacher, DEFAULT_TEMPLATE, describe(teacher, data.chips).mean(0))
    embedder, history, _, _ = trainer.train_face_model(config, data, np.arange(n), tmp_path / "run", verbose=0,
                                                        online=online)
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    assert (tmp_path / "run" / "training_log.csv").is_file()
    for got, want in zip(embedder.trainable_weights, start.trainable_weights):  # lr 0: the start's weights
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-7)
    with pytest.raises(DatasetError, match="online distillation needs the teacher"):
        trainer.train_face_model(config, data, np.arange(n), tmp_path / "run2", verbose=0)
    with pytest.raises(FaceModelError, match="the online teacher gives 16-d embeddings, the student 32-d"):
        trainer.train_face_model(replace(config, embedding_dim=32, init_weights=None), data, np.arange(n),
                                 tmp_path / "run3", verbose=0, online=online)
    with pytest.raises(WeightsMismatchError, match="is not this architecture .* widths \\[8, 24\\]"):
        trainer.train_face_model(replace(config, widths=(8, 24)), data, np.arange(n), tmp_path / "run4",
                                 verbose=0, online=online)


def test_online_batches_refuse_mismatched_chips(teacher):
    augment = PairedAugment(CANVAS, SIZE, CHIP, DEFAULT_TEMPLATE.points("landmarks", CHIP))
    with pytest.raises(DatasetError, match="one teacher chip per crop, got 3 chips for 4 crops"):
        OnlineDistillBatches(_images(4, CANVAS, 0), _images(3, CHIP, 0), teacher, augment, 2, np.zeros(16))
    with pytest.raises(DatasetError, match="the teacher takes 48x48 chips, got 40x40"):
        OnlineDistillBatches(_images(4, CANVAS, 0), _images(4, 40, 0), teacher, augment, 2, np.zeros(16))


def test_train_face_options_name_the_online_teacher():
    from kerascnn.cli import build_parser

    parse = build_parser().parse_args
    args = parse(["train-face", "--data", "faces", "--online-teacher", "dlib", "--init-weights", "small"])
    assert args.online_teacher == "dlib" and args.init_weights == "small"
    assert args.detector is None  # the shipped YuNet
    assert parse(["train-face", "--data", "faces"]).online_teacher is None
