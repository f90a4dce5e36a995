"""Aligned face crops (and teacher embeddings) of identity folders, cached for training.

For every image of an ``identity/image`` folder: detect faces with YuNet, keep the face closest
to the image centre (the LFW rule: the person is the one at the centre), place it on the
canonical 5-point template of :mod:`kerascnn.face.align` and, optionally, describe it with a
teacher embedder (:mod:`kerascnn.distillation`). Crops are stored on a *canvas* larger than the
model input (``canvas - size`` pixels of margin, split evenly) so that training can jitter them;
the centre ``size`` x ``size`` of a canvas is exactly ``align_face(image, landmarks, size)``.

The work is done in chunks saved as they finish, so an interrupted run resumes where it stopped,
and a run can be split across processes (``shard``, ``num_shards``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kerascnn.data.folders import read_image, scan_folder
from kerascnn.errors import DatasetError
from kerascnn.face.align import similarity_transform, template, warp
from kerascnn.face.detect import YuNetDetector, select_faces
from kerascnn.facetrain.cache import cache_root, content_key, detector_tag
from kerascnn.progress import progress as progress_bar
from kerascnn.progress import progress_counter

YUNET_SCORE_THRESHOLD = 0.5
CHUNK = 256


@dataclass
class FaceData:
    """Aligned crops of a folder dataset.

    Attributes:
        paths: source image of each crop.
        labels: ``int32`` identity index; names in ``class_names``.
        class_names: identity (folder) names.
        crops: ``uint8`` ``(n, canvas, canvas, 3)`` RGB crops; the centre ``size`` square is the
            aligned face.
        landmarks: ``float32`` ``(n, 5, 2)`` landmarks in the source image.
        detected: ``bool``: False where no face was found and the dataset's mean landmarks were
            used instead.
        teacher: ``float32`` ``(n, dim)`` unit teacher embeddings, or ``None``.
        size: the aligned face size; ``canvas`` is ``crops.shape[1]``.
        chips: the teacher's ``uint8`` face chips, or ``None``.
    """

    paths: list[str]
    labels: np.ndarray
    class_names: list[str]
    crops: np.ndarray
    landmarks: np.ndarray
    detected: np.ndarray
    teacher: np.ndarray | None
    size: int
    chips: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> "FaceData":
        """The crops at ``indices`` (labels unchanged)."""
        idx = np.asarray(indices, dtype=np.int64)
        return FaceData(
            [self.paths[i] for i in idx], self.labels[idx], list(self.class_names), self.crops[idx],
            self.landmarks[idx], self.detected[idx], None if self.teacher is None else self.teacher[idx], self.size,
            None if self.chips is None else self.chips[idx],
        )


def _central_face(image: np.ndarray, detector) -> np.ndarray | None:
    """``(14,)`` box and landmarks of the face nearest the image centre, or ``None``.

    When nothing is found the image is padded by half its size and searched again: tight crops
    (ORL) and faces at the border are found far more reliably with background around them.

    Args:
        image: RGB ``uint8`` image.
        detector: a :class:`kerascnn.face.detect.YuNetDetector` (faces with 5 landmarks).
    """
    h, w = image.shape[:2]
    for pad in (0, max(h, w) // 2):
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0)) if pad else image
        found = detector(padded)
        if found:
            break
    else:
        return None
    face = select_faces(found, padded.shape, "central")[0]
    row = np.concatenate([np.asarray(face.box, np.float32), face.landmarks.reshape(-1)])
    row[[0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]] -= pad  # w, h stay
    return row


def canvas_matrix(landmarks: np.ndarray, size: int, canvas: int) -> np.ndarray:
    """The ``2x3`` warp of ``landmarks`` onto the ``size`` template centred in a ``canvas`` square."""
    margin = (canvas - size) / 2
    return similarity_transform(np.asarray(landmarks, np.float32).reshape(5, 2), template(size) + margin)


def _crop(image: np.ndarray, landmarks: np.ndarray, size: int, canvas: int) -> np.ndarray:
    return warp(image, canvas_matrix(landmarks, size, canvas), canvas)


def _box_of(landmarks: np.ndarray) -> np.ndarray:
    """A face box guessed from 5 landmarks (used for the teacher when no face was detected)."""
    eyes, mouth = landmarks[:2].mean(0), landmarks[3:].mean(0)
    side = 2.2 * float(np.linalg.norm(mouth - eyes)) + 1.0
    centre = (eyes + mouth) / 2
    return np.array([centre[0] - side / 2, centre[1] - side / 2, side, side], np.float32)


def cache_folder(root: str | os.PathLike, paths, detector, teacher_name: str | None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of one training folder's faces (see :mod:`kerascnn.facetrain.cache`).

    Args:
        root: the ``identity/image`` folder (its name prefixes the key, for people who look).
        paths: its images, in scan order.
        detector: the detector model (path, name or instance).
        teacher_name: the teacher whose chips and descriptors are cached, or ``None``.
        cache_dir: the cache root (default :func:`~kerascnn.facetrain.cache.cache_root`).

    Returns:
        ``<cache root>/faces/<folder name>_<content key>``.
    """
    settings = {"kind": "train", "detector": detector_tag(detector), "score_threshold": YUNET_SCORE_THRESHOLD,
                "template": template(1).tolist(), "teacher": teacher_name}
    return cache_root(cache_dir) / "faces" / f"{Path(root).name}_{content_key(paths, settings)}"


def _process_chunk(paths, detector, teacher, size, canvas) -> dict:
    crops, marks, boxes, found, chips = [], [], [], [], []
    chip = teacher.chip_size if teacher else 0
    for path in paths:
        image = read_image(path, channels=3)
        face = _central_face(image, detector)
        found.append(face is not None)
        if face is None:
            marks.append(np.full((5, 2), np.nan, np.float32))
            boxes.append(np.full(4, np.nan, np.float32))
            crops.append(np.zeros((canvas, canvas, 3), np.uint8))
            chips.append(np.zeros((chip, chip, 3), np.uint8))
            continue
        landmarks = face[4:14].reshape(5, 2)
        marks.append(landmarks)
        boxes.append(face[:4])
        crops.append(_crop(image, landmarks, size, canvas))
        chips.append(teacher.prepare(image, face[:4]) if teacher else np.zeros((0, 0, 3), np.uint8))
    return {
        "crops": np.stack(crops), "size": np.array(size), "landmarks": np.stack(marks).astype(np.float32),
        "boxes": np.stack(boxes).astype(np.float32), "detected": np.array(found), "chips": np.stack(chips),
    }


def prepare_faces(
    root: str | os.PathLike,
    detector_path: str | os.PathLike,
    size: int = 112,
    canvas: int = 128,
    teacher=None,
    describe: bool | str = True,
    cache_dir: str | os.PathLike | None = None,
    shard: int = 0,
    num_shards: int = 1,
    progress: bool = True,
) -> FaceData | None:
    """Detect, align (and describe with ``teacher``) every image of a folder, with a cache.

    Chunks of 256 images are written under ``cache_dir`` as they finish; a second call
    reuses them (resume). With ``num_shards > 1`` this process does only the chunks
    ``i % num_shards == shard`` and returns ``None`` unless every chunk is present.
    Images where no face is found get the dataset's mean landmarks (of the detected faces)
    and are flagged in ``FaceData.detected``.

    With a teacher, its chips are cut here; ``describe=False`` stops before the (slow)
    embeddings, leaving ``FaceData.teacher`` ``None`` and the chips in ``FaceData.chips``, to be
    described later or elsewhere (:func:`describe_faces`).

    Args:
        root: an ``identity/image`` folder.
        detector_path: the YuNet ``.onnx`` model; ``None``: the shipped one.
        size: aligned face size (the model input).
        canvas: side of the stored crops, ``>= size``.
        teacher: a :class:`kerascnn.distillation.TeacherEmbedder`, or ``None``.
        describe: compute the teacher embeddings now; ``"partial"``: only read those already
            cached (NaN rows for the others, see :func:`describe_faces`).
        cache_dir: cache root (see :func:`kerascnn.facetrain.cache.cache_root`).
        shard: this process's shard.
        num_shards: number of processes sharing the work.
        progress: print a progress bar on stderr.

    Returns:
        The :class:`FaceData`, or ``None`` when other shards have not finished.

    Raises:
        DatasetError: a bad folder or ``canvas < size``.
        DetectorError: the detector model is missing or unreadable.
    """
    if canvas < size:
        raise DatasetError(f"canvas must be at least the face size {size}, got {canvas}")
    root = Path(root)
    dataset = scan_folder(root)
    folder = cache_folder(root, dataset.paths, detector_path, teacher.name if teacher else None, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    chunks = range((len(dataset) + CHUNK - 1) // CHUNK)
    todo = [i for i in chunks if i % num_shards == shard and not (folder / f"chunk_{i:04d}.npz").exists()]
    detector = YuNetDetector(detector_path, score_threshold=YUNET_SCORE_THRESHOLD)
    bar = progress_counter(sum(len(dataset.paths[i * CHUNK:(i + 1) * CHUNK]) for i in todo), f"faces of {root.name}",
                           progress)
    for i in todo:
        paths = dataset.paths[i * CHUNK:(i + 1) * CHUNK]
        _save(folder / f"chunk_{i:04d}.npz", _process_chunk(paths, detector, teacher, size, canvas))
        bar.update(len(paths))
    bar.close()
    if not all((folder / f"chunk_{i:04d}.npz").exists() for i in chunks):
        return None
    parts = [np.load(folder / f"chunk_{i:04d}.npz") for i in chunks]
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0].files if key != "size"}
    if any(int(p["size"]) != size or p["crops"].shape[1] != canvas for p in parts):
        merged["crops"] = _recrop(dataset.paths, merged["landmarks"], size, canvas, progress)
    data = _fill_missing(dataset, merged, teacher, size, canvas, folder)
    if teacher is not None and describe:
        data.teacher = describe_faces(data.chips, teacher, folder, progress=progress, partial=describe == "partial")
    return data


def _recrop(paths, landmarks, size: int, canvas: int, progress: bool) -> np.ndarray:
    """Crops at another size from the cached landmarks (no detection again)."""
    crops = np.zeros((len(paths), canvas, canvas, 3), np.uint8)
    for i, (path, marks) in enumerate(progress_bar(list(zip(paths, landmarks)), progress, f"crops {size}/{canvas}")):
        if np.all(np.isfinite(marks)):
            crops[i] = _crop(read_image(path, channels=3), marks, size, canvas)
    return crops


def _save(path: Path, arrays: dict) -> None:
    """``np.savez`` through a temporary file, so that an interrupted write leaves nothing."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def describe_faces(chips: np.ndarray, teacher, cache_dir=None, shard: int = 0, num_shards: int = 1,
                   progress: bool = True, partial: bool = False) -> np.ndarray | None:
    """Teacher embeddings of chips, by chunks cached in ``cache_dir`` (resumable, shardable).

    Args:
        chips: ``(n, chip, chip, 3)`` teacher chips (:attr:`FaceData.chips`).
        teacher: the :class:`kerascnn.distillation.TeacherEmbedder` that cut them.
        cache_dir: folder of the chunk files; ``None``: no cache.
        shard: this process's shard.
        num_shards: number of processes sharing the work.
        progress: print a progress bar on stderr.
        partial: compute nothing; return the cached chunks, NaN rows where a chunk is missing
            (to train on what is ready while other processes describe the rest).

    Returns:
        ``(n, dim)`` unit embeddings, or ``None`` when other shards have not finished.
    """
    chunks = range((len(chips) + CHUNK - 1) // CHUNK)
    folder = Path(cache_dir) if cache_dir is not None else None
    files = {i: folder / f"teacher_{i:04d}.npz" if folder else None for i in chunks}
    results = {}
    todo = [i for i in chunks if i % num_shards == shard and not (files[i] and files[i].exists())]
    if partial:
        todo = []
    bar = progress_counter(sum(len(chips[i * CHUNK:(i + 1) * CHUNK]) for i in todo), f"teacher {teacher.name}",
                           progress)
    for i in todo:
        results[i] = teacher.describe(chips[i * CHUNK:(i + 1) * CHUNK])
        if files[i]:
            _save(files[i], {"teacher": results[i]})
        bar.update(len(results[i]))
    bar.close()
    for i in chunks:
        if i not in results:
            if not (files[i] and files[i].exists()):
                if not partial:
                    return None
                results[i] = np.full((len(chips[i * CHUNK:(i + 1) * CHUNK]), teacher.dim), np.nan, np.float32)
                continue
            results[i] = np.load(files[i])["teacher"]
    return np.concatenate([results[i] for i in chunks]).astype(np.float32)


def _fill_missing(dataset, merged, teacher, size, canvas, folder) -> FaceData:
    """Give undetected images the mean landmarks of the detected ones."""
    missing = np.flatnonzero(~merged["detected"])
    if len(missing) and merged["detected"].any():
        mean = np.nanmean(merged["landmarks"][merged["detected"]], axis=0)
        for i in missing:
            image = read_image(dataset.paths[i], channels=3)
            merged["crops"][i] = _crop(image, mean, size, canvas)
            merged["landmarks"][i] = mean
            if teacher is not None:
                merged["chips"][i] = teacher.prepare(image, _box_of(mean))
    return FaceData(
        list(dataset.paths), dataset.labels, list(dataset.class_names), merged["crops"], merged["landmarks"],
        merged["detected"], None, size, merged["chips"] if teacher is not None else None,
    )
