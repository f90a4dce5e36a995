"""kerascnn.facetrain.finetune and `kerascnn finetune-face`: freezing, training, resume, card, bad input."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from kerascnn.cli import main
from kerascnn.errors import DatasetError
from kerascnn.facetrain.finetune import finetune_face_model, freeze_face_model, model_stages, prepare_face_crops
from kerascnn.face.pipeline import FacePipeline
from kerascnn.face.model import build_face_embedder, card_path, load_alignment, load_face_model

PEOPLE = ["s1", "s2", "s3", "s4"]


def tiny():
    return build_face_embedder(32, embedding_dim=16, widths=(8, 16), depths=(1, 1))


def run(model, orl_dir, yunet_path, out, cache, **kw):
    settings = dict(people=PEOPLE, detector=str(yunet_path), steps=4, steps_per_epoch=2, p=4, k=2,
                    learning_rate=1e-2, cache_dir=cache, verbose=0)
    settings.update(kw)
    return finetune_face_model(model, [orl_dir], out, **settings)


class _Interrupt(keras.callbacks.Callback):
    """Raise after the first epoch, keeping the weights BackupAndRestore has just saved."""

    def on_epoch_end(self, epoch, logs=None):
        self.saved = [w.copy() for w in self.model.get_weights()]
        raise RuntimeError("simulated interruption")


class _Start(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]


def test_stages_of_the_default_model_and_what_is_frozen():
    model = load_face_model()
    stages, head = model_stages(model)
    assert [s[-1] for s in stages] == ["stem_relu", "stage1_block3_out", "stage2_block4_out", "stage3_block3_out",
                                       "stage4_block3_out", "stage5_block1_out"]
    assert head == ["avg_pool", "descriptor", "unit"]
    info = freeze_face_model(model, 1)
    assert info["trainable_layers"] == ["stage5_block1_1_conv", "stage5_block1_1_affine", "stage5_block1_2_conv",
                                        "stage5_block1_2_affine", "descriptor"]
    expected = sum(model.get_layer(n).count_params() for n in info["trainable_layers"])
    assert info["trainable_parameters"] == expected == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert freeze_face_model(model, 0)["trainable_layers"] == ["descriptor"]
    with pytest.raises(ValueError, match="between 0 and the model's 6 stages"):
        freeze_face_model(model, 7)


@pytest.mark.slow
def test_finetune_trains_the_top_keeps_the_rest_resumes_and_writes_a_card(tmp_path, orl_dir, yunet_path):
    model = tiny()
    before = {w.path: w.numpy().copy() for w in model.weights}
    out, cache = tmp_path / "run", tmp_path / "cache"
    interrupt = _Interrupt()
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run(model, orl_dir, yunet_path, out, cache, trainable_stages=1, callbacks=[interrupt])
    start = _Start()
    result = run(model, orl_dir, yunet_path, out, cache, trainable_stages=1, callbacks=[start],
                 eval_folders=[orl_dir], eval_people=["s5", "s6", "s7"])
    # resumed from the backup of epoch 1, not from the start
    assert all(np.array_equal(a, b) for a, b in zip(start.weights, interrupt.saved))
    assert result.card["training"]["epochs_this_call"] == 1
    assert len(result.card["training"]["loss_per_epoch"]) == 2
    after = {w.path: w.numpy() for w in result.model.weights}
    trainable = set(result.card["training"]["frozen"]["trainable_layers"])
    assert trainable == {"gdc_conv", "embedding"}
    for path, value in before.items():
        layer = path.split("/")[0]
        changed = not np.array_equal(value, after[path])
        assert changed == (layer in trainable), path  # BatchNorm statistics stay too
    # the written model and card
    loaded = keras.saving.load_model(result.path, safe_mode=True)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), result.model(x), atol=1e-6)
    card = json.loads(result.path.with_suffix(".json").read_text())
    assert card["data"]["people"] == 4 and card["data"]["images"] == 40
    assert card["settings"]["steps"] == 4 and card["settings"]["p"] == 4
    assert set(card["evaluation"]) >= {"before", "after", "data"}
    before = card["evaluation"]["before"]
    assert before["genuine_pairs"] == 3 * 45 and before["impostor_pairs"] == 300  # 3 people x 10 photos
    assert card["calibration"]["threshold"] == card["evaluation"]["after"]["threshold"]


@pytest.mark.slow
def test_cli_finetunes_the_default_model_by_name(tmp_path, orl_dir, yunet_path, capsys):
    code = main(["finetune-face", "--data", str(orl_dir), "--people", "s1", "s2", "--out", str(tmp_path / "ft"),
                 "--detector", str(yunet_path), "--steps", "1", "--steps-per-epoch", "1", "--p", "2", "--k", "2",
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    card = json.loads((tmp_path / "ft" / "face_model.json").read_text())
    assert card["source_model"]["name"] == "dlib"
    assert card["alignment"] == json.loads(card_path("dlib").read_text())["alignment"]
    # the pipeline aligns faces for the fine-tuned model as for its source
    tuned = load_alignment(tmp_path / "ft" / "face_model.keras").to_dict()
    assert tuned == load_alignment("dlib").to_dict() != load_alignment("small").to_dict()
    assert card["training"]["frozen"]["trainable_parameters"] == 1213952
    assert "wrote" in capsys.readouterr().out


def _folder(tmp_path, orl_dir, layout):
    root = tmp_path / "data"
    for person, n in layout.items():
        (root / person).mkdir(parents=True)
        for i in range(n):
            shutil.copy(orl_dir / "s1" / f"{i + 1}.pgm", root / person / f"{i}.pgm")
    return root


@pytest.mark.parametrize("layout, message", [
    ({"alice": 3}, r"at least 2 people with at least 2 face images each; .* have 1 people, 1 of them"),
    ({"alice": 1, "bob": 1, "carol": 2}, r"have 3 people, 1 of them with 2 or more .*single image: alice, bob"),
])
@pytest.mark.slow
def test_too_few_people_or_images_are_refused(tmp_path, orl_dir, yunet_path, layout, message, capsys):
    root = _folder(tmp_path, orl_dir, layout)
    with pytest.raises(DatasetError, match=message):
        finetune_face_model(tiny(), [root], tmp_path / "out", detector=str(yunet_path), cache_dir=tmp_path / "c")
    code = main(["finetune-face", "--model", "small", "--data", str(root), "--out", str(tmp_path / "o2"),
                 "--detector", str(yunet_path), "--cache-dir", str(tmp_path / "c")])
    assert code == 2
    assert "kerascnn finetune-face: error: triplet fine-tuning needs P x K batches" in capsys.readouterr().err


def test_missing_folder_and_unknown_people_are_refused(tmp_path, orl_dir):
    with pytest.raises(DatasetError, match="does not exist or is not a folder"):
        finetune_face_model(tiny(), [tmp_path / "nope"], tmp_path / "out")
    with pytest.raises(DatasetError, match="no person folders among the 1 people asked for"):
        finetune_face_model(tiny(), [orl_dir], tmp_path / "out", people=["nobody"])


@pytest.mark.slow
def test_crops_are_the_pipelines_inference_crops_and_are_cached(tmp_path, orl_dir, yunet_path):
    pipeline = FacePipeline(detector=str(yunet_path), model="dlib", select="central")
    data = prepare_face_crops([orl_dir], pipeline, ["s3", "s9"], tmp_path, yunet_path, progress=False)
    assert data.people == ["s3", "s9"] and len(data) == 20 and data.crops.shape[1:] == (150, 150, 3)
    batch = pipeline.embed_images(data.paths[::7], progress=False, keep_crops=True)
    np.testing.assert_array_equal(batch.crops, data.crops[::7])
    (cached,) = (tmp_path / "faces").glob("*.npz")

    def no_detector(image):
        raise AssertionError("the cache was not used")

    blind = FacePipeline(detector=no_detector, model="dlib", select="central")
    again = prepare_face_crops([orl_dir], blind, ["s3", "s9"], tmp_path, yunet_path, progress=False)
    np.testing.assert_array_equal(again.crops, data.crops)
    assert list(again.labels) == list(data.labels) == [0] * 10 + [1] * 10
