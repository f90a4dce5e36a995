"""From photos to face embeddings: read, detect, select, align, embed (batched).

:class:`FacePipeline` is what enrollment, verification, identification, calibration and
evaluation share, so every tool turns an image into an embedding the same way.

Example:
    >>> pipeline = FacePipeline(detector="haar")          # default face model
    >>> batch = pipeline.embed_images(["alice1.jpg", "alice2.jpg"])
    >>> batch.embeddings[batch.ok]                         # (n_ok, 128) unit vectors
    >>> [r.message for r in batch.results if not r.ok]     # what went wrong, per file
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from kerascnn.backends import require_tensorflow
from kerascnn.data.folders import MAX_PIXELS, read_image, read_image_bytes
from kerascnn.evaluation import unit_vectors
from kerascnn.errors import FaceModelError, KerasCNNError
from kerascnn.face.align import DEFAULT_TEMPLATE, AlignmentTemplate
from kerascnn.face.detect import SELECTIONS, Detection, align_detection, as_rgb, get_detector, select_faces
from kerascnn.progress import progress as progress_bar

FLIPS = ("none", "coarse", "all")


@dataclass
class FaceResult:
    """What happened to one face (or one input that gave no face).

    Attributes:
        index: position of the input (path or array) this face comes from.
        source: the input's path, or ``"array[i]"`` for arrays.
        status: ``"ok"`` or ``"error"``.
        error: the exception (a :class:`KerasCNNError`: ``NoFaceError``, ``ImageReadError``...)
            when ``status == "error"``, else None; :attr:`message` is its text.
        alignment: ``"landmarks"``, ``"eyes"`` or ``"box"`` (see :func:`align_detection`).
        detection: the face's :class:`Detection`, or None.
        faces_found: how many faces the detector found in the input (the selection kept this
            one of them), or None when the input failed before detection.
    """

    index: int
    source: str
    status: str = "ok"
    error: KerasCNNError | None = None
    alignment: str | None = None
    detection: Detection | None = None
    faces_found: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def message(self) -> str | None:
        """The error's message, or None."""
        return None if self.error is None else str(self.error)

    @property
    def box(self) -> tuple | None:
        return None if self.detection is None else self.detection.box

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        out = {"index": self.index, "source": self.source, "status": self.status}
        if self.ok:
            out.update(alignment=self.alignment, faces_found=self.faces_found, **self.detection.to_dict())
        else:
            out.update(error=self.message, error_type=type(self.error).__name__)
        return out


@dataclass
class FaceBatch:
    """Embeddings of a batch of inputs, one row per result.

    Attributes:
        embeddings: ``(n, d)`` float32; rows of failed results are NaN (use :attr:`ok`).
        results: one :class:`FaceResult` per row, in input order (with ``select="all"`` an input
            may give several rows; every input gives at least one).
        crops: the aligned crops ``(n, s, s, 3)`` uint8 when asked for (``keep_crops=True``); for a
            fused model (several inputs), a tuple of such arrays, one per member input.
    """

    embeddings: np.ndarray
    results: list[FaceResult]
    crops: np.ndarray | tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return len(self.results)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the rows that have an embedding."""
        return np.array([r.ok for r in self.results], dtype=bool)

    @property
    def errors(self) -> list[FaceResult]:
        return [r for r in self.results if not r.ok]

    def failure_count(self) -> int:
        return len(self.errors)


@dataclass
class _Item:
    """A face in flight: its result and its aligned crop."""

    result: FaceResult
    crop: np.ndarray | tuple[np.ndarray, ...] | None = field(default=None, repr=False)  # a tuple: one per input
    extra: list = field(default_factory=list, repr=False)  # more crops of the same face (box scales)


def load_embedder(model=None):
    """An embedding model: a Keras model, a shipped model's name, a ``.keras`` path, or None for
    the default face model.

    Raises:
        FaceModelError: the file is missing or is not an image-to-vector Keras model.
    """
    import keras

    if isinstance(model, keras.Model):
        return model
    from kerascnn.face.model import load_face_model

    return load_face_model(model)


class FacePipeline:
    """Read, detect, select, align and embed faces, in batches.

    Args:
        detector: anything :func:`kerascnn.face.detect.get_detector` takes (None or ``"yunet"``:
            the shipped YuNet, or the file ``$KERASCNN_DETECTOR_MODEL`` names; ``"haar"``; a YuNet
            ``.onnx`` path; a callable).
        model: a Keras embedding model, a ``.keras`` path, or None for the default face model
            (:func:`kerascnn.face.model.load_face_model`). It takes aligned RGB crops, float32
            0..255, of size ``model.input_shape[1:3]``; its outputs are L2-normalized here again
            (a no-op for unit-vector models, a safety for others). A fused model
            (:mod:`kerascnn.face.ensemble`) takes one crop per member, each aligned on that
            member's template at its size (its card's ``members``), and is one model to every tool.
        select: which face of an image to keep: ``"largest"``, ``"central"`` or ``"all"``.
        single: require exactly one face per image (several: :class:`MultipleFacesError`).
        image_size: side of the aligned crop; default the model's input size (a fused model's
            members keep their own sizes).
        batch_size: crops per model call.
        max_pixels: images above this many pixels are refused (:class:`ImageTooLargeError`).
        alignment: where the face's points go in the crop (an
            :class:`kerascnn.face.align.AlignmentTemplate`); default the one in the model's card
            when the model is given by name or path, else the InsightFace template. For a fused
            model, a sequence of templates (one per member input); default its card's members'.
        flip: test-time flip, the mean of the embeddings of a crop and of its mirror image:
            ``"all"`` faces (or True), ``"coarse"`` (only faces aligned without five landmarks:
            Haar's eyes or box) or ``"none"`` (or False); default the card's ``test_time_flip``
            (``"none"`` without a card).
        box_scales: for faces aligned without five landmarks (Haar's eyes or box), also embed
            crops of the box scaled by these factors and average (a box is a coarse guide to
            where the face is; averaging over its scale steadies the embedding); default the
            card's ``box_scales`` (none without a card).
    """

    def __init__(self, detector=None, model=None, select: str = "largest", single: bool = False,
                 image_size: int | None = None, batch_size: int = 64, max_pixels: int = MAX_PIXELS,
                 alignment: AlignmentTemplate | None = None, flip: bool | None = None,
                 box_scales: Sequence[float] | None = None):
        if select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.detector = get_detector(detector)
        self.model = load_embedder(model)
        self.has_card = not hasattr(model, "input_shape")  # a name or path (None: the default) has a card
        self.model_spec = model if self.has_card else None  # whose card holds the calibrations
        from kerascnn.face.model import alignment_of, card_path, inference_card

        given = hasattr(model, "input_shape")  # a Keras model has no card; a name or path has its card's options
        card = {} if given else inference_card(model)
        where = "" if given else str(card_path(model))
        # a fused model: (size, template) of each member input; None for a single model
        self.members = None
        if len(self.model.inputs) > 1:
            from kerascnn.face.ensemble import member_crops

            if image_size is not None:
                raise ValueError("image_size applies to a single model; a fused model's members have their own sizes")
            self.members = member_crops(self.model, card, alignment, where)
            alignment = self.members[0][1]
        self.alignment = alignment or alignment_of(card, where)
        if flip is None:
            flip = card.get("test_time_flip", "none")
        self.flip = {True: "all", False: "none"}.get(flip, flip)
        if self.flip not in FLIPS:
            raise ValueError(f"flip must be one of {FLIPS} (or a bool), got {flip!r}")
        if box_scales is None:
            box_scales = card.get("box_scales", ())
        self.box_scales = tuple(float(v) for v in box_scales if float(v) != 1.0)
        shape = tuple(self.model.inputs[0].shape)
        if len(shape) != 4 or shape[-1] not in (1, 3):
            raise FaceModelError(f"the embedding model must take (batch, size, size, 1 or 3) images, got input shape {shape}")
        self.image_size = int(image_size or shape[1] or 112)
        self.channels = int(shape[-1])
        self.select = select
        self.single = single
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self._embed_fn = None

    @property
    def embedding_dim(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def template_options(self) -> dict:
        """What shapes this pipeline's templates besides its model, where it differs from the
        defaults of a model without card: ``alignment`` (the template's points), ``image_size``,
        ``flip``, ``box_scales``. Part of the gallery's model identity
        (:func:`kerascnn.face.gallery.pipeline_identity`)."""

        def points(template: AlignmentTemplate) -> dict:
            return {k: v for k, v in template.to_dict().items() if k != "source"}

        options = {"alignment": points(self.alignment), "image_size": self.image_size, "flip": self.flip,
                   "box_scales": list(self.box_scales)}
        bare = {"alignment": points(DEFAULT_TEMPLATE), "image_size": int(self.model.inputs[0].shape[1] or 112),
                "flip": "none", "box_scales": []}
        if self.members is not None:  # every member's crop (the fusion weights are among the model's weights)
            del options["alignment"], options["image_size"]
            options["members"] = [{"alignment": points(t), "image_size": size} for size, t in self.members]
        return {key: value for key, value in options.items() if key not in bare or value != bare[key]}

    @functools.cached_property
    def identity(self) -> dict:
        """The gallery's identity of this pipeline's templates
        (:func:`kerascnn.face.gallery.model_identity` of its model and ``template_options``),
        computed once: hashing the weights costs tens of milliseconds for dlib's network, too much
        for every request of a service. A pipeline's model is not trained in place."""
        from kerascnn.face.gallery.records import model_identity

        return model_identity(self.model, self.template_options)

    def detect_and_align(self, image: np.ndarray, source: str = "the image") -> list[tuple[Detection, np.ndarray, str]]:
        """The selected face(s) of one RGB image as ``(detection, crop, alignment_kind)``.

        Raises:
            NoFaceError, MultipleFacesError: see :func:`select_faces`.
        """
        return self._detect_and_align(image, source)[1]

    def _detect_and_align(self, image: np.ndarray, source: str) -> tuple[int, list[tuple[Detection, np.ndarray, str]]]:
        """``(faces found, the selected faces as detect_and_align gives them)``."""
        detections = self.detector(image)
        faces = select_faces(detections, image.shape, self.select, source=source, single=self.single)
        return len(detections), [(face, *self._align(image, face)) for face in faces]

    def _align(self, image: np.ndarray, face: Detection) -> tuple[np.ndarray | tuple[np.ndarray, ...], str]:
        """``(crop, alignment kind)`` of one face; a fused model's crop is a tuple, one per member."""
        if self.members is None:
            return align_detection(image, face, self.image_size, self.alignment)
        aligned = [align_detection(image, face, size, template) for size, template in self.members]
        return tuple(crop for crop, _ in aligned), aligned[0][1]

    def _box_crops(self, image: np.ndarray, face: Detection, kind: str) -> list[np.ndarray]:
        """Crops of the face's box scaled by :attr:`box_scales` (none for 5-landmark alignment)."""
        if kind == "landmarks" or not self.box_scales:
            return []
        x, y, w, h = face.box
        crops = []
        for scale in self.box_scales:
            box = (x + w * (1 - scale) / 2, y + h * (1 - scale) / 2, w * scale, h * scale)
            crops.append(self._align(image, Detection(box, angle=face.angle))[0])
        return crops

    def embed_crops(self, crops) -> np.ndarray:
        """Unit embeddings ``(n, d)`` float32 of aligned ``uint8`` or float crops ``(n, s, s, 3)``
        (a fused model: a sequence of such arrays, one per member input), batched; with
        ``flip="all"`` each is the mean with its mirror image's."""
        emb = self._embed(crops)
        if self.flip == "all" and len(emb):
            mirrored = [c[:, :, ::-1] for c in crops] if self.members else np.asarray(crops)[:, :, ::-1]
            emb = unit_vectors(emb + self._embed(mirrored))
        return emb

    def _embed(self, crops) -> np.ndarray:
        """Unit embeddings of crops through the model (one ``tf.function``, batches); a fused
        model's crops are one array per member input."""
        inputs = [np.asarray(c) for c in crops] if self.members else [np.asarray(crops)]
        if len(inputs[0]) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        if self.channels == 1 and inputs[0].shape[-1] == 3:
            inputs = [(inputs[0].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]]
        fn, step = self._compiled(), self.batch_size
        out = [fn(*[x[i:i + step].astype(np.float32) for x in inputs]).numpy() for i in range(0, len(inputs[0]), step)]
        return unit_vectors(np.concatenate(out).astype(np.float32))

    def _face_crops(self, item: _Item) -> list[np.ndarray]:
        """Every crop one face is embedded from: its crop, its box-scale crops, their mirrors."""
        crops = [item.crop] + item.extra
        if self.flip == "all" or (self.flip == "coarse" and item.result.alignment != "landmarks"):
            crops += [tuple(m[:, ::-1] for m in c) if self.members else c[:, ::-1] for c in crops]
        return crops

    def _compiled(self):
        """The model call as a ``tf.function`` with a free batch dimension (one trace); it takes
        one batch per model input."""
        require_tensorflow("The face pipeline's compiled embedding")
        if self._embed_fn is None:
            import tensorflow as tf

            sizes = [size for size, _ in self.members] if self.members else [self.image_size]
            specs = [tf.TensorSpec((None, s, s, self.channels), tf.float32) for s in sizes]
            self._embed_fn = tf.function(lambda *x: self.model(list(x) if self.members else x[0], training=False),
                                         input_signature=specs)
        return self._embed_fn

    def embed_images(self, images: Sequence[str | os.PathLike | np.ndarray | bytes], progress: bool = True,
                     strict: bool = False, keep_crops: bool = False) -> FaceBatch:
        """Embed the face(s) of each image.

        Args:
            images: image paths, RGB/grey/RGBA ``uint8`` arrays or image files' bytes (mixed is fine).
            progress: show a progress bar (stderr) for long work (from 64 inputs on).
            strict: raise the first per-image error instead of recording it.
            keep_crops: keep the aligned crops in the result (for inspection and tests).

        Returns:
            A :class:`FaceBatch`: per input one row (several with ``select="all"``), failed ones
            with ``status="error"``, the message, and a NaN embedding.

        Raises:
            KerasCNNError: with ``strict=True``, the first image that cannot be read or has no
                (or too many) faces.
        """
        items: list[_Item] = []
        for index, image in enumerate(progress_bar(images, progress, "detect+align")):
            items.extend(self._items_of(index, image, strict))
        good = [it for it in items if it.crop is not None]
        embeddings = np.full((len(items), self.embedding_dim), np.nan, np.float32)
        rows = [i for i, it in enumerate(items) if it.crop is not None]
        # each face: the mean of the unit embeddings of all its crops, scaled to unit length
        flat = [(row, crop) for row, it in zip(rows, good) for crop in self._face_crops(it)]
        if flat:
            embeddings[rows] = 0.0
            crops = [c for _, c in flat]
            stacked = [np.stack(m) for m in zip(*crops)] if self.members else np.stack(crops)
            np.add.at(embeddings, [r for r, _ in flat], self._embed(stacked))
            embeddings[rows] = unit_vectors(embeddings[rows])
        all_crops = None
        if keep_crops:
            sizes = [size for size, _ in self.members] if self.members else [self.image_size]
            all_crops = tuple(np.zeros((len(items), s, s, 3), np.uint8) for s in sizes)
            for row, it in zip(rows, good):
                for i, crop in enumerate(it.crop if self.members else [it.crop]):
                    all_crops[i][row] = crop
            all_crops = all_crops if self.members else all_crops[0]
        return FaceBatch(embeddings, [it.result for it in items], all_crops)

    def _items_of(self, index: int, image, strict: bool) -> list[_Item]:
        """The faces of one input, or one error item."""
        source = (f"array[{index}]" if isinstance(image, np.ndarray) else f"bytes[{index}]" if isinstance(image, bytes)
                  else os.fspath(image))
        try:
            if isinstance(image, np.ndarray):
                array = image
            elif isinstance(image, bytes):  # an image file's bytes (an upload): decoded in memory
                array = read_image_bytes(image, source, max_pixels=self.max_pixels)
            else:
                array = read_image(image, max_pixels=self.max_pixels)
            rgb = as_rgb(array, source)
            found, faces = self._detect_and_align(rgb, source)
        except KerasCNNError as exc:
            if strict:
                raise
            return [_Item(FaceResult(index, source, "error", exc))]
        return [_Item(FaceResult(index, source, alignment=kind, detection=det, faces_found=found), crop,
                      self._box_crops(rgb, det, kind))
                for det, crop, kind in faces]

    def embed_one(self, image) -> tuple[np.ndarray, FaceResult]:
        """The embedding of the one selected face of one image; raises on any problem."""
        batch = self.embed_images([image], progress=False, strict=True)
        return batch.embeddings[0], batch.results[0]
