"""kerascnn.transfer: new head, frozen backbone with BatchNorm in inference mode, top stages, LR."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from kerascnn import transfer


def _classifier(classes: int = 5) -> keras.Model:
    """A small 'pretrained' classifier: three stages (reductions 2, 4, 8) with BatchNorm."""
    inputs = keras.Input((16, 16, 3), name="input")
    x = inputs
    for s, filters in enumerate((4, 8, 8), start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", name=f"stage{s}_conv")(x)
        x = layers.BatchNormalization(name=f"stage{s}_bn")(x)
        x = layers.Activation("relu", name=f"stage{s}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="predictions")(x), name="small")


def _data(n: int = 32, classes: int = 3):
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = (rng.normal(size=(n, 16, 16, 3)) * 20 + 100 + 30 * y[:, None, None, None]).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y.astype("int32"))).batch(8), x


def _weights(model: keras.Model, prefix: str) -> dict[str, np.ndarray]:
    backbone = transfer.get_backbone(model)
    return {w.path: w.numpy().copy() for layer in backbone.layers if layer.name.startswith(prefix) for w in layer.weights}


def _changed(before: dict, after: dict) -> dict[str, bool]:
    return {k: not np.array_equal(before[k], after[k]) for k in before}


def test_build_finetune_model_cuts_the_old_head(tmp_path):
    model = transfer.build_finetune_model(_classifier(), num_classes=3, dropout=0.1)
    assert model.output.shape == (None, 3)
    assert keras.backend.standardize_dtype(model.output.dtype) == "float32"
    backbone = transfer.get_backbone(model)
    assert backbone.name == "small" and backbone.output.shape == (None, 2, 2, 8)
    assert [layer.name for layer in model.layers[-4:]] == ["head_pool", "head_dropout", "head_dense", "predictions"]
    _, x = _data(8)
    model.save(tmp_path / "ft.keras")
    loaded = keras.saving.load_model(tmp_path / "ft.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_backbone_from_a_saved_model_and_a_weights_file(tmp_path):
    source = _classifier()
    source.save(tmp_path / "pre.keras")
    source.save_weights(tmp_path / "pre.weights.h5")
    from_file = transfer.get_backbone(transfer.build_finetune_model(tmp_path / "pre.keras", 3))
    fresh = _classifier()
    from_weights = transfer.get_backbone(transfer.build_finetune_model(fresh, 3, weights=str(tmp_path / "pre.weights.h5")))
    for a, b, c in zip(source.weights, from_file.weights, from_weights.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(a.numpy(), c.numpy())
    with pytest.raises(FileNotFoundError, match="missing.keras does not exist"):
        transfer.build_finetune_model(tmp_path / "missing.keras", 3)
    with pytest.raises(TypeError, match="got int"):
        transfer.build_finetune_model(3, 3)
    with pytest.raises(ValueError, match="pooling must be 'avg' or 'max'"):
        transfer.build_finetune_model(_classifier(), 3, pooling="gem")


def test_stage_ends_from_resolution_and_from_the_registry():
    backbone = transfer.get_backbone(transfer.build_finetune_model(_classifier(), 3))
    assert transfer.stage_ends(backbone) == ["stage1_relu", "stage2_relu", "stage3_relu"]
    resnet = transfer.build_finetune_model("resnet18", 3, input_shape=(32, 32, 3))
    ends = transfer.stage_ends(transfer.get_backbone(resnet))
    assert ends == ["conv1_relu", "conv2_block2_out", "conv3_block2_out", "conv4_block2_out", "conv5_block2_out"]
    top = transfer.unfreeze_top(resnet, 1)
    assert top[0][0].startswith("conv5_block1") and top[0][-1] == "conv5_block2_out"


def test_phase1_changes_only_the_head_and_keeps_bn_statistics():
    ds, _ = _data()
    model = transfer.build_finetune_model(_classifier(), 3, dropout=0)
    before = _weights(model, "stage")
    head_before = model.get_layer("head_dense").get_weights()[0].copy()
    history = transfer.finetune(model, ds, head_epochs=2, finetune_epochs=0, head_lr=0.05, verbose=0)
    assert len(history["loss"]) == 2
    assert not any(_changed(before, _weights(model, "stage")).values())  # moving stats included
    assert not np.array_equal(head_before, model.get_layer("head_dense").get_weights()[0])


@pytest.mark.slow
def test_phase2_changes_top_stages_only_and_bn_stays_in_inference_mode():
    ds, _ = _data()
    model = transfer.build_finetune_model(_classifier(), 3, dropout=0)
    before = _weights(model, "stage")
    history = transfer.finetune(model, ds, head_epochs=1, finetune_epochs=2, finetune_lr=0.01, unfreeze_stages=2, verbose=0)
    assert len(history["loss"]) == 3
    changed = _changed(before, _weights(model, "stage"))
    for path, did in changed.items():
        layer = path.split("/")[-2]
        assert did == (layer in ("stage2_conv", "stage3_conv")), path  # BatchNorm stays frozen


def test_unfreeze_top_bounds():
    model = transfer.build_finetune_model(_classifier(), 3)
    assert transfer.unfreeze_top(model, 0) == []
    assert not transfer.get_backbone(model).trainable_weights
    stages = transfer.unfreeze_top(model, 3)
    assert [s[-1] for s in stages] == ["stage3_relu", "stage2_relu", "stage1_relu"]
    with pytest.raises(ValueError, match="n_stages must be between 0 and the backbone's 3 stages"):
        transfer.unfreeze_top(model, 4)


def test_layerwise_adam_scales_each_variables_step():
    """One Adam step on two variables, against the formula, with multipliers 1 and 0.1."""
    a, b = keras.Variable(np.ones(3, "float32"), name="a"), keras.Variable(np.ones(3, "float32"), name="b")
    optimizer = transfer.LayerwiseAdam(0.01, lr_multipliers={b.path: 0.1})
    grad = np.array([0.5, -2.0, 1e-3], "float32")
    optimizer.apply_gradients([(tf.constant(grad), a), (tf.constant(grad), b)])
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-7, 0.01
    m, v = (1 - beta1) * grad, (1 - beta2) * grad**2
    step = lr * np.sqrt(1 - beta2) / (1 - beta1) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(1 - a.numpy(), step, rtol=1e-4)
    np.testing.assert_allclose(1 - b.numpy(), 0.1 * step, rtol=1e-4)
    restored = transfer.LayerwiseAdam.from_config(optimizer.get_config())
    assert restored.lr_multipliers == {b.path: 0.1}


@pytest.mark.slow
def test_per_stage_lr_decay_gives_each_stage_its_multiplier():
    model = transfer.build_finetune_model(_classifier(), 3)
    stages = transfer.unfreeze_top(model, 2)
    multipliers = transfer.stage_lr_multipliers(model, stages, 0.5)
    by_layer = {path.split("/")[-2]: m for path, m in multipliers.items()}
    assert by_layer == {"stage3_conv": 1.0, "stage2_conv": 0.5}
    with pytest.raises(ValueError, match="per_stage_lr_decay must be in"):
        transfer.stage_lr_multipliers(model, stages, 0)
    ds, _ = _data(16)
    history = transfer.finetune(model, ds, head_epochs=1, finetune_epochs=1, unfreeze_stages=2, per_stage_lr_decay=0.5, verbose=0)
    assert len(history["loss"]) == 2
    assert model.optimizer.lr_multipliers == multipliers


# The proof on real data (pretrain on LFW identities, fine-tune on 3-shot ORL, beat training from
# scratch with the same budget) runs once per suite, in notebooks/04_finetuning.ipynb (executed
# by tests/test_notebooks.py, which asserts it); scripts/finetune_lfw_to_orl.py is the full run.
