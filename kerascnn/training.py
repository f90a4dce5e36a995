"""Training through plain ``model.fit`` on a CPU, one GPU, several GPUs or several machines.

Four helpers and one call that puts them together:

- :func:`get_strategy` picks the ``tf.distribute`` strategy from the hardware and ``TF_CONFIG``;
- :func:`set_precision` picks the mixed-precision policy (float32 on CPU, ``mixed_float16`` on
  GPUs with tensor cores); :func:`precision_scope` sets it for a ``with`` block and restores the
  previous one afterwards;
- :func:`default_callbacks` gives Keras' own callbacks with sensible defaults: checkpoints,
  resume after an interruption (``BackupAndRestore``), early stopping, learning-rate schedules,
  CSV and TensorBoard logs;
- :func:`fit` compiles sensibly, trains with ``model.fit``, resumes an interrupted run found in
  ``run_dir``, and saves ``model.keras``, ``history.csv`` and ``history.png``.

Example:
    >>> import kerascnn
    >>> from kerascnn import training
    >>> strategy = training.get_strategy()
    >>> with training.precision_scope("auto"), strategy.scope():
    ...     model = kerascnn.create_model("resnet18", input_shape=(64, 64, 3), classes=40)
    ...     model = training.float32_output(model)
    ...     history = training.fit(model, train_ds, val_ds, epochs=10, run_dir="runs/orl")

A run killed midway (power cut, preemption, Ctrl-C) resumes where it stopped when the same
call is run again with the same ``run_dir``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import keras
import tensorflow as tf

from kerascnn.backends import require_tensorflow
from kerascnn.errors import CheckpointMismatchError, ClusterConfigError
from kerascnn.losses import default_loss

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = (None, "cosine", "plateau")
_FINGERPRINT_FILE = "architecture.json"


# --- hardware: strategy, precision, XLA ------------------------------------------------------
def parse_tf_config(text: str | None = None) -> dict | None:
    """Read and check ``TF_CONFIG`` (the cluster description of multi-worker training).

    Args:
        text: the JSON text; default the ``TF_CONFIG`` environment variable.

    Returns:
        The parsed dict, or ``None`` when ``TF_CONFIG`` is unset or empty.

    Raises:
        ClusterConfigError: the text is not JSON, is not an object, lacks ``cluster`` or
            ``task``, or the task's type/index is not in the cluster.
    """
    if text is None:
        text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClusterConfigError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos}): {text[:200]!r}") from None
    if not isinstance(config, dict):
        raise ClusterConfigError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got {type(config).__name__}")
    missing = [key for key in ("cluster", "task") if key not in config]
    if missing:
        raise ClusterConfigError(
            f"TF_CONFIG must have 'cluster' and 'task' keys, it lacks {', '.join(map(repr, missing))} "
            f"(keys seen: {sorted(config)})"
        )
    cluster, task = config["cluster"], config["task"]
    if not isinstance(cluster, dict) or not cluster or not all(isinstance(v, list) for v in cluster.values()):
        raise ClusterConfigError(
            f"TF_CONFIG 'cluster' must map job names to lists of 'host:port', got {cluster!r}"
        )
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ClusterConfigError(f"TF_CONFIG 'task' must be {{'type': ..., 'index': ...}}, got {task!r}")
    if task["type"] not in cluster:
        raise ClusterConfigError(
            f"TF_CONFIG task type {task['type']!r} is not a job of the cluster (jobs: {sorted(cluster)})"
        )
    size = len(cluster[task["type"]])
    if not isinstance(task["index"], int) or not 0 <= task["index"] < size:
        raise ClusterConfigError(
            f"TF_CONFIG task index {task['index']!r} is out of range for job {task['type']!r} of {size} task(s)"
        )
    return config


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` with the ``reduce`` that Keras 3's ``fit`` expects.

    Keras 3's ``fit`` fails under TensorFlow's multi-worker strategy (keras-team/keras#20585):
    it reduces the first ``(images, labels)`` batch, a structure, which ``MirroredStrategy``
    accepts but the multi-worker strategy does not ("Attempt to convert a value
    (PerReplica...)"), then reduces every scalar log (loss, metrics) along ``axis=0``, which a
    scalar lacks. This subclass reduces each element of a structure on its own, and scalars
    across replicas (``axis=None``), which is what those calls mean.
    """

    def reduce(self, reduce_op, value, axis=None):
        reduce = super().reduce

        def one(v):
            rank = self.experimental_local_results(v)[0].shape.rank
            return reduce(reduce_op, v, axis if rank else None)

        return tf.nest.map_structure(one, value)


def get_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """The distribution strategy for this machine (or cluster).

    ``"auto"`` gives ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` describes a cluster of
    more than one task, ``MirroredStrategy`` when several GPUs are visible, and the default
    strategy otherwise (CPU or one GPU). Build and compile the model inside
    ``strategy.scope()``. In multi-worker training call this first, before other TensorFlow
    work: the collective ops must be configured before the runtime starts.

    Args:
        kind: ``"auto"``, ``"default"``, ``"mirrored"`` or ``"multi_worker"``.

    Returns:
        A ``tf.distribute.Strategy``.

    Raises:
        ValueError: an unknown ``kind``.
        ClusterConfigError: ``TF_CONFIG`` is set but malformed, or ``"multi_worker"`` is asked
            for without it.
    """
    require_tensorflow("kerascnn.training.get_strategy")
    if kind not in STRATEGIES:
        raise ValueError(f"strategy kind must be one of {STRATEGIES}, got {kind!r}")
    config = parse_tf_config()
    if kind == "multi_worker" and config is None:
        raise ClusterConfigError("strategy 'multi_worker' needs TF_CONFIG to describe the cluster; it is unset")
    if kind == "auto":
        tasks = sum(len(v) for v in config["cluster"].values()) if config else 0
        if tasks > 1:
            kind = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "multi_worker":
        return _MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _gpu_compute_capabilities() -> list[tuple[int, int]]:
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


def set_precision(policy: str = "auto") -> str:
    """Set Keras' global dtype policy; call it before building the model.

    ``"auto"`` gives ``mixed_float16`` when every visible GPU has compute capability 7.0 or
    more (tensor cores: V100, T4, A100, H100 ...) and ``float32`` otherwise, CPU included (on
    these CPUs ``mixed_bfloat16`` matmuls are faster but whole-model training is not: measure
    with ``scripts/bench_training.py``). Under a mixed policy layers compute in 16 bits and keep
    float32 variables; Keras wraps the optimizer in a ``LossScaleOptimizer`` for
    ``mixed_float16`` by itself. Keep the model's last layer in float32 with
    :func:`float32_output` so that the softmax and the loss are computed in float32.

    Args:
        policy: ``"auto"``, ``"float32"``, ``"mixed_float16"`` or ``"mixed_bfloat16"``.

    Returns:
        The policy name that was set.

    Raises:
        ValueError: an unknown policy.
    """
    if policy not in PRECISIONS:
        raise ValueError(f"precision policy must be one of {PRECISIONS}, got {policy!r}")
    if policy == "auto":
        capabilities = _gpu_compute_capabilities()
        policy = "mixed_float16" if capabilities and min(capabilities) >= (7, 0) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


@contextlib.contextmanager
def precision_scope(policy: str = "auto") -> Iterator[str]:
    """Set a mixed-precision policy for the ``with`` block, then restore the previous one.

    Training sets Keras' global dtype policy; a caller's later models must not inherit it.

    Args:
        policy: see :func:`set_precision`.

    Yields:
        The policy name that was set.
    """
    previous = keras.config.dtype_policy()
    try:
        yield set_precision(policy)
    finally:
        keras.config.set_dtype_policy(previous)


def float32_output(model: keras.Model) -> keras.Model:
    """The model with its outputs in float32 (for mixed precision).

    Under a mixed policy the last layer outputs float16/bfloat16, and a softmax or a loss in 16
    bits loses precision (and can overflow). The fix Keras documents: end the model with a
    float32 ``Activation``. A model whose output is already float32 is returned unchanged;
    otherwise a ``keras.layers.Activation("linear", dtype="float32")`` named
    ``<output layer>_float32`` is appended to each output (it only casts).

    Args:
        model: a functional model.

    Returns:
        A model with float32 outputs (the same object when nothing had to change).
    """
    outputs = model.outputs
    if all(keras.backend.standardize_dtype(t.dtype) == "float32" for t in outputs):
        return model
    cast = [
        keras.layers.Activation("linear", dtype="float32", name=f"{name}_float32")(t)
        for t, name in zip(outputs, model.output_names)
    ]
    return keras.Model(model.inputs, cast if len(cast) > 1 else cast[0], name=model.name)


def resolve_jit_compile(jit_compile: bool | str = "auto") -> bool:
    """Whether to compile training steps with XLA.

    ``"auto"`` means XLA on GPUs only: on these CPUs XLA made training 2-8x slower (measured,
    see ``scripts/bench_training.py``). Note that Keras' own ``"auto"`` turns XLA on on CPUs too.

    Args:
        jit_compile: ``True``, ``False`` or ``"auto"``.

    Returns:
        The boolean to give ``model.compile``.
    """
    if jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return bool(jit_compile)


# --- schedules and callbacks -----------------------------------------------------------------
def warmup_cosine(learning_rate: float, total_steps: int, warmup_steps: int = 0, alpha: float = 0.0):
    """Linear warm-up from 0 to ``learning_rate``, then cosine decay to ``alpha * learning_rate``.

    This is Keras' own ``keras.optimizers.schedules.CosineDecay`` (a serializable
    ``LearningRateSchedule`` with a linear warm-up built in), configured so that the whole
    schedule lasts ``total_steps``.

    Args:
        learning_rate: the peak learning rate, reached after the warm-up.
        total_steps: optimizer steps of the whole run (warm-up included).
        warmup_steps: steps of linear warm-up.
        alpha: final learning rate as a fraction of the peak.

    Returns:
        A ``keras.optimizers.schedules.CosineDecay``.

    Raises:
        ValueError: ``total_steps`` is not more than ``warmup_steps``.
    """
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must be more than warmup_steps ({warmup_steps})")
    if warmup_steps <= 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        0.0, total_steps - warmup_steps, alpha=alpha, warmup_target=learning_rate, warmup_steps=warmup_steps
    )


def default_callbacks(
    run_dir: str | os.PathLike,
    monitor: str = "val_loss",
    patience: int | None = 10,
    schedule: str | None = None,
    checkpoint: bool = True,
    backup: bool = True,
    csv: bool = True,
    tensorboard: bool | None = None,
    plateau_factor: float = 0.1,
    plateau_patience: int = 3,
) -> list[keras.callbacks.Callback]:
    """Keras' callbacks with sensible defaults, all writing into ``run_dir``.

    - ``BackupAndRestore(run_dir/backup)``: the training state (weights, optimizer, epoch)
      after each epoch; a new ``fit`` with the same ``run_dir`` resumes from it.
    - ``ModelCheckpoint(run_dir/best.keras)``: the best model so far by ``monitor``.
    - ``EarlyStopping(monitor, patience, restore_best_weights=True)`` unless ``patience`` is None.
    - ``ReduceLROnPlateau`` when ``schedule="plateau"`` (``"cosine"`` is a schedule of the
      optimizer instead: see :func:`warmup_cosine`).
    - ``CSVLogger(run_dir/history.csv, append=True)`` (appends when a run resumes).
    - ``TensorBoard(run_dir/logs)`` when the ``tensorboard`` package is installed.

    Args:
        run_dir: folder of the run (created).
        monitor: the metric the checkpoint, early stopping and plateau follow.
        patience: epochs without improvement before stopping; ``None`` never stops early.
        schedule: ``None``, ``"cosine"`` (nothing to add here) or ``"plateau"``.
        checkpoint: add ``ModelCheckpoint``.
        backup: add ``BackupAndRestore``.
        csv: add ``CSVLogger``.
        tensorboard: add ``TensorBoard``; ``None``: when ``tensorboard`` is installed.
        plateau_factor: learning-rate factor of ``ReduceLROnPlateau``.
        plateau_patience: patience of ``ReduceLROnPlateau``.

    Returns:
        The list of callbacks (``BackupAndRestore`` first).

    Raises:
        ValueError: an unknown ``schedule``.
        ImportError: ``tensorboard=True`` without the ``tensorboard`` package.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = []
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / "backup")))
    if checkpoint:
        callbacks.append(keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor=monitor, save_best_only=True))
    if patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True))
    if schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=plateau_factor, patience=plateau_patience)
        )
    if csv:
        callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True))
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    if tensorboard and not has_tensorboard:
        raise ImportError("tensorboard=True needs the tensorboard package: pip install tensorboard")
    if tensorboard or (tensorboard is None and has_tensorboard):
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "logs")))
    return callbacks


# --- resume safety ---------------------------------------------------------------------------
def architecture_fingerprint(model: keras.Model) -> dict[str, Any]:
    """A summary of a model's architecture that a checkpoint must match to be resumed.

    Returns:
        ``{"name", "weights", "digest"}``: the model name, its number of weight tensors, and a
        SHA-256 digest of the shapes of its weights in order (what loading a checkpoint needs;
        layer names are left out, so the same architecture built twice in one session matches).
    """
    spec = [tuple(w.shape) for w in model.weights]
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:16]
    return {"name": model.name, "weights": len(spec), "digest": digest}


def check_resumable(model: keras.Model, run_dir: str | os.PathLike) -> bool:
    """Check that ``run_dir`` holds no checkpoint of another architecture, and record this one's.

    Args:
        model: the model about to be trained.
        run_dir: the run folder.

    Returns:
        True when ``run_dir`` holds a backup of this architecture (the run will resume).

    Raises:
        CheckpointMismatchError: ``run_dir`` holds a checkpoint written by another architecture.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / _FINGERPRINT_FILE
    current = architecture_fingerprint(model)
    has_backup = (run_dir / "backup").is_dir() and any((run_dir / "backup").iterdir())
    if path.exists() and has_backup:
        saved = json.loads(path.read_text())
        if saved["digest"] != current["digest"]:
            raise CheckpointMismatchError(
                f"{run_dir} holds a checkpoint of model {saved['name']!r} ({saved['weights']} weight "
                f"tensors, architecture {saved['digest']}), but the model being trained is "
                f"{current['name']!r} ({current['weights']} weight tensors, architecture "
                f"{current['digest']}); use another run_dir or delete {run_dir / 'backup'}"
            )
    path.write_text(json.dumps(current))
    return has_backup


# --- fit ---------------------------------------------------------------------------------------
def _steps(dataset) -> int | None:
    cardinality = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
    return cardinality if cardinality > 0 else None


def compile_model(
    model: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    optimizer: str | keras.optimizers.Optimizer = "adamw",
    loss=None,
    metrics: Sequence[Any] | None = ("accuracy",),
    jit_compile: bool | str = "auto",
    weight_decay: float = 1e-4,
) -> keras.Model:
    """Compile with sensible defaults, inside the model's distribution strategy scope.

    Args:
        model: the model.
        learning_rate: a float or a ``LearningRateSchedule``.
        optimizer: ``"adamw"``, ``"adam"``, ``"sgd"`` (momentum 0.9, Nesterov) or an optimizer
            instance (``learning_rate`` is then ignored).
        loss: default sparse categorical cross-entropy (on logits when the model's last
            activation is not a softmax).
        metrics: metrics to follow.
        jit_compile: XLA (see :func:`resolve_jit_compile`).
        weight_decay: AdamW's decoupled weight decay.

    Returns:
        The compiled model.

    Raises:
        ValueError: an unknown optimizer name.
    """
    if isinstance(optimizer, str):
        makers = {
            "adamw": lambda: keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay),
            "adam": lambda: keras.optimizers.Adam(learning_rate),
            "sgd": lambda: keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True),
        }
        if optimizer not in makers:
            raise ValueError(f"optimizer must be one of {sorted(makers)} or an Optimizer, got {optimizer!r}")
        optimizer = makers[optimizer]()
    with model.distribute_strategy.scope():
        model.compile(
            optimizer=optimizer,
            loss=loss if loss is not None else default_loss(model),
            metrics=list(metrics or []),
            jit_compile=resolve_jit_compile(jit_compile),
        )
    return model


def fit(
    model: keras.Model,
    train_ds,
    val_ds=None,
    epochs: int = 10,
    run_dir: str | os.PathLike = "runs/latest",
    learning_rate: float = 1e-3,
    optimizer: str | keras.optimizers.Optimizer = "adamw",
    schedule: str | None = "cosine",
    warmup_epochs: int = 1,
    loss=None,
    metrics: Sequence[Any] | None = ("accuracy",),
    patience: int | None = 10,
    monitor: str | None = None,
    jit_compile: bool | str = "auto",
    steps_per_epoch: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    compile: bool = True,
    tensorboard: bool | None = None,
    verbose: str | int = "auto",
) -> keras.callbacks.History:
    """Compile, train with ``model.fit`` (resuming an interrupted run), save the results.

    Writes into ``run_dir``: ``model.keras`` (the final model), ``best.keras`` (best by
    ``monitor``), ``history.csv``, ``history.png``, ``logs/`` (TensorBoard) and, while training,
    ``backup/`` (deleted when training ends). Running the same call again after an interruption
    resumes from the last completed epoch.

    Args:
        model: the model (built inside the strategy's scope for distributed training).
        train_ds: training data, a ``tf.data.Dataset`` of ``(images, labels)`` batches.
        val_ds: optional validation data of the same kind.
        epochs: number of epochs.
        run_dir: folder of the run.
        learning_rate: peak learning rate.
        optimizer: see :func:`compile_model`.
        schedule: ``"cosine"`` (linear warm-up then cosine decay over the run), ``"plateau"``
            (``ReduceLROnPlateau``) or ``None`` (constant).
        warmup_epochs: warm-up length of the cosine schedule.
        loss: see :func:`compile_model`.
        metrics: see :func:`compile_model`.
        patience: early-stopping patience, ``None`` for none.
        monitor: metric for checkpoints/early stopping; ``val_loss`` with ``val_ds``, else ``loss``.
        jit_compile: XLA (see :func:`resolve_jit_compile`).
        steps_per_epoch: needed by the cosine schedule when ``train_ds`` has unknown length.
        callbacks: more callbacks (run after the default ones).
        compile: compile the model here; ``False`` keeps the caller's compilation.
        tensorboard: write TensorBoard logs (``None``: when ``tensorboard`` is installed).
        verbose: ``model.fit``'s verbosity (Keras' progress bar by default).

    Returns:
        The ``History`` of this call (only the epochs run now when resuming).

    Raises:
        CheckpointMismatchError: ``run_dir`` holds a checkpoint of another architecture.
        ValueError: the cosine schedule cannot know the number of steps.
    """
    run_dir = Path(run_dir)
    check_resumable(model, run_dir)
    monitor = monitor or ("val_loss" if val_ds is not None else "loss")
    if compile:
        lr: Any = learning_rate
        if schedule == "cosine":
            steps = steps_per_epoch or _steps(train_ds)
            if steps is None:
                raise ValueError("schedule='cosine' needs steps_per_epoch: the training dataset has unknown length")
            warmup = min(warmup_epochs * steps, epochs * steps - 1)
            lr = warmup_cosine(learning_rate, epochs * steps, warmup)
        compile_model(model, lr, optimizer, loss, metrics, jit_compile)
    all_callbacks = default_callbacks(run_dir, monitor, patience, schedule, tensorboard=tensorboard) + list(callbacks)
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
        callbacks=all_callbacks, verbose=verbose, shuffle=False,  # datasets shuffle themselves
    )
    model.save(run_dir / "model.keras")
    csv_path = run_dir / "history.csv"
    if csv_path.exists():
        plot_history(csv_path, run_dir / "history.png")
    return history


def read_history(csv_path: str | os.PathLike) -> dict[str, list[float]]:
    """The per-epoch metrics of a ``CSVLogger`` file, as ``{metric: [values]}``.

    When a resumed run appended an epoch twice, the last row of each epoch wins; ``NA`` cells
    (a metric missing that epoch) give NaN.
    """
    import csv

    rows: dict[int, dict[str, str]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("epoch") not in (None, "", "epoch"):
                rows[int(row["epoch"])] = row
    keys = [k for k in (next(iter(rows.values())) if rows else {}) if k != "epoch"]
    return {k: [_number(rows[e].get(k)) for e in sorted(rows)] for k in keys}


def _number(text: str | None) -> float:
    """A CSVLogger cell as a float; its ``NA`` (a metric missing that epoch) and blanks give NaN."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def plot_history(history, path: str | os.PathLike) -> Path:
    """Plot the loss and every other metric per epoch (training and validation) into a PNG.

    Args:
        history: a ``keras.callbacks.History``, a ``{metric: [values]}`` dict, or the path of a
            ``CSVLogger`` file.
        path: the PNG to write.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(history, keras.callbacks.History):
        history = history.history
    elif isinstance(history, (str, os.PathLike)):
        history = read_history(history)
    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5 * max(len(names), 1), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- a registry model on a folder of images -------------------------------------------------
def train_folder(
    model_name: str,
    data: str | os.PathLike,
    run_dir: str | os.PathLike,
    augment: str | None = None,
    epochs: int = 10,
    image_size: int | None = None,
    batch_size: int = 32,
    val_split: float = 0.2,
    seed: int = 0,
    learning_rate: float = 1e-3,
    precision: str = "auto",
    patience: int | None = 10,
    verbose: str | int = "auto",
) -> tuple[keras.Model, keras.callbacks.History]:
    """Train a registry model from scratch on an ``identity/image`` folder (``kerascnn train``).

    The folder is split per class (``val_split`` of each class for validation, from ``seed``),
    read through :func:`kerascnn.data.make_dataset` with the model's preprocessing and number of
    channels, and trained with :func:`fit` under :func:`get_strategy` and :func:`set_precision`.
    ``run_dir`` also gets ``class_names.json`` (the label of each output index).

    Args:
        model_name: registry name (see :func:`kerascnn.list_models`).
        data: the dataset folder.
        run_dir: output folder (see :func:`fit`).
        augment: a preset of ``kerascnn.data.AUGMENTATION_PRESETS`` or ``None``.
        epochs: number of epochs.
        image_size: square input size; default the model's.
        batch_size: images per batch.
        val_split: fraction of each class kept for validation (0 for none).
        seed: seed of the split, the shuffle, the augmentation and the initial weights.
        learning_rate: peak learning rate of the warm-up + cosine schedule.
        precision: see :func:`set_precision`.
        patience: early-stopping patience (``None`` for none).
        verbose: ``model.fit``'s verbosity.

    Returns:
        ``(model, history)``.

    Raises:
        UnknownModelError: an unknown model name.
        DatasetError: an empty folder, a class without images.
        UnknownAugmentationError: an unknown preset.
        ValueError: ``val_split`` outside ``[0, 1)``.
    """
    from kerascnn.data import make_dataset, scan_folder, stratified_split
    from kerascnn.models.registry import create_model, model_info

    if not 0 <= val_split < 1:
        raise ValueError(f"val_split must be in [0, 1), got {val_split}")
    info = model_info(model_name)
    dataset = scan_folder(data)
    train, val = stratified_split(dataset, (1 - val_split, val_split), seed) if val_split else (dataset, None)
    size = image_size or info.default_input_shape[0]
    channels = info.default_input_shape[2]
    strategy = get_strategy()
    with precision_scope(precision):
        keras.utils.set_random_seed(seed)
        with strategy.scope():
            model = create_model(model_name, input_shape=(size, size, channels), classes=dataset.num_classes)
            model = float32_output(model)
        read = dict(image_size=size, batch_size=batch_size, preprocessing=info.preprocessing, channels=channels,
                    cache=True)
        train_ds = make_dataset(train, shuffle=True, seed=seed, augment=augment, **read)
        val_ds = make_dataset(val, **read) if val is not None and len(val) else None
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "class_names.json").write_text(json.dumps(dataset.class_names))
        history = fit(model, train_ds, val_ds, epochs=epochs, run_dir=run_dir, learning_rate=learning_rate,
                      patience=patience, verbose=verbose)
    return model, history


# --- adversarial training ----------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="kerascnn")
class AdversarialModel(keras.Model):
    """Adversarial training through plain ``model.fit``: a wrapper whose ``train_step`` attacks
    each batch (FGSM, or PGD with ``steps > 1``) against the current weights and trains on it.

    With ``mix_clean=True`` (Goodfellow et al. 2015, their alpha = 0.5), each step trains on the
    clean batch and its adversarial copy together; with ``False`` on the adversarial batch only
    (Madry et al. 2018). Evaluation and prediction are the wrapped model's. The wrapper saves to
    ``.keras`` and loads in safe mode; ``wrapper.model`` is the trained classifier itself.

    Example:
        >>> robust = training.AdversarialModel(model, epsilon=0.1)
        >>> training.compile_model(robust, 1e-3)
        >>> robust.fit(x, y, epochs=10)

    Args:
        model: the classifier to train.
        epsilon: L-infinity budget of the training attack.
        steps: attack steps (1: FGSM; more: PGD with a random start).
        step_size: PGD's step; default ``2.5 * epsilon / steps``.
        value_range: the inputs' valid values.
        mix_clean: train on clean and adversarial images together.

    Raises:
        EpsilonError: an epsilon outside the value range.
    """

    def __init__(self, model: keras.Model, epsilon: float, steps: int = 1, step_size: float | None = None,
                 value_range: tuple[float, float] = (0.0, 1.0), mix_clean: bool = True, **kwargs):
        from kerascnn.adversarial import check_budget

        super().__init__(**kwargs)
        self.model = model
        self.epsilon = check_budget(epsilon, value_range)
        self.steps, self.step_size = int(steps), step_size
        self.value_range = tuple(float(v) for v in value_range)
        self.mix_clean = bool(mix_clean)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def train_step(self, data):
        from kerascnn.adversarial import perturb

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_adv = perturb(self.model, x, y, self.epsilon, self.steps, self.step_size, self.value_range,
                        random_start=self.steps > 1,
                        loss=lambda y_true, y_pred: self.compute_loss(y=y_true, y_pred=y_pred, training=False))
        if self.mix_clean:
            x, y = tf.concat([x, x_adv], 0), tf.concat([y, y], 0)
            sample_weight = None if sample_weight is None else tf.concat([sample_weight, sample_weight], 0)
        else:
            x = x_adv
        return super().train_step((x, y, sample_weight))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(model=keras.saving.serialize_keras_object(self.model), epsilon=self.epsilon,
                      steps=self.steps, step_size=self.step_size, value_range=list(self.value_range),
                      mix_clean=self.mix_clean)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "AdversarialModel":
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)
