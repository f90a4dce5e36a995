"""Every registered model through the same checks (one list: ``list_models()``).

Builds are the cost here (hundreds of layers each on a 2-core CPU), so each test builds one
model at the smallest input the network takes; the deepest models are marked slow.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import kerascnn
from _backends import weight_gradients
from kerascnn.errors import ImageDataFormatError, InputShapeError, ModelArgumentError, UnknownModelError


def _run(model, x):
    """An eager forward pass (``predict`` would trace a tf.function: slow for one batch)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


# models whose top is not a classifier: the last axis of their output for a number of classes
OUTPUT_CHANNELS = {"yolo_v1": lambda classes: 2 * 5 + classes}  # S x S x (B * 5 + C)
# the fast lane (pytest -m "not slow") keeps one small model per family; CI runs them all
HEAVY = {"resnet101", "resnet152", "resnet101_v2", "resnet152_v2", "densenet169", "densenet201", "vgg19",
         "densenet121", "inception_v3", "se_resnet50", "resnet50_v2", "resnet50", "resnet34", "yolo_v1", "unet",
         "mobilenet_v2", "vgg13", "vgg16", "inception_resnet_v1"}
# one model per family for the pooling options (the pooling code is shared by every builder)
POOLING_MODELS = ["lenet5", "alexnet", "vgg11", "resnet18", "resnet50_v2", "densenet121", "mobilenet",
                  "mobilenet_v2", "googlenet", "inception_v3", "unet"]


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


def _small_shape(name: str, channels: int | None = None) -> tuple[int, int, int]:
    info = kerascnn.model_info(name)
    size = max(info.min_input_size, 32)
    return (size, size, channels or info.default_input_shape[2])


def _batch(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, *shape)).astype("float32")


@pytest.mark.parametrize("name", _params(kerascnn.list_models()))
def test_classifier_forward_gradients_fit_and_keras_round_trip(name, tmp_path):
    shape = _small_shape(name)
    model = kerascnn.create_model(name, input_shape=shape, classes=3)
    x = _batch(shape)
    y = _run(model, x)
    assert y.shape[0] == 2 and y.shape[-1] == OUTPUT_CHANNELS.get(name, lambda classes: classes)(3)
    assert np.all(np.isfinite(y))

    weights = np.random.default_rng(1).normal(size=y.shape).astype("float32")
    grads = weight_gradients(model, x, weights)
    dead = [w.path for w, g in zip(model.trainable_weights, grads) if not np.any(g)]
    assert not dead, f"weights without gradient: {dead[:5]}"

    # a few training steps (eager: tracing a train step per model would cost more than the test)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", run_eagerly=True)
    history = model.fit(x, np.zeros_like(y), batch_size=1, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])

    y = _run(model, x)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(_run(loaded, x), y, atol=1e-6)


@pytest.mark.parametrize("name", _params(kerascnn.list_models()))
def test_headless_one_channel(name):
    info = kerascnn.model_info(name)
    shape = _small_shape(name, channels=1)
    model = kerascnn.create_model(name, input_shape=shape, include_top=False)
    y = _run(model, _batch(shape))
    assert y.ndim == 4 and np.all(np.isfinite(y))
    if not name.startswith("unet"):  # unet's headless output is its decoder, not the encoder's last stage
        assert y.shape[-1] == info.feature_info[-1]["channels"]


@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize("name", _params(POOLING_MODELS))
def test_headless_pooling(name, pooling):
    shape = _small_shape(name)
    model = kerascnn.create_model(name, input_shape=shape, include_top=False, pooling=pooling)
    headless = model.layers[-2].output.shape[-1]
    y = _run(model, _batch(shape))
    assert y.shape == (2, headless)
    assert model.layers[-1].name == f"{pooling}_pool"


@pytest.mark.parametrize("name", _params(kerascnn.list_models()))
def test_features_match_feature_info(name):
    """Symbolic build at a large input: channels exact, sizes at input / reduction (unpadded
    convolutions may lose a few border pixels)."""
    info = kerascnn.model_info(name)
    size = 512 if name == "unet" else max(info.default_input_shape[0], 512)
    # U-Net's unpadded convolutions trim 4 pixels per level (test_unet.py checks the paper's
    # sizes); with padding="same" its reductions are exact
    extra = {"padding": "same"} if name == "unet" else {}
    model = kerascnn.create_model(
        name, input_shape=(size, size, info.default_input_shape[2]), features_only=True, **extra
    )
    assert model.output_names == [f["name"] for f in info.feature_info]
    assert model.feature_info == info.feature_info  # computed from the built model
    for out, feature in zip(model.outputs, info.feature_info):
        assert out.shape[-1] == feature["channels"], feature
        expected = size / feature["reduction"]
        assert 0 <= expected - out.shape[1] <= 0.1 * expected + 1, (feature, out.shape)


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModelError, match=r"Unknown model 'resnet5'\. Did you mean: .*resnet50"):
        kerascnn.create_model("resnet5")


@pytest.mark.parametrize("name,size,needed", [("resnet18", 31, 32), ("alexnet", 66, 67), ("lenet5", 28, 32)])
def test_too_small_input(name, size, needed):
    with pytest.raises(InputShapeError, match=f"input {size}x{size} is too small; .* at least {needed}x{needed}"):
        kerascnn.create_model(name, input_shape=(size, size, 3))


def test_imagenet_weights_need_three_channels():
    with pytest.raises(InputShapeError, match="ImageNet weights need 3 input channels, got 1"):
        kerascnn.create_model("resnet50", input_shape=(64, 64, 1), weights="imagenet")
    with pytest.raises(ValueError, match="no ImageNet weights exist for this model"):
        kerascnn.create_model("resnet18", weights="imagenet")


def test_yolo_v1_arguments():
    with pytest.raises(ValueError, match=r"input sides must be multiples of 64 .* got \(100, 128, 3\)"):
        kerascnn.create_model("yolo_v1", input_shape=(100, 128, 3))
    with pytest.raises(ValueError, match="classifier_activation must be None, got 'softmax'"):
        kerascnn.create_model("yolo_v1", input_shape=(64, 64, 3), classifier_activation="softmax")
    model = kerascnn.create_model("yolo_v1", input_shape=(128, 192, 3), classes=4, boxes_per_cell=3)
    assert model.output_shape == (None, 2, 3, 3 * 5 + 4)  # S = input / 64 on each side


def test_alexnet_groups_argument():
    with pytest.raises(ValueError, match="groups must be 1 or 2, got 3"):
        kerascnn.create_model("alexnet", groups=3)


def test_feature_info_is_consistent():
    for name in kerascnn.list_models():
        info = kerascnn.model_info(name)
        assert info.preprocessing in ("caffe", "tf", "torch", "none")
        assert info.feature_info and all(f["channels"] > 0 for f in info.feature_info)
        reductions = [f["reduction"] for f in info.feature_info]
        if name != "unet":
            assert reductions == sorted(reductions) and math.log2(reductions[-1]).is_integer()


# --- Keras conventions (issue 19) ----------------------------------------------------------------
@pytest.fixture
def channels_first():
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format("channels_last")


@pytest.mark.parametrize("name", kerascnn.list_models())
def test_channels_first_is_refused_by_every_model(name, channels_first):
    """keras.applications builds (3, H, W) models then; kerascnn refuses rather than build wrong."""
    with pytest.raises(ImageDataFormatError, match=rf"^{name}: kerascnn builds channels-last models only .*"
                                                   r"image_data_format\(\) is 'channels_first'"):
        kerascnn.create_model(name, input_shape=_small_shape(name))


# models whose builders named the model themselves before name= was passed through
@pytest.mark.parametrize("name", ["lenet5", "resnet18", "squeezenet1_1", "yolo_v1", "googlenet", "unet"])
def test_create_model_takes_keras_name(name):
    model = kerascnn.create_model(name, input_shape=_small_shape(name), name="my_model")
    assert model.name == "my_model"


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "mobilenet"])
def test_zero_classes_means_no_classifier_as_timm(name):
    """timm's num_classes=0: pooled features of the last stage, no Dense layer."""
    shape = _small_shape(name)
    model = kerascnn.create_model(name, input_shape=shape, classes=0)
    assert model.output_shape == (None, kerascnn.model_info(name).feature_info[-1]["channels"])
    assert model.layers[-1].name == "avg_pool"
    assert model.get_layer("avg_pool").output.shape == model.output.shape
    with pytest.raises(ModelArgumentError, match=rf"{name}: classes must be >= 0 \(0: no classifier\), got -1"):
        kerascnn.create_model(name, input_shape=shape, classes=-1)


def test_built_models_carry_feature_info_from_their_actual_widths():
    registry = kerascnn.model_info("mobilenet").feature_info
    half = kerascnn.create_model("mobilenet", alpha=0.5, input_shape=(64, 64, 3), features_only=True)
    assert [f["channels"] for f in half.feature_info] == [f["channels"] // 2 for f in registry]
    assert [f["channels"] for f in half.feature_info] == [out.shape[-1] for out in half.outputs]
    assert [f["reduction"] for f in half.feature_info] == [f["reduction"] for f in registry]
    v2 = kerascnn.create_model("mobilenet_v2", alpha=0.35, input_shape=(64, 64, 3), include_top=False)
    assert v2.feature_info[-1]["channels"] == v2.output_shape[-1] == 1280
    assert [f["channels"] for f in v2.feature_info[:-1]] == [8, 8, 16, 32]  # make_divisible(c * 0.35)


def test_out_indices_select_stages_as_timm():
    registry = kerascnn.model_info("resnet18").feature_info
    model = kerascnn.create_model("resnet18", input_shape=(64, 64, 3), features_only=True, out_indices=(1, -1))
    assert model.output_names == [registry[1]["name"], registry[-1]["name"]]
    assert model.feature_info == (registry[1], registry[-1])
    with pytest.raises(ModelArgumentError, match=r"out_indices must be indices of its 5 stages \(-5\.\.4\), got \(5,\)"):
        kerascnn.create_model("resnet18", input_shape=(64, 64, 3), features_only=True, out_indices=(5,))
    with pytest.raises(ModelArgumentError, match="out_indices selects stages of features_only=True"):
        kerascnn.create_model("resnet18", input_shape=(64, 64, 3), out_indices=(0,))
