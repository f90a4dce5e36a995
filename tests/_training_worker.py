"""Tiny training runs that the training tests start in separate processes.

``python tests/_training_worker.py resume RUN_DIR EPOCHS [KILL_AFTER_EPOCH]``: trains the tiny
model through :func:`kerascnn.training.fit`; with ``KILL_AFTER_EPOCH`` the process SIGKILLs
itself at the end of that epoch (after Keras' BackupAndRestore saved it), like a power cut.

``python tests/_training_worker.py multi_worker OUT.npz STEPS``: one worker of a
MultiWorkerMirroredStrategy cluster described by ``TF_CONFIG``; saves its final weights.
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402  (importing builds no TensorFlow state: the strategy can still be made)


def tiny_model(classes: int = 3, input_shape=(8, 8, 1), synchronized: bool = False):
    """A small CNN with BatchNorm (its moving statistics are part of the state to restore).

    ``synchronized=True`` computes the BatchNorm statistics over the global batch of every
    replica, so that the moving statistics too are the same on every worker.
    """
    from keras import layers

    inputs = keras.Input(input_shape, name="input")
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(synchronized=synchronized, name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny")


def tiny_data(n: int = 48, classes: int = 3, input_shape=(8, 8, 1), seed: int = 0):
    """Learnable synthetic images: the class sets the mean brightness."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = (rng.normal(size=(n, *input_shape)) + labels[:, None, None, None]).astype("float32")
    return images, labels.astype("int32")


class KillAfter(keras.callbacks.Callback):
    """SIGKILLs this process at the end of epoch ``epoch`` (1-based), after the backup."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


def resume_run(run_dir: str, epochs: int, kill_after: int | None = None):
    """Train the tiny model in ``run_dir``; returns the model and the History of this call."""
    import tensorflow as tf

    from kerascnn import training

    keras.utils.set_random_seed(0)
    images, labels = tiny_data()
    train_ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    model = tiny_model()
    callbacks = [KillAfter(kill_after)] if kill_after else []
    history = training.fit(
        model, train_ds, train_ds, epochs=epochs, run_dir=run_dir, learning_rate=0.05,
        optimizer="adam", schedule="cosine", warmup_epochs=1, patience=None,
        callbacks=callbacks, tensorboard=False, verbose=0,
    )
    return model, history


def multi_worker_run(out: str, steps: int) -> None:
    """One worker: the strategy from TF_CONFIG, a few steps, the weights saved to ``out``."""
    import numpy as np

    from kerascnn import training

    strategy = training.get_strategy()  # first, before any other TensorFlow work
    import tensorflow as tf

    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)
    task = training.parse_tf_config()["task"]["index"]
    keras.utils.set_random_seed(0)
    images, labels = tiny_data(n=64, seed=task)  # each worker has its own data
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    train_ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16).repeat().with_options(options)
    with strategy.scope():
        model = tiny_model(synchronized=True)
        training.compile_model(model, learning_rate=0.05, optimizer="sgd", jit_compile=False)
    model.fit(train_ds, epochs=1, steps_per_epoch=steps, verbose=0)
    np.savez(out, *[w.numpy() for w in model.weights], workers=strategy.num_replicas_in_sync)


if __name__ == "__main__":
    mode, target, count, *rest = sys.argv[1:]
    if mode == "resume":
        resume_run(target, int(count), int(rest[0]) if rest else None)
    elif mode == "multi_worker":
        multi_worker_run(target, int(count))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
