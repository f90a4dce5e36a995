"""Training the default face embedder: data, held-out split, augmentation, fit, evaluation.

The run (what ``scripts/train_face_model.py`` and ``kerascnn train-face`` do):

1. :func:`load_faces`: aligned crops of every image of the training folders (YuNet, the face
   nearest the centre, :mod:`kerascnn.face.align`'s template), with the teacher's chips and
   embeddings when distilling; cached under ``~/.cache/kerascnn`` (see
   :mod:`kerascnn.facetrain.data`).
2. :func:`holdout_split`: the people of one LFW fold (``pairs.txt``) are removed from training;
   that fold's pairs score the model (identity-disjoint evaluation).
3. :func:`train_face_model`: a small ResNet embedder (:func:`kerascnn.face.model.
   build_face_embedder`) behind an augmentation stage (flip, rotation, zoom, shift, brightness,
   contrast, greyscale, blur, then the centre crop), trained with the distillation loss to the
   teacher's unit vectors (``teacher=True``) or with a semi-hard triplet loss on P x K batches
   (``teacher=False``); cosine learning-rate schedule, ``BackupAndRestore`` (resume), CSV log.
   With ``online_teacher`` (``--online-teacher dlib``) a Keras teacher describes every
   augmented view instead, on the same augmentation of its own chip
   (:mod:`kerascnn.facetrain.distill`); ``init_weights`` starts from a trained embedder.
4. :func:`evaluate_holdout`: accuracy (k-fold within the fold's pairs), AUC, EER, TAR at FAR.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from kerascnn.data.lfw import read_pairs
from kerascnn.distillation import centred_targets
from kerascnn.errors import DatasetError, FaceModelError, WeightsMismatchError
from kerascnn.evaluation import impostor_genuine_scores
from kerascnn.face.model import build_face_embedder
from kerascnn.facetrain.cache import detector_tag
from kerascnn.facetrain.data import FaceData, prepare_faces


@dataclass
class FaceTrainConfig:
    """Settings of a face-model training run (all written to the model card).

    Attributes:
        data: ``identity/image`` folders to train on.
        detector: the YuNet ``.onnx`` used to find and align faces.
        pairs: LFW ``pairs.txt`` whose ``holdout_fold`` is held out and scored (``None``: none).
        lfw_images: the folder the pairs' image names refer to.
        holdout_fold: 0-based fold of ``pairs`` whose people are removed from training.
        input_size: side of the model's aligned input crops.
        canvas: side of the stored crops (margin for the shift/zoom augmentation).
        embedding_dim: size of the embeddings.
        widths, depths: the embedder's stages (:func:`build_face_embedder`).
        teacher: distil the dlib teacher (``True``) or train with triplets only (``False``).
        epochs: passes over the training images.
        batch_size: images per step (``teacher=False``: P x K with K = 4).
        learning_rate: peak learning rate (AdamW, cosine decay after a 5% warm-up).
        weight_decay: AdamW weight decay.
        seed: seed of weights, shuffling and augmentation.
        max_images: use only this many training images (quick runs); ``None``: all.
        online_teacher: a face model (``"dlib"`` or a ``.keras`` path) that describes every
            augmented view during training (:mod:`kerascnn.facetrain.distill`); ``None``: the
            offline targets of ``teacher``.
        init_weights: start from this embedder's weights (same architecture); ``None``: random.
    """

    data: list[str] = field(default_factory=list)
    detector: str | None = None
    pairs: str | None = None
    lfw_images: str | None = None
    holdout_fold: int = 6
    input_size: int = 64
    canvas: int = 80
    embedding_dim: int = 128
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (1, 2, 2, 1)
    teacher: bool = True
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    max_images: int | None = None
    online_teacher: str | None = None
    init_weights: str | None = None


def load_faces(folders, detector: str | None, size: int = 112, canvas: int = 128, teacher=None,
               describe: bool = True, cache_dir=None) -> FaceData:
    """Aligned faces of several ``identity/image`` folders, concatenated.

    Identity names are prefixed with their folder name (``lfw/...``, ``orl/s1``) so that two
    folders never share an identity by accident; labels index the merged names.

    Args:
        folders: the dataset folders.
        detector: YuNet ``.onnx`` path; ``None``: the shipped YuNet.
        size: aligned face size.
        canvas: stored crop size.
        teacher: a teacher embedder, or ``None``.
        describe: compute the teacher's embeddings now (else keep its chips).
        cache_dir: cache folder (default ``~/.cache/kerascnn``).

    Returns:
        The merged :class:`FaceData`.

    Raises:
        DatasetError: no folder given, or a bad folder.
    """
    if not folders:
        raise DatasetError("no training folder given (expected at least one identity/image folder)")
    parts = []
    for folder in folders:
        part = prepare_faces(folder, detector, size, canvas, teacher, describe=describe, cache_dir=cache_dir)
        prefix = Path(folder).name if Path(folder).name != "images" else Path(folder).parent.name
        part.class_names = [f"{prefix}/{name}" for name in part.class_names]
        parts.append(part)
    return concat_faces(parts)


def concat_faces(parts: list[FaceData]) -> FaceData:
    """Several :class:`FaceData` as one, labels offset so identities stay distinct."""
    offsets = np.cumsum([0] + [len(p.class_names) for p in parts[:-1]])

    def cat(key):
        values = [getattr(p, key) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return FaceData(
        [path for p in parts for path in p.paths], np.concatenate([p.labels + o for p, o in zip(parts, offsets)]),
        [name for p in parts for name in p.class_names], cat("crops"), cat("landmarks"), cat("detected"),
        cat("teacher"), parts[0].size, cat("chips"),
    )


# --- the held-out fold --------------------------------------------------------------------------
def holdout_split(data: FaceData, pairs_file, lfw_images, fold: int):
    """Training indices without the people of ``fold``, and that fold's pairs as index pairs.

    Args:
        data: the faces (LFW identities named ``lfw/<Name>``).
        pairs_file: LFW ``pairs.txt``.
        lfw_images: the folder that ``data``'s LFW paths and the pairs refer to.
        fold: 0-based fold to hold out.

    Returns:
        ``(train_indices, left, right, same)``: ``left``/``right`` index ``data`` for each
        pair of the fold, ``same`` is True for genuine pairs.

    Raises:
        DatasetError: the fold does not exist, or a pair's image is not in ``data``.
    """
    pairs = read_pairs(pairs_file, lfw_images, check_files=False)
    if not 0 <= fold < pairs.num_folds:
        raise DatasetError(f"{pairs_file} has folds 0..{pairs.num_folds - 1} (0-based), got holdout fold {fold}")
    people = {f"lfw/{name}" for name in pairs.people_of_fold(fold)}
    held = np.array([data.class_names[label] in people for label in data.labels])
    index = {os.path.normpath(p): i for i, p in enumerate(data.paths)}
    chosen = pairs.select(pairs.fold == fold)
    try:
        left = np.array([index[os.path.normpath(p)] for p in chosen.left])
        right = np.array([index[os.path.normpath(p)] for p in chosen.right])
    except KeyError as exc:
        raise DatasetError(f"image {exc.args[0]} of {pairs_file} fold {fold} is not among the prepared faces") from exc
    return np.flatnonzero(~held), left, right, chosen.same


# --- the model under training ---------------------------------------------------------------------
def build_augmenter(canvas: int, size: int, seed: int = 0) -> keras.Sequential:
    """Training-time augmentation: canvas crops in, ``size`` crops out (centre crop at inference).

    Horizontal flip, rotation up to about 10 degrees, zoom and shift (imperfect alignment, as
    from a Haar detector), brightness, contrast, saturation, 20% greyscale (ORL and some LFW
    images are grey), slight blur, then the centre ``size`` square.
    """
    layers = keras.layers
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(0.03, fill_mode="nearest", seed=seed + 1),
        layers.RandomZoom((-0.08, 0.08), fill_mode="nearest", seed=seed + 2),
        layers.RandomTranslation(0.03, 0.03, fill_mode="nearest", seed=seed + 3),
        layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 4),
        layers.RandomContrast(0.3, value_range=(0, 255), seed=seed + 5),
        layers.RandomSaturation((0.3, 0.7), value_range=(0, 255), seed=seed + 6),
        layers.RandomGrayscale(0.2, seed=seed + 7),
        layers.RandomGaussianBlur(factor=0.5, kernel_size=3, sigma=1.0, value_range=(0, 255), seed=seed + 8),
        layers.CenterCrop(size, size),
    ], name="augment")


def _trainer(embedder: keras.Model, canvas: int, size: int, seed: int) -> keras.Model:
    inputs = keras.Input((canvas, canvas, 3), name="canvas")
    return keras.Model(inputs, embedder(build_augmenter(canvas, size, seed)(inputs)), name="face_trainer")


def _pk_dataset(crops, labels, p, k, seed):
    """Endless P x K batches of (crops, labels) (:class:`kerascnn.data.pk.PKSampler`'s rule)."""
    from kerascnn.data.pk import PKSampler

    for idx in PKSampler(labels, p, k, seed=seed):
        yield crops[idx], labels[idx]


class _DistillBatches(keras.utils.PyDataset):
    """Batches of (canvas crops, centred teacher targets), reshuffled each epoch.

    Rows whose teacher embedding is NaN (not described yet) are skipped; ``refresh`` (a callable
    returning the current ``(n, dim)`` teacher array) is called after each epoch, so a run can
    start while the teacher is still describing the rest of the images.
    """

    def __init__(self, crops, teacher, batch_size, seed, refresh=None):
        super().__init__()
        self.crops, self.batch_size, self.refresh = crops, batch_size, refresh
        self.rng = np.random.default_rng(seed)
        self.steps = int(np.ceil(len(crops) / batch_size))
        self.mean = None
        self._set(teacher)

    def _set(self, teacher):
        ready = np.all(np.isfinite(teacher), axis=1)
        if not ready.any():
            raise DatasetError("no training image has a teacher embedding yet")
        targets, self.mean = centred_targets(np.where(ready[:, None], teacher, 0.0), self.mean if self.mean is not None else teacher[ready].mean(0))
        self.teacher, self.targets, self.ready = teacher, targets, np.flatnonzero(ready)
        self.order = np.resize(self.rng.permutation(self.ready), self.steps * self.batch_size)

    def __len__(self):
        return self.steps

    def __getitem__(self, i):
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        return self.crops[idx], self.targets[idx]

    def on_epoch_end(self):
        # re-centre the raw teacher embeddings (never the already centred targets)
        self._set(self.refresh() if self.refresh is not None else self.teacher)


def train_face_model(config: FaceTrainConfig, data: FaceData, train_idx: np.ndarray, out_dir,
                     refresh_teacher=None, verbose: int = 1, online=None):
    """Fit the embedder on ``data[train_idx]``; resumable from ``out_dir/backup``.

    Args:
        config: the run's settings.
        data: prepared faces (``data.teacher`` needed when ``config.teacher``; NaN rows are
            images not described yet, skipped).
        train_idx: indices of the training images.
        out_dir: folder for ``backup/`` (resume) and ``training_log.csv``.
        refresh_teacher: optional callable returning the current ``(len(data), dim)`` teacher
            array, called after each epoch (train while the teacher still works).
        verbose: Keras verbosity (1: a progress bar).
        online: with ``config.online_teacher``: ``(teacher_model, alignment, mean)``, the
            teacher, its :class:`~kerascnn.face.align.AlignmentTemplate` and the mean of its
            embeddings (see :func:`online_teacher`); ``data.chips`` must hold its chips.

    Returns:
        ``(embedder, history_dict, seconds, images_per_second)``; the embedder is float32.

    Raises:
        DatasetError: distillation without teacher embeddings, or online distillation without
            the teacher's chips.
        FaceModelError: an online teacher whose embedding size is not ``config.embedding_dim``.
        WeightsMismatchError: ``config.init_weights`` of another architecture.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    train_idx = np.asarray(train_idx)
    if config.max_images:
        train_idx = np.random.default_rng(config.seed).permutation(train_idx)[: config.max_images]
    crops = data.crops[train_idx]
    embedder = build_face_embedder(config.input_size, config.embedding_dim, tuple(config.widths), tuple(config.depths))
    if config.init_weights:
        from kerascnn.face.model import load_face_model

        start = load_face_model(config.init_weights)
        try:
            embedder.set_weights(start.get_weights())
        except ValueError as exc:
            raise WeightsMismatchError(
                f"--init-weights {config.init_weights} is not this architecture (input {config.input_size}, "
                f"widths {list(config.widths)}, depths {list(config.depths)}, dim {config.embedding_dim}): {exc}"
            ) from exc
    model = _trainer(embedder, config.canvas, config.input_size, config.seed)
    if config.online_teacher:
        from kerascnn.distillation import EmbeddingDistillationLoss
        from kerascnn.facetrain.distill import OnlineDistillBatches, PairedAugment

        if online is None or data.chips is None:
            raise DatasetError("online distillation needs the teacher, its alignment and mean (online=...) "
                               "and its chips in data.chips (see kerascnn.facetrain.trainer.online_teacher)")
        teacher_model, alignment, mean = online
        if teacher_model.output_shape[-1] != config.embedding_dim:
            raise FaceModelError(f"the online teacher gives {teacher_model.output_shape[-1]}-d embeddings, "
                                 f"the student {config.embedding_dim}-d (they must match)")
        chip = int(teacher_model.input_shape[1])
        augment = PairedAugment(config.canvas, config.input_size, chip, alignment.points("landmarks", chip))
        batches = OnlineDistillBatches(crops, data.chips[train_idx], teacher_model, augment, config.batch_size,
                                       mean, config.seed)
        model = embedder  # the views come augmented and cropped
        loss = EmbeddingDistillationLoss("cosine")
    elif config.teacher:
        from kerascnn.distillation import EmbeddingDistillationLoss

        if data.teacher is None:
            raise DatasetError("distillation needs teacher embeddings: prepare the faces with a teacher")
        refresh = None if refresh_teacher is None else (lambda: refresh_teacher()[train_idx])
        batches = _DistillBatches(crops, data.teacher[train_idx], config.batch_size, config.seed, refresh)
        loss = EmbeddingDistillationLoss("cosine")
    else:
        from kerascnn.losses import TripletLoss

        k = 4
        batches = _pk_dataset(crops, data.labels[train_idx], config.batch_size // k, k, config.seed)
        loss = TripletLoss(margin=0.2, mining="semi_hard")
    steps = int(np.ceil(len(crops) / config.batch_size))
    total = steps * config.epochs
    warmup = total // 20
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(total - warmup, 1), alpha=0.01, warmup_target=config.learning_rate, warmup_steps=warmup,
    )
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay), loss)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out_dir / "backup")),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: embedder.save(out_dir / "last_embedder.keras")),
        keras.callbacks.CSVLogger(str(out_dir / "training_log.csv"), append=True),
    ]
    start = time.time()
    history = model.fit(batches, steps_per_epoch=steps, epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    seconds = time.time() - start
    rate = len(history.epoch) * steps * config.batch_size / max(seconds, 1e-9)
    return float32_copy(embedder, config), history.history, seconds, rate


def float32_copy(embedder: keras.Model, config: FaceTrainConfig) -> keras.Model:
    """The same embedder rebuilt under the float32 policy (for shipping after mixed-precision training)."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        clean = build_face_embedder(config.input_size, config.embedding_dim, tuple(config.widths), tuple(config.depths))
    finally:
        keras.config.set_dtype_policy(policy)
    clean.set_weights(embedder.get_weights())
    return clean


# --- evaluation ------------------------------------------------------------------------------
def embed_crops(embedder: keras.Model, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Unit embeddings of canvas crops (centre ``input_size`` square), float32."""
    size = embedder.input_shape[1]
    margin = (crops.shape[1] - size) // 2
    inner = crops[:, margin:margin + size, margin:margin + size].astype(np.float32)
    out = np.concatenate([
        np.asarray(embedder(inner[i:i + batch_size], training=False)) for i in range(0, len(inner), batch_size)
    ])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def evaluate_holdout(embeddings: np.ndarray, left, right, same, folds: int = 10) -> dict:
    """Verification figures of the held-out pairs from unit embeddings.

    Cosine similarity scores; accuracy by ``folds``-fold cross-validation within the pairs
    (threshold chosen on the other folds, the LFW protocol); AUC, EER, TAR at FAR 1e-2 and
    1e-3, and the best-accuracy threshold over all the pairs.
    """
    from kerascnn.evaluation import evaluate_pairs

    similarity = np.sum(embeddings[left] * embeddings[right], axis=1)
    return evaluate_pairs(similarity, np.asarray(same, bool), folds=folds, similarity=True).to_dict()


def config_dict(config: FaceTrainConfig) -> dict:
    """The config as JSON-ready builtins."""
    out = asdict(config)
    out["widths"], out["depths"] = list(config.widths), list(config.depths)
    return out


# --- the whole run -------------------------------------------------------------------------------
def online_teacher(spec: str, data: FaceData, train_idx: np.ndarray, sample: int = 2048, seed: int = 0):
    """Load a Keras teacher and cut its chips, for :func:`train_face_model`'s ``online``.

    Sets ``data.chips`` to the teacher's chips of every image (its card's template at its input
    size, from the source images and their landmarks).

    Args:
        spec: a face model name (``"dlib"``) or ``.keras`` path.
        data: the prepared faces (paths and landmarks).
        train_idx: the training images; the centring mean is the teacher's mean embedding of
            (at most ``sample`` of) their unaugmented chips.
        sample: how many chips the mean is taken over.
        seed: which chips.

    Returns:
        ``(teacher_model, alignment, mean)``.
    """
    from kerascnn.face.model import load_alignment, load_face_model
    from kerascnn.facetrain.distill import describe, teacher_chips

    model = load_face_model(spec)
    alignment = load_alignment(spec)
    data.chips = teacher_chips(data.paths, data.landmarks, alignment, int(model.input_shape[1]))
    pick = np.random.default_rng(seed).permutation(np.asarray(train_idx))[:sample]
    mean = describe(model, data.chips[np.sort(pick)]).mean(0)
    return model, alignment, mean


def _teacher_refresher(folders, detector, teacher, cache_dir):
    """A callable re-reading the teacher embeddings cached so far (NaN rows for the others)."""
    from kerascnn.data.folders import scan_folder
    from kerascnn.facetrain.data import cache_folder, describe_faces

    datasets = [scan_folder(f) for f in folders]
    caches = [cache_folder(f, d.paths, detector, teacher.name, cache_dir) for f, d in zip(folders, datasets)]

    def refresh():
        return np.concatenate([
            describe_faces(np.empty((len(d), 0)), teacher, c, progress=False, partial=True)
            for d, c in zip(datasets, caches)
        ])

    return refresh


def calibrate_holdout(embeddings: np.ndarray, labels: np.ndarray, pair_report: dict) -> dict:
    """Thresholds (cosine) for the card: best accuracy on the held-out pairs, FAR 1e-3 on all
    pairs of held-out images (tens of thousands of impostor pairs, enough for 1e-3)."""
    from kerascnn.evaluation import best_threshold, tar_at_far

    scores, same = impostor_genuine_scores(embeddings, labels)
    far_threshold = best_threshold(scores, same, target_far=1e-3, similarity=True)
    return {
        "metric": "cosine",
        "threshold": float(pair_report["threshold"]),
        "threshold_far_1e-3": float(far_threshold),
        "source": (
            "threshold: best accuracy on the 600 LFW pairs of the held-out fold; threshold_far_1e-3: on all "
            f"{int(same.sum())} genuine and {int((~same).sum())} impostor pairs of the held-out fold's images "
            f"(TAR there {tar_at_far(scores, same, 1e-3, similarity=True)[1e-3]:.4f}). "
            "The held-out people were never seen in training."
        ),
    }


def _device() -> str:
    """What trained the model, for the card: the GPUs, or the CPU core count."""
    gpus = []
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    return f"{len(gpus)} GPU(s)" if gpus else f"CPU, {os.cpu_count()} cores ({keras.backend.backend()} backend)"


def run(args) -> dict:
    """Run a whole training from parsed options; returns the card."""
    from kerascnn.face.model import save_calibration

    data_folders = args.data
    canvas = args.canvas or int(round(args.input_size * 1.25))
    config = FaceTrainConfig(
        data=data_folders, detector=args.detector, pairs=args.pairs, lfw_images=args.lfw_images,
        holdout_fold=args.holdout_fold - 1, input_size=args.input_size, canvas=canvas, widths=tuple(args.widths),
        depths=tuple(args.depths), teacher=not args.no_teacher and not args.online_teacher, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed, max_images=args.max_images,
        online_teacher=args.online_teacher, init_weights=args.init_weights,
    )
    teacher = None
    if config.teacher:
        from kerascnn.distillation import DlibTeacher

        teacher = DlibTeacher()
    describe = "partial" if args.teacher_partial else True
    data = load_faces(config.data, config.detector, config.input_size, canvas, teacher, describe, args.cache_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_idx, left, right, same = np.arange(len(data)), None, None, None
    if config.pairs:
        images = config.lfw_images or next((f for f in config.data if Path(f).name == "images"), None)
        if images is None:
            raise DatasetError("--pairs needs --lfw-images (the folder its image names refer to)")
        config.lfw_images = images
        train_idx, left, right, same = holdout_split(data, config.pairs, images, config.holdout_fold)
    refresh = _teacher_refresher(config.data, config.detector, teacher, args.cache_dir) if args.teacher_partial else None
    online = online_teacher(config.online_teacher, data, train_idx, seed=config.seed) if config.online_teacher else None
    embedder, history, seconds, rate = train_face_model(config, data, train_idx, out, refresh, online=online)
    if refresh is not None:
        data.teacher = refresh()
    model_path = out / "face_model.keras"
    embedder.save(model_path)
    card = {
        "model": model_path.name,
        "architecture": f"ResNet (basic blocks) widths {list(config.widths)} depths {list(config.depths)}, "
                        "3x3 stride-2 stem, global depthwise conv (GDC), Dense, BatchNorm, UnitNormalization",
        "parameters": int(embedder.count_params()),
        "input": {"size": [config.input_size, config.input_size, 3], "dtype": "float32", "range": [0, 255],
                  "color": "RGB", "alignment": "kerascnn.face.align.align_face (InsightFace 5-point template) "
                  f"at size {config.input_size}", "normalization": "inside the model: x / 127.5 - 1"},
        "output": {"embedding_dim": config.embedding_dim, "unit_norm": True, "metric": "cosine"},
        "training": {
            "method": (f"online distillation of the Keras face model {config.online_teacher!r}: its unit embedding "
                       "of every augmented view (the same augmentation on its own aligned chip), mean-centred, "
                       "cosine loss" if config.online_teacher else
                       f"distillation of {teacher.name} (dlib) to its unit embeddings, mean-centred, cosine loss"
                       if teacher else "semi-hard triplet loss on P x K batches (K=4)"),
            "teacher": config.online_teacher or (teacher.name if teacher else None),
            "init_weights": config.init_weights,
            "device": _device(),
            "seconds": round(seconds, 1), "images_per_second": round(rate, 1),
            "epochs_run": len(history.get("loss", [])), "final_loss": float(history["loss"][-1]),
            "augmentation": "flip, rotation 0.03 turn, zoom 8%, shift 3%, brightness, contrast, saturation, 20% greyscale, blur",
            "optimizer": f"AdamW lr {config.learning_rate} (cosine decay, 5% warm-up), weight decay {config.weight_decay}",
        },
        "data": {
            "folders": [str(f) for f in config.data], "images": len(data), "identities": len(data.class_names),
            "training_images": int(len(train_idx)),
            "training_images_with_teacher": int(np.isfinite(data.teacher[train_idx]).all(1).sum()) if data.teacher is not None else None,
            "faces_not_detected": int((~data.detected).sum()), "detector": detector_tag(config.detector),
        },
        "settings": config_dict(config),
        "seed": config.seed,
    }
    if left is not None:
        embeddings = embed_crops(embedder, data.crops)
        report = evaluate_holdout(embeddings, left, right, same)
        held = np.setdiff1d(np.arange(len(data)), train_idx)
        card["accuracy"] = {
            "protocol": (f"LFW pairs of fold {config.holdout_fold + 1} (600 pairs), whose people are absent from "
                         "training; accuracy by 10-fold cross-validation within those pairs (threshold chosen "
                         "on 9 folds, scored on the 10th)"),
            "student": report,
        }
        if data.teacher is not None and np.isfinite(data.teacher[np.concatenate([left, right])]).all():
            card["accuracy"]["teacher_dlib"] = evaluate_holdout(data.teacher, left, right, same)
        card["calibration"] = calibrate_holdout(embeddings[held], data.labels[held], report)
    (out / "face_model.json").write_text(json.dumps(card, indent=2) + "\n")
    if "calibration" in card:
        save_calibration(model_path, card["calibration"])
    (out / "FACE_MODEL_CARD.md").write_text(card_markdown(card))
    return card


def card_markdown(card: dict) -> str:
    """A short human-readable model card from the JSON card."""
    lines = [
        "# kerascnn default face model", "",
        f"- File: `{card['model']}` ({card['parameters']:,} parameters); card: `{Path(card['model']).stem}.json`.",
        f"- Architecture: {card['architecture']}.",
        f"- Input: {card['input']['size'][0]}x{card['input']['size'][1]} RGB float32 0..255, aligned with "
        f"{card['input']['alignment']}; normalisation {card['input']['normalization']}.",
        f"- Output: {card['output']['embedding_dim']}-d unit vectors; compare with cosine similarity.",
        f"- Training: {card['training']['method']}; {card['training']['epochs_run']} epochs, "
        f"{card['training']['seconds'] / 60:.0f} min on {card['training']['device']} "
        f"({card['training']['images_per_second']} images/s); {card['training']['optimizer']}; "
        f"augmentation: {card['training']['augmentation']}; seed {card['seed']}.",
        f"- Data: {card['data']['images']} images of {card['data']['identities']} people in "
        f"{', '.join(card['data']['folders'])}; {card['data']['training_images']} used for training; "
        f"faces not detected: {card['data']['faces_not_detected']} ({card['data']['detector']}).",
    ]
    if "accuracy" in card:
        student = card["accuracy"]["student"]
        lines += ["", "## Accuracy (identity-disjoint)", "", card["accuracy"]["protocol"] + ".", "",
                  "| model | accuracy | AUC | EER | TAR@FAR 1e-2 | TAR@FAR 1e-3 |", "|---|---|---|---|---|---|"]
        for name, rep in (("this model", student), ("dlib teacher (ceiling)", card["accuracy"].get("teacher_dlib"))):
            if rep:
                lines.append(
                    f"| {name} | {100 * rep['accuracy']:.2f}% +- {100 * rep['accuracy_std']:.2f} | {rep['auc']:.4f} | "
                    f"{100 * rep['eer']:.2f}% | {rep['tar_at_far']['0.01']:.3f} | {rep['tar_at_far']['0.001']:.3f} |")
        every = card["accuracy"].get("all_pairs")
        if every:
            lines += ["", f"Every pair of the {every['images']} images of the held-out people "
                      f"({every['genuine_pairs']} genuine, {every['impostor_pairs']} impostor pairs), through the "
                      f"whole pipeline: AUC {every['auc']:.4f}, EER {100 * every['eer']:.2f}%, TAR "
                      f"{every['tar_at_far']['0.01']:.3f} at FAR 1e-2 and {every['tar_at_far']['0.001']:.3f} at "
                      f"FAR 1e-3; at the calibrated threshold TAR {every['tar_at_threshold']:.3f}, FAR "
                      f"{every['far_at_threshold']:.3f} (`{every['command']}`)."]
    if "calibration" in card:
        cal = card["calibration"]
        lines += ["", "## Calibration", "",
                  f"Cosine similarity; match when >= `{cal['threshold']:.4f}` (best accuracy) or >= "
                  f"`{cal['threshold_far_1e-3']:.4f}` (false accept rate 1e-3). {cal['source']}"]
    lines += ["", "## Limits", "",
              "LFW and ORL are research benchmarks of mostly adult, frontal, well-lit news and lab photos; "
              "accuracy elsewhere (other ages, poses, cameras, demographics) is not measured here. "
              "Do not use it for decisions about people without your own evaluation.", ""]
    return "\n".join(lines)
