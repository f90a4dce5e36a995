"""kerascnn.training: strategies, precision, schedules, callbacks, fit, resume after a kill."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from _training_worker import resume_run, tiny_data, tiny_model
from kerascnn import training
from kerascnn.errors import CheckpointMismatchError, ClusterConfigError
from kerascnn.losses import default_loss

WORKER = Path(__file__).with_name("_training_worker.py")


# --- TF_CONFIG and strategies ------------------------------------------------------------------
CLUSTER = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("{cluster: 1", "TF_CONFIG is not valid JSON"),
        ("[1, 2]", "must be a JSON object with 'cluster' and 'task', got list"),
        (json.dumps({"cluster": CLUSTER}), "it lacks 'task'"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "it lacks 'cluster'"),
        (json.dumps({"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}), "lists of 'host:port'"),
        (json.dumps({"cluster": CLUSTER, "task": {"type": "chief", "index": 0}}), "task type 'chief' is not a job of the cluster (jobs: ['worker'])"),
        (json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 2}}), "task index 2 is out of range for job 'worker' of 2 task(s)"),
        (json.dumps({"cluster": CLUSTER, "task": {"type": "worker"}}), "'task' must be {'type': ..., 'index': ...}"),
    ],
)
def test_bad_tf_config_is_reported(monkeypatch, text, message):
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(ClusterConfigError) as info:
        training.get_strategy()
    assert message in str(info.value)


def test_tf_config_that_parses():
    config = {"cluster": CLUSTER, "task": {"type": "worker", "index": 1}}
    assert training.parse_tf_config(json.dumps(config)) == config
    assert training.parse_tf_config("  ") is None


def test_default_strategy_on_cpu(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = training.get_strategy()
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    with pytest.raises(ClusterConfigError, match="needs TF_CONFIG"):
        training.get_strategy("multi_worker")
    with pytest.raises(ValueError, match="strategy kind must be one of"):
        training.get_strategy("tpu")


# --- precision and XLA -------------------------------------------------------------------------
@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_set_precision(restore_policy):
    assert training.set_precision("auto") == "float32"  # this machine has no GPU
    assert training.set_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision policy must be one of"):
        training.set_precision("float8")
    assert training.resolve_jit_compile("auto") is False
    assert training.resolve_jit_compile(True) is True


def test_precision_scope_restores_the_previous_policy(restore_policy):
    keras.mixed_precision.set_global_policy("float32")
    with training.precision_scope("mixed_bfloat16") as name:
        assert name == "mixed_bfloat16"
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError), training.precision_scope("mixed_float16"):
        raise RuntimeError("interrupted training")
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_float32_output_under_mixed_precision(restore_policy, tmp_path):
    training.set_precision("mixed_bfloat16")
    model = tiny_model()
    assert keras.backend.standardize_dtype(model.output.dtype) == "bfloat16"
    cast = training.float32_output(model)
    assert keras.backend.standardize_dtype(cast.output.dtype) == "float32"
    assert cast.layers[-1].name == "predictions_float32"
    assert training.float32_output(cast) is cast
    x, y = tiny_data(n=8)
    np.testing.assert_allclose(cast.predict(x, verbose=0), model.predict(x, verbose=0).astype("float32"))
    # the loss of a mixed model is computed in float32 and it trains
    training.compile_model(cast, learning_rate=0.01, optimizer="adam")
    history = cast.fit(x, y, epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])
    cast.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), cast.predict(x, verbose=0))


def test_default_loss_follows_last_activation():
    x = keras.Input((4,))
    logits = keras.Model(x, keras.layers.Dense(3)(x))
    softmax = keras.Model(x, keras.layers.Dense(3, activation="softmax")(x))
    cast = keras.Model(x, keras.layers.Activation("linear", dtype="float32")(softmax.output))
    assert default_loss(logits).get_config()["from_logits"] is True
    assert default_loss(softmax).get_config()["from_logits"] is False
    assert default_loss(cast).get_config()["from_logits"] is False


def test_compile_model_rejects_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        training.compile_model(tiny_model(), optimizer="adagrad2")


# --- schedule and callbacks --------------------------------------------------------------------
def test_warmup_cosine_matches_the_formula():
    lr, total, warmup = 0.1, 50, 10
    schedule = training.warmup_cosine(lr, total, warmup)
    for step in range(0, total + 1, 5):
        if step < warmup:
            expected = lr * step / warmup
        else:
            expected = 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert float(restored(17)) == pytest.approx(float(schedule(17)))
    with pytest.raises(ValueError, match="must be more than warmup_steps"):
        training.warmup_cosine(lr, 10, 10)


def test_default_callbacks(tmp_path):
    callbacks = training.default_callbacks(tmp_path / "run", monitor="val_accuracy", patience=3, schedule="plateau")
    kinds = [type(c).__name__ for c in callbacks]
    expected = ["BackupAndRestore", "ModelCheckpoint", "EarlyStopping", "ReduceLROnPlateau", "CSVLogger"]
    assert kinds[:5] == expected
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    assert kinds[5:] == (["TensorBoard"] if has_tensorboard else [])
    if not has_tensorboard:
        with pytest.raises(ImportError, match="needs the tensorboard package"):
            training.default_callbacks(tmp_path / "run3", tensorboard=True)
    assert callbacks[2].patience == 3 and callbacks[2].monitor == "val_accuracy"
    none = training.default_callbacks(tmp_path / "run2", patience=None, checkpoint=False, tensorboard=False)
    assert [type(c).__name__ for c in none] == ["BackupAndRestore", "CSVLogger"]
    with pytest.raises(ValueError, match="schedule must be one of"):
        training.default_callbacks(tmp_path, schedule="step")


# --- fit ---------------------------------------------------------------------------------------
def _tiny_ds(n=48, batch=16):
    x, y = tiny_data(n=n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


@pytest.mark.slow
def test_fit_trains_and_saves_the_run(tmp_path):
    ds = _tiny_ds()
    model = tiny_model()
    history = training.fit(model, ds, ds, epochs=3, run_dir=tmp_path, learning_rate=0.05, verbose=0)
    assert len(history.history["loss"]) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert {"model.keras", "best.keras", "history.csv", "history.png"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "backup").exists()  # removed once training completed
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = training.read_history(tmp_path / "history.csv")
    np.testing.assert_allclose(logged["loss"], history.history["loss"], rtol=1e-6)
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    x, _ = tiny_data(n=8)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # the cosine schedule ran to its end: the last learning rate is about 0
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-6)


def test_fit_cosine_needs_a_known_length(tmp_path):
    x, y = tiny_data(n=16)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).filter(lambda a, b: True)
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        training.fit(tiny_model(), ds, epochs=1, run_dir=tmp_path, verbose=0)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("simulated interruption")


@pytest.mark.slow
def test_resume_with_another_architecture_is_refused(tmp_path):
    ds = _tiny_ds(n=16)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        training.fit(tiny_model(), ds, epochs=2, run_dir=tmp_path, callbacks=[_Interrupt()], verbose=0)
    assert (tmp_path / "backup" / "latest.weights.h5").exists()
    other = tiny_model(classes=5)
    with pytest.raises(CheckpointMismatchError) as info:
        training.fit(other, ds, epochs=2, run_dir=tmp_path, verbose=0)
    message = str(info.value)
    assert f"{tmp_path} holds a checkpoint of model 'tiny' (8 weight tensors" in message
    assert f"delete {tmp_path / 'backup'}" in message


def test_plot_history_from_a_dict(tmp_path):
    path = training.plot_history({"loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "accuracy": [0.1, 0.5]}, tmp_path / "h.png")
    assert path.stat().st_size > 1000


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    """Kill training (SIGKILL) after epoch 2 of 4, resume it, compare with a run never stopped."""
    run = tmp_path / "interrupted"
    proc = subprocess.run(
        [sys.executable, str(WORKER), "resume", str(run), "4", "2"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr[-3000:]  # really killed
    assert len(training.read_history(run / "history.csv")["loss"]) == 2
    keras.backend.clear_session()
    resumed, history = resume_run(str(run), 4)
    assert len(history.history["loss"]) == 2  # only epochs 3 and 4 ran now
    assert len(training.read_history(run / "history.csv")["loss"]) == 4
    keras.backend.clear_session()
    straight, _ = resume_run(str(tmp_path / "straight"), 4)
    for a, b in zip(resumed.weights, straight.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    initial = tiny_model().get_weights()
    assert not np.allclose(initial[0], straight.weights[0].numpy())


# --- the train command -------------------------------------------------------------------------
@pytest.mark.slow
def test_train_command_on_orl(orl_dir, tmp_path, capsys):
    from kerascnn.cli import main

    out = tmp_path / "run"
    code = main([
        "train", "--model", "lenet5", "--data", str(orl_dir), "--augment", "light", "--epochs", "1",
        "--image-size", "32", "--batch-size", "64", "--out", str(out), "--seed", "1",
    ])
    assert code == 0, capsys.readouterr().err
    assert {"model.keras", "history.csv", "history.png", "class_names.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "class_names.json").read_text())[:2] == ["s1", "s10"]
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 40)
    logged = training.read_history(out / "history.csv")
    assert len(logged["loss"]) == 1 and "val_accuracy" in logged
    assert f"saved {out}/model.keras" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "resnet7"], "Unknown model 'resnet7'"),
        (["--model", "lenet5", "--augment", "wild"], "wild"),
    ],
)
def test_train_command_errors(orl_dir, tmp_path, capsys, extra, message):
    from kerascnn.cli import main

    code = main(["train", "--data", str(orl_dir), "--epochs", "1", "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kerascnn train: error:") and message in err


def test_train_command_rejects_a_bad_val_split(orl_dir, capsys):
    from kerascnn.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "lenet5", "--data", str(orl_dir), "--val-split", "1.5"])
    assert info.value.code == 2 and "must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_read_history_keeps_the_last_row_of_each_epoch_and_reads_na(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,2.0,NA\n1,1.5,1.9\n1,1.4,1.8\n2,1.0,\n")
    history = training.read_history(path)
    assert history["loss"] == [2.0, 1.4, 1.0]
    assert math.isnan(history["val_loss"][0]) and history["val_loss"][1] == 1.8 and math.isnan(history["val_loss"][2])
