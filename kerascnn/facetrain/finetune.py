"""Fine-tune a pretrained face embedder with triplet loss on a user's identity folders.

:func:`finetune_face_model` takes the default face model (or any embedder, by name, ``.keras``
path or Keras model), freezes all but its top stage(s), and trains the rest with
:class:`kerascnn.losses.TripletLoss` on P x K batches (:mod:`kerascnn.data.pk`) of aligned
face crops of ``<folder>/<person>/<image>`` folders, with light face augmentation,
checkpoints and resume (:func:`kerascnn.training.fit`). It writes ``face_model.keras`` and its
JSON card (source model, data, settings, figures) in ``out_dir``.

**What is frozen, and why.** A *stage* is a run of layers that reaches a new, smaller spatial
resolution (the stem, then each residual stage); the *head* is what follows the last spatial
layer (pooling, the descriptor ``Dense``, unit normalisation). By default only the top stage
and the head train (``trainable_stages=1``): for dlib's ResNet that is the last residual block
of 256 channels and the 128-d descriptor, 1.2 M of 5.6 M parameters. The lower stages compute
generic edges and textures that transfer to new cameras and grey images; a user's folders hold
a few hundred photos of a few dozen people, too few to retrain 5.6 M weights without
forgetting what 3 million faces taught; and back-propagating through one stage only keeps a
CPU fine-tuning short. BatchNormalization layers stay frozen (inference mode) everywhere:
P x K batches of a few people would give them unrepresentative statistics.

**Faces are prepared as at inference**: :meth:`kerascnn.face.pipeline.FacePipeline.detect_and_align`
with the model's alignment template (from its card), the face nearest the image centre. The
crops are cached (``$KERASCNN_CACHE/finetune``, keyed by the files, the detector, the template
and the size); images without a face are skipped and counted in the card.

Example:
    >>> result = finetune_face_model("dlib", ["my_people"], "runs/ft", detector="face_detection_yunet.onnx",
    ...                              steps=300, eval_folders=["other_people"])
    >>> result.card["evaluation"]["after"]["eer"], result.path
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kerascnn.errors import DatasetError, FaceModelError, KerasCNNError
from kerascnn.facetrain.cache import cache_root, content_key, detector_tag
from kerascnn.progress import progress as progress_bar

DEFAULT_STEPS = 300


@dataclass
class FaceCrops:
    """Aligned face crops of identity folders.

    Attributes:
        crops: ``uint8`` ``(n, s, s, 3)`` RGB crops, aligned as the pipeline aligns them.
        labels: ``int32`` ``(n,)`` index into ``people``.
        people: identity names (``folder/person`` when several folders are given).
        paths: the source image of each crop.
        skipped: ``(path, message)`` of the images that gave no face.
    """

    crops: np.ndarray
    labels: np.ndarray
    people: list[str]
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> dict:
        """Counts for a card: images, people, people with >= 2 images, faces not found."""
        counts = np.bincount(self.labels, minlength=len(self.people))
        return {"images": len(self), "people": len(self.people), "people_with_2_or_more": int((counts >= 2).sum()),
                "faces_not_found": len(self.skipped)}


@dataclass
class FinetuneResult:
    """What :func:`finetune_face_model` returns.

    Attributes:
        model: the fine-tuned embedder (unit vectors out).
        path: the written ``.keras`` file; its card is ``path.with_suffix(".json")``.
        card: the card as a dict.
    """

    model: Any
    path: Path
    card: dict


# --- data -----------------------------------------------------------------------------------
def prepare_face_crops(
    data_folders: Sequence[str | os.PathLike],
    pipeline,
    people: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    detector_spec: Any = None,
    progress: bool = True,
) -> FaceCrops:
    """Detect and align the faces of identity folders with ``pipeline``, with a cache.

    Args:
        data_folders: ``<folder>/<person>/<image>`` folders.
        pipeline: a :class:`kerascnn.face.pipeline.FacePipeline` (its detector, selection,
            alignment template and crop size are used).
        people: keep only these person folders (those absent from a folder are ignored).
        cache_dir: cache root (see :func:`kerascnn.facetrain.cache.cache_root`).
        detector_spec: what built the pipeline's detector (part of the cache key).
        progress: show a progress bar for long folders.

    Returns:
        The :class:`FaceCrops` of every image where a face was found.

    Raises:
        DatasetError: a missing folder, a folder without person folders, or none of ``people``.
    """
    from kerascnn.data.folders import read_image, scan_folder
    from kerascnn.face.detect import as_rgb

    folders = [Path(f) for f in data_folders]
    if not folders:
        raise DatasetError("no data folder given (expected <folder>/<person>/<image> folders)")
    cache = cache_root(cache_dir) / "faces"
    crops, labels, names, paths, skipped = [], [], [], [], []
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError(f"data folder {folder} does not exist or is not a folder")
        present = sorted(p.name for p in folder.iterdir() if p.is_dir())
        chosen = present if people is None else [p for p in present if p in set(people)]
        if not chosen:
            wanted = "" if people is None else f" among the {len(people)} people asked for"
            raise DatasetError(
                f"data folder {folder} has no person folders{wanted} (expected {folder}/<person>/<image>)")
        dataset = scan_folder(folder, classes=chosen, skip_empty_classes=True)
        settings = {"kind": "pipeline", "detector": detector_tag(detector_spec), "select": pipeline.select,
                    "alignment": pipeline.alignment.to_dict(), "size": pipeline.image_size}
        file = cache / f"{folder.name}_{content_key(dataset.paths, settings)}.npz"
        if file.is_file():
            saved = np.load(file, allow_pickle=False)
            ok, folder_crops = saved["ok"], saved["crops"]
            messages = [str(m) for m in saved["messages"]]
        else:
            folder_crops, ok, messages = [], [], []
            for path in progress_bar(dataset.paths, progress, f"faces of {folder.name}"):
                try:
                    face = pipeline.detect_and_align(as_rgb(read_image(path), path), path)[0]
                    folder_crops.append(face[1])
                    ok.append(True)
                    messages.append("")
                except KerasCNNError as exc:
                    ok.append(False)
                    messages.append(str(exc))
            size = pipeline.image_size
            folder_crops = np.stack(folder_crops) if folder_crops else np.zeros((0, size, size, 3), np.uint8)
            ok = np.array(ok, bool)
            cache.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(".tmp.npz")
            np.savez(tmp, crops=folder_crops, ok=ok, messages=np.array(messages))
            os.replace(tmp, file)
        prefix = f"{folder.name}/" if len(folders) > 1 else ""
        offset = len(names)
        names += [prefix + c for c in dataset.class_names]
        crops.append(folder_crops)
        labels.append(dataset.labels[ok] + offset)
        paths += [p for p, good in zip(dataset.paths, ok) if good]
        skipped += [(p, m) for p, m, good in zip(dataset.paths, messages, ok) if not good]
    all_crops = np.concatenate(crops)
    all_labels = np.concatenate(labels).astype(np.int32)
    return FaceCrops(all_crops, all_labels, names, paths, skipped)


def check_pk_data(data: FaceCrops, what: str = "the training folders") -> None:
    """Raise a clear error unless P x K sampling is possible: >= 2 people with >= 2 faces.

    Raises:
        DatasetError: the message gives the counts and names people with a single image.
    """
    counts = np.bincount(data.labels, minlength=len(data.people))
    eligible = int((counts >= 2).sum())
    if eligible >= 2:
        return
    single = [p for p, c in zip(data.people, counts) if c == 1]
    more = " ..." if len(single) > 10 else ""
    detail = f"; people with a single image: {', '.join(single[:10])}{more}" if single else ""
    raise DatasetError(
        f"triplet fine-tuning needs P x K batches: at least 2 people with at least 2 face images each; "
        f"{what} have {len(data.people)} people, {eligible} of them with 2 or more images with a face "
        f"({len(data)} faces found, {len(data.skipped)} images without a face){detail}"
    )


# --- freezing -------------------------------------------------------------------------------
def model_stages(model) -> tuple[list[list[str]], list[str]]:
    """The stages of an image model and its head.

    A stage is a run of layers (in the model's order) that starts where the output resolution
    first goes below every earlier one (layers at the input's resolution join the first
    stage); the head is the layers after the last 4-D output.

    Returns:
        ``(stages, head)``: lists of layer names, stages from bottom to top.
    """
    import keras

    size = model.input_shape[1]
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    last_spatial = max(i for i, layer in enumerate(layers) if len(layer.output.shape) == 4 and layer.output.shape[1])
    stages: list[list[str]] = [[]]
    deepest = 0
    for layer in layers[:last_spatial + 1]:
        shape = layer.output.shape
        level = round(math.log2(size / shape[1])) if len(shape) == 4 and shape[1] else deepest
        if level > deepest:
            if deepest > 0:  # layers at the input's resolution (preprocessing) join the first stage
                stages.append([])
            deepest = level
        stages[-1].append(layer.name)
    return stages, [layer.name for layer in layers[last_spatial + 1:]]


def freeze_face_model(model, trainable_stages: int = 1) -> dict:
    """Freeze all but the top ``trainable_stages`` stages and the head (in place; compile after).

    BatchNormalization layers stay frozen everywhere (inference mode, fixed statistics).

    Args:
        model: the embedder.
        trainable_stages: stages to train, counted from the top (0: the head only).

    Returns:
        ``{"trainable_layers": [...], "trainable_parameters", "frozen_parameters", "stages"}``.

    Raises:
        ValueError: ``trainable_stages`` outside 0..number of stages.
    """
    import keras

    stages, head = model_stages(model)
    if not 0 <= trainable_stages <= len(stages):
        raise ValueError(
            f"trainable_stages must be between 0 and the model's {len(stages)} stages, got {trainable_stages}")
    train = set(head) | {name for stage in stages[len(stages) - trainable_stages:] for name in stage}
    model.trainable = True
    for layer in model.layers:
        layer.trainable = layer.name in train and not isinstance(layer, keras.layers.BatchNormalization)
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return {
        "trainable_layers": [layer.name for layer in model.layers if layer.trainable and layer.weights],
        "trainable_parameters": trainable,
        "frozen_parameters": int(model.count_params()) - trainable,
        "stages": len(stages),
    }


# --- evaluation -----------------------------------------------------------------------------
def embed(model, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Unit embeddings ``(n, d)`` float32 of aligned crops (no test-time flip)."""
    out = [np.asarray(model(crops[i:i + batch_size].astype(np.float32), training=False))
           for i in range(0, len(crops), batch_size)]
    emb = np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.output_shape[-1]), np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def all_pairs_figures(embeddings: np.ndarray, labels: np.ndarray) -> dict:
    """AUC, EER and TAR at FAR 1e-2 / 1e-3 over every pair of images (cosine similarity).

    Returns:
        ``{"images", "people", "genuine_pairs", "impostor_pairs", "auc", "eer", "tar_at_far_1e-2",
        "tar_at_far_1e-3", "threshold", "threshold_far_1e-2"}``; TAR at FAR 1e-3 is ``None`` when
        there are fewer than 1,000 impostor pairs.
    """
    from kerascnn.evaluation import best_threshold, eer, roc_auc, tar_at_far
    from kerascnn.evaluation import impostor_genuine_scores

    scores, same = impostor_genuine_scores(embeddings, np.asarray(labels))
    impostors = int((~same).sum())
    tars = tar_at_far(scores, same, (1e-2, 1e-3), similarity=True)
    return {
        "images": int(len(labels)), "people": int(len(np.unique(labels))),
        "genuine_pairs": int(same.sum()), "impostor_pairs": impostors,
        "auc": float(roc_auc(scores, same, similarity=True)), "eer": float(eer(scores, same, similarity=True)),
        "tar_at_far_1e-2": float(tars[1e-2]),
        "tar_at_far_1e-3": float(tars[1e-3]) if impostors >= 1000 else None,
        "threshold": float(best_threshold(scores, same, similarity=True)),
        "threshold_far_1e-2": float(best_threshold(scores, same, target_far=1e-2, similarity=True)),
    }


# --- the run --------------------------------------------------------------------------------
def _source(model) -> tuple[Any, str, dict]:
    """``(keras model, description, source card or {})`` of a model argument."""
    import keras

    from kerascnn.face.model import card_path, load_face_model, load_face_model_card

    if isinstance(model, keras.Model):
        return model, f"a Keras model named {model.name!r}", {}
    loaded = load_face_model(model)
    card = load_face_model_card(model) if card_path(model).is_file() else {}
    return loaded, str(model or "dlib"), card


def finetune_face_model(
    model=None,
    data_folders: Sequence[str | os.PathLike] = (),
    out_dir: str | os.PathLike = "runs/finetune_face",
    *,
    people: Sequence[str] | None = None,
    detector=None,
    trainable_stages: int = 1,
    steps: int = DEFAULT_STEPS,
    steps_per_epoch: int = 50,
    p: int = 8,
    k: int = 4,
    learning_rate: float = 1e-4,
    margin: float = 0.2,
    mining: str = "semi_hard",
    augment: str | None = "face",
    seed: int = 0,
    eval_folders: Sequence[str | os.PathLike] | None = None,
    eval_people: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Any] = (),
    verbose: str | int = "auto",
) -> FinetuneResult:
    """Fine-tune a face embedder with semi-hard triplet loss on P x K batches of identity folders.

    Training runs ``ceil(steps / steps_per_epoch)`` epochs through :func:`kerascnn.training.fit`
    in ``out_dir/run``: a backup after each epoch (``BackupAndRestore``; calling again with the
    same ``out_dir`` after an interruption resumes from the last finished epoch), ``best.keras``,
    ``history.csv`` and a cosine learning-rate schedule. Then ``out_dir/face_model.keras`` and
    its card ``face_model.json`` are written: the source model, the data, the settings, what
    was frozen, the loss, the time, and, with ``eval_folders``, all-pairs figures of the other
    people before and after (and a calibration from them). The card keeps the source's
    alignment template, so :class:`FacePipeline` aligns faces for the new model as for the old.

    Args:
        model: the embedder: ``None`` (the default face model), a shipped name (``"dlib"``,
            ``"small"``), a ``.keras`` path, or a Keras model (then the default alignment).
        data_folders: ``<folder>/<person>/<image>`` folders of the people to train on.
        out_dir: where the run, the model and its card go.
        people: train only on these person folders.
        detector: the face detector (see :func:`kerascnn.face.detect.get_detector`).
        trainable_stages: top stages that train besides the head (see the module docstring).
        steps: training steps (batches) in all, rounded up to whole epochs.
        steps_per_epoch: steps between checkpoints.
        p: people per batch (lowered to the number of people with >= 2 faces).
        k: images per person per batch.
        learning_rate: peak learning rate (AdamW, cosine decay).
        margin: triplet margin (squared Euclidean distance of unit vectors).
        mining: :class:`kerascnn.losses.TripletLoss` mining.
        augment: an augmentation preset (``"face"``: flip, +-10 degrees, 5% shift and zoom,
            brightness and contrast 10%) or ``None``.
        seed: seed of the batches and the augmentation.
        eval_folders: folders of other people, scored on every pair before and after.
        eval_people: only these person folders of ``eval_folders``.
        cache_dir: cache root of the aligned crops.
        callbacks: more Keras callbacks.
        verbose: ``model.fit``'s verbosity.

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        DatasetError: missing folders, or fewer than 2 people with 2 or more face images.
        FaceModelError: a model that does not take RGB images.
        CheckpointMismatchError: ``out_dir`` holds a run of another model.
        ValueError: bad ``trainable_stages``, ``steps``, ``p``, ``k`` or ``mining``.
    """
    from kerascnn import training
    from kerascnn.data.pk import pk_batches_from_arrays
    from kerascnn.face.model import load_alignment
    from kerascnn.face.pipeline import FacePipeline
    from kerascnn.losses import TripletLoss

    if steps < 1 or steps_per_epoch < 1:
        raise ValueError(f"steps and steps_per_epoch must be >= 1, got {steps} and {steps_per_epoch}")
    if p < 2 or k < 2:
        raise ValueError(f"P x K batches need p >= 2 people and k >= 2 images each, got p={p}, k={k}")
    keras_model, source_name, source_card = _source(model)
    if keras_model.input_shape[-1] != 3:
        raise FaceModelError(
            f"fine-tuning needs a model of RGB images (batch, s, s, 3), got input {keras_model.input_shape}")
    alignment = None if hasattr(model, "input_shape") else load_alignment(model)
    pipeline = FacePipeline(detector=detector, model=keras_model, select="central", alignment=alignment)
    train = prepare_face_crops(data_folders, pipeline, people, cache_dir, detector)
    check_pk_data(train)
    evaluation = None
    if eval_folders:
        held = prepare_face_crops(eval_folders, pipeline, eval_people, cache_dir, detector)
        overlap = sorted(set(held.paths) & set(train.paths))
        if overlap:
            raise DatasetError(
                f"the evaluation images must not be training images; {len(overlap)} are both, e.g. {overlap[0]}")
        evaluation = {"data": {"folders": [str(f) for f in eval_folders], **held.summary()},
                      "before": all_pairs_figures(embed(keras_model, held.crops), held.labels)}

    eligible = int((np.bincount(train.labels) >= 2).sum())
    p_used = min(p, eligible)
    frozen = freeze_face_model(keras_model, trainable_stages)
    epochs = math.ceil(steps / steps_per_epoch)
    dataset = pk_batches_from_arrays(train.crops, train.labels, p_used, k, seed=seed, augment=augment,
                                     preprocessing="none", steps_per_epoch=steps_per_epoch)
    out = Path(out_dir)
    start = time.time()
    history = training.fit(
        keras_model, dataset, epochs=epochs, run_dir=out / "run", learning_rate=learning_rate,
        warmup_epochs=1 if epochs > 2 else 0, loss=TripletLoss(margin=margin, mining=mining), metrics=None,
        patience=None, jit_compile=False, steps_per_epoch=steps_per_epoch, callbacks=list(callbacks),
        tensorboard=False, verbose=verbose,
    )
    seconds = time.time() - start
    losses = training.read_history(out / "run" / "history.csv").get("loss", [])
    if evaluation is not None:
        evaluation["after"] = all_pairs_figures(embed(keras_model, held.crops), held.labels)

    path = out / "face_model.keras"
    keras_model.trainable = True  # a shipped model is fully trainable; the card says what was frozen
    keras_model.save(path)
    card = _card(keras_model, path, source_name, source_card, pipeline, train, data_folders, frozen, evaluation, {
        "trainable_stages": trainable_stages, "steps": epochs * steps_per_epoch, "steps_per_epoch": steps_per_epoch,
        "epochs": epochs, "p": p_used, "k": k, "learning_rate": learning_rate,
        "schedule": "cosine decay (AdamW, weight decay 1e-4)",
        "loss": f"TripletLoss(margin={margin}, mining={mining!r}, distance='squared_euclidean')",
        "augmentation": augment, "seed": seed,
        "detector": detector_tag(detector),
    }, {"seconds_this_call": round(seconds, 1), "epochs_this_call": len(history.epoch), "loss_per_epoch": losses})
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return FinetuneResult(keras_model, path, card)


def _card(model, path, source_name, source_card, pipeline, train, folders, frozen, evaluation, settings, run) -> dict:
    card: dict = {
        "model": path.name,
        "parameters": int(model.count_params()),
        "source_model": {"name": source_name,
                         **{k: source_card[k] for k in ("model", "source", "architecture") if k in source_card}},
        "input": source_card.get("input", {"size": list(model.input_shape[1:]), "dtype": "float32", "range": [0, 255],
                                           "color": "RGB"}),
        "output": source_card.get("output", {"embedding_dim": int(model.output_shape[-1]), "metric": "cosine"}),
        "alignment": source_card.get("alignment", pipeline.alignment.to_dict()),
        "training": {"method": "fine-tuning with triplet loss on P x K batches (kerascnn.facetrain.finetune)",
                     "frozen": frozen, **run},
        "data": {"folders": [str(f) for f in folders], **train.summary(),
                 "faces_not_found_examples": [f"{p}: {m}" for p, m in train.skipped[:5]]},
        "settings": settings,
    }
    if "test_time_flip" in source_card:
        card["test_time_flip"] = source_card["test_time_flip"]
    if evaluation is not None:
        after = evaluation["after"]
        card["evaluation"] = {
            "protocol": "every pair of the evaluation people's images (people absent from training), cosine "
                        "similarity of the crops aligned as at inference, no test-time flip",
            **evaluation,
        }
        card["calibration"] = {
            "metric": "cosine", "threshold": after["threshold"],
            "source": f"best accuracy over the {after['genuine_pairs']} genuine and {after['impostor_pairs']} impostor "
                      f"pairs of {after['images']} images of {after['people']} evaluation people "
                      f"({', '.join(evaluation['data']['folders'])}) after fine-tuning; threshold_far_1e-2 "
                      "is the threshold with a false accept rate of 1e-2 there",
            "threshold_far_1e-2": after["threshold_far_1e-2"],
        }
    return card
