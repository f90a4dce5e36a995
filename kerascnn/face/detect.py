"""Face detection behind one small interface, face selection, and alignment of a detection.

A detector is any callable ``detector(image) -> list[Detection]`` taking an RGB ``uint8`` image
``(h, w, 3)``. Three are provided:

- :class:`YuNetDetector`, the default: OpenCV's ``FaceDetectorYN`` on OpenCV Zoo's YuNet model
  (MIT licence, 230 KB, shipped inside kerascnn with its licence in ``assets/YUNET_LICENSE.txt``
  and checked against its sha256 when loaded), or on a YuNet ``.onnx`` file the user gives; it
  returns five landmarks per face and misses far fewer faces than Haar.
- :class:`HaarDetector` (``"haar"``): OpenCV's Haar cascades, which ship inside the OpenCV wheel
  (frontal face, then the eye cascade inside each face for the eye centres).
- :class:`CallableDetector`: wraps any function that returns boxes ``(x, y, w, h[, score])``.

:func:`get_detector` turns a user's choice (``None`` or ``"yunet"``, ``"haar"``, an ``.onnx``
path, a callable)
into a detector; :func:`select_faces` keeps the largest, the most central, or all faces;
:func:`align_detection` warps a detection onto the canonical crop of
:mod:`kerascnn.face.align` and says how it was aligned (``"landmarks"``, ``"eyes"`` or ``"box"``).

Example:
    >>> detector = get_detector(None)                      # the shipped YuNet
    >>> faces = select_faces(detector(image), image.shape, "largest", source="a.jpg")
    >>> crop, kind = align_detection(image, faces[0], size=112)
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from kerascnn.errors import DetectorError, ImageReadError, MultipleFacesError, NoFaceError
from kerascnn.face.align import DEFAULT_TEMPLATE, AlignmentTemplate, align_face

SELECTIONS = ("largest", "central", "all")
DETECTOR_MODEL_ENV = "KERASCNN_DETECTOR_MODEL"
# The YuNet model shipped inside the package, and the sha256 it is checked against when loaded.
SHIPPED_YUNET = Path(__file__).resolve().parents[1] / "assets" / "face_detection_yunet_2026may.onnx"
SHIPPED_YUNET_SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"

# Mean positions of the 5 template landmarks (image-left eye, image-right eye, nose tip, left and
# right mouth corners) relative to a Haar frontal-face box, as fractions of its width and height
# from its top-left corner. Measured once with `python3 scripts/measure_detection.py --step 4
# --box-means --detector-model face_detection_yunet_2026may.onnx` on 2,256 LFW deep-funneled images
# (every 4th file in sorted order): YuNet's landmarks of the central face inside HaarDetector's
# box of the same face, averaged over the 2,241 images where both found it.
# Used to align a box when no eyes or landmarks are known (the "box" fallback).
BOX_LANDMARKS = np.array(
    [
        [0.3175, 0.3913],
        [0.6956, 0.3893],
        [0.5087, 0.6056],
        [0.3529, 0.7734],
        [0.6739, 0.7706],
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Detection:
    """One face found in an image.

    Attributes:
        box: ``(x, y, w, h)`` in pixels of the image given to the detector.
        score: the detector's confidence (detector-specific scale; higher is surer).
        landmarks: ``(5, 2)`` points in the template order of :data:`kerascnn.face.align.TEMPLATE_112`
            (image-left eye, image-right eye, nose tip, mouth corners), or None.
        eyes: ``(2, 2)`` eye centres, image-left first, when only the eyes are known, or None.
        angle: in-plane rotation of the face in degrees (the box is turned by it about its
            centre); non-zero for faces found in a rotated copy of the image.
    """

    box: tuple[float, float, float, float]
    score: float = 1.0
    landmarks: np.ndarray | None = None
    eyes: np.ndarray | None = None
    angle: float = 0.0

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0

    def scaled(self, factor: float) -> "Detection":
        """The same detection with every coordinate multiplied by ``factor``."""
        pts = lambda a: None if a is None else (np.asarray(a, np.float32) * factor)  # noqa: E731
        return Detection(tuple(float(v) * factor for v in self.box), self.score, pts(self.landmarks), pts(self.eyes),
                         self.angle)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        out = {"box": [round(float(v), 1) for v in self.box], "score": round(float(self.score), 4)}
        if self.landmarks is not None:
            out["landmarks"] = np.round(self.landmarks.astype(np.float64), 1).tolist()
        if self.eyes is not None:
            out["eyes"] = np.round(self.eyes.astype(np.float64), 1).tolist()
        if self.angle:
            out["angle"] = round(float(self.angle), 1)
        return out


def as_rgb(image: np.ndarray, source: str = "the image") -> np.ndarray:
    """An RGB ``uint8`` ``(h, w, 3)`` array from a grey, RGB or RGBA ``uint8`` array.

    Raises:
        ImageReadError: another dtype or shape (names ``source``).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ImageReadError(
            f"{source}: expected a uint8 image (height, width[, 1|3|4]), got {image.dtype} array of shape {image.shape}"
        )
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk so that its longer side is at most ``max_side``, and the shrink factor."""
    side = max(image.shape[:2])
    if side <= max_side:
        return image, 1.0
    factor = max_side / side
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


def _cascade(name: str) -> cv2.CascadeClassifier:
    """One of the Haar cascades shipped in the OpenCV wheel (``cv2.data.haarcascades``).

    Raises:
        DetectorError: the file cannot be loaded (a broken OpenCV install).
    """
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, name))
    if cascade.empty():
        raise DetectorError(f"cannot load the Haar cascade {name} from {cv2.data.haarcascades} (a broken OpenCV install?)")
    return cascade


class HaarDetector:
    """OpenCV's Haar cascades: frontal faces, then eyes inside each face.

    The cascade files ship with the OpenCV wheel (``cv2.data.haarcascades``): nothing to download.
    Eyes are searched in the upper part of each face box; when one eye is found on each side of
    the box the detection carries their centres (2-point alignment), otherwise only the box.

    Args:
        scale_factor: image pyramid step of ``detectMultiScale``.
        min_neighbors: detections needed around a face to keep it (higher: fewer false faces).
        min_size: smallest face side in pixels, as a fraction of the image's shorter side.
        find_eyes: run the eye cascade in each face.
        max_side: images with a longer side are shrunk before detection (coordinates are returned
            in the original image).
        pad: when no face is found, search again with a replicated border of this fraction of
            the image's longer side around it: the cascade misses faces that fill the whole image
            (12% of the tightly cropped ORL faces without the retry, none with it).
        fallback: when still no face is found, try OpenCV's other frontal cascade (``alt2``,
            3 neighbours), then its profile cascade on the image and its mirror image, then the
            default cascade on copies turned by 15 and 30 degrees either way (together they find
            40 of the 48 faces the default cascade misses in the 5,367 images of the LFW
            development pairs); the boxes they give align by the box alone.
    """

    ROTATIONS = (15.0, -15.0, 30.0, -30.0)

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: float = 0.15,
        find_eyes: bool = True,
        max_side: int = 1024,
        pad: float = 0.2,
        fallback: bool = True,
    ):
        self.face_cascade = _cascade("haarcascade_frontalface_default.xml")
        self.eye_cascade = _cascade("haarcascade_eye.xml")
        self._fallback_cascades = None  # alt2 and profile, loaded on the first miss
        self.fallback = fallback
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.find_eyes = find_eyes
        self.max_side = max_side
        self.pad = pad
        self._lock = threading.Lock()  # OpenCV's cascades keep state between calls: one image at a time

    def __repr__(self) -> str:
        return "HaarDetector()"

    def __call__(self, image: np.ndarray) -> list[Detection]:
        image, factor = _downscale(as_rgb(image), self.max_side)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        with self._lock:
            found = self._detect(grey, 0)
            if not found and self.pad > 0:  # a face filling the whole image: try again with a border
                found = self._detect(grey, int(self.pad * max(grey.shape)))
            if not found and self.fallback:
                found = self._fallback(grey)
        return [d.scaled(1.0 / factor) for d in found] if factor != 1.0 else found

    def _fallback(self, grey: np.ndarray) -> list[Detection]:
        """Boxes of the ``alt2`` frontal cascade, else of the profile cascade (either way round)."""
        grey = cv2.equalizeHist(grey)
        side = max(12, int(self.min_size * min(grey.shape)))
        if self._fallback_cascades is None:
            self._fallback_cascades = (_cascade("haarcascade_frontalface_alt2.xml"), _cascade("haarcascade_profileface.xml"))
        alt, profile = self._fallback_cascades
        for cascade, mirror in ((alt, False), (profile, False), (profile, True)):
            source = cv2.flip(grey, 1) if mirror else grey
            boxes = np.reshape(cascade.detectMultiScale(source, self.scale_factor, 3, minSize=(side, side)), (-1, 4))
            if len(boxes):
                if mirror:
                    boxes[:, 0] = grey.shape[1] - boxes[:, 0] - boxes[:, 2]
                # scores below the main cascade's: a fallback face never outranks a frontal one
                return [Detection(tuple(float(v) for v in b), 0.0) for b in boxes]
        return self._rotated(grey, side)

    def _rotated(self, grey: np.ndarray, side: int) -> list[Detection]:
        """Faces of the default cascade in copies of the image turned by :attr:`ROTATIONS`."""
        centre = (grey.shape[1] / 2.0, grey.shape[0] / 2.0)
        for angle in self.ROTATIONS:
            matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
            turned = cv2.warpAffine(grey, matrix, grey.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
            boxes = np.reshape(self.face_cascade.detectMultiScale(
                turned, self.scale_factor, self.min_neighbors, minSize=(side, side)), (-1, 4))
            if len(boxes):
                back = cv2.invertAffineTransform(matrix)
                found = []
                for x, y, w, h in boxes.astype(np.float64):
                    cx, cy = back @ np.array([x + w / 2.0, y + h / 2.0, 1.0])
                    # the face is upright in the turned copy: in the image it is turned by -angle
                    found.append(Detection((cx - w / 2.0, cy - h / 2.0, w, h), 0.0, angle=-angle))
                return found
        return []

    def _detect(self, grey: np.ndarray, border: int) -> list[Detection]:
        """Faces (and eyes) in a grey image, after adding a replicated ``border``."""
        if border:
            grey = cv2.copyMakeBorder(grey, border, border, border, border, cv2.BORDER_REPLICATE)
        grey = cv2.equalizeHist(grey)
        side = max(12, int(self.min_size * min(grey.shape)))
        boxes, _, weights = self.face_cascade.detectMultiScale3(
            grey, self.scale_factor, self.min_neighbors, minSize=(side, side), outputRejectLevels=True
        )
        found = []
        for (x, y, w, h), weight in zip(np.reshape(boxes, (-1, 4)), np.ravel(weights)):
            eyes = self._eyes(grey, x, y, w, h) if self.find_eyes else None
            eyes = None if eyes is None else eyes - border
            found.append(Detection((float(x - border), float(y - border), float(w), float(h)), float(weight), None, eyes))
        return found

    def _eyes(self, grey: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray | None:
        """Centres of one eye in each half of the face's upper part, or None."""
        top = grey[y + h // 6:y + h * 11 // 20, x:x + w]
        side = max(5, w // 8)
        eyes = np.reshape(
            self.eye_cascade.detectMultiScale(top, 1.1, 3, minSize=(side, side), maxSize=(w // 2, w // 2)), (-1, 4)
        )
        centres = [(ex + ew / 2.0, ey + eh / 2.0, ew * eh) for ex, ey, ew, eh in eyes]
        left = [c for c in centres if c[0] < w * 0.5]
        right = [c for c in centres if c[0] >= w * 0.5]
        if not left or not right:
            return None
        (lx, ly, _), (rx, ry, _) = max(left, key=lambda c: c[2]), max(right, key=lambda c: c[2])
        if abs(ly - ry) > 0.25 * w or rx - lx < 0.2 * w:  # implausible pair: not two eyes
            return None
        offset = np.array([x, y + h // 6], np.float32)
        return np.array([[lx, ly], [rx, ry]], np.float32) + offset


class YuNetDetector:
    """OpenCV's YuNet face detector (``cv2.FaceDetectorYN``): the shipped model or a user's ``.onnx`` file.

    Each detection carries five landmarks in the template order (image-left eye, image-right eye,
    nose tip, mouth corners).

    Args:
        model_path: a YuNet ``.onnx`` file (OpenCV Zoo's ``face_detection_yunet_*.onnx``);
            ``None``: the model shipped inside kerascnn (its sha256 is checked).
        score_threshold: minimum face confidence.
        nms_threshold: overlap above which the weaker of two boxes is dropped.
        max_side: images with a longer side are shrunk before detection.

    Raises:
        DetectorError: the file is missing or is not a model OpenCV can load (names the file), or
            the shipped model's bytes differ from the released file.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, max_side: int = 1024):
        self.model_path = os.fspath(model_path if model_path is not None else SHIPPED_YUNET)
        if not os.path.isfile(self.model_path):
            raise DetectorError(f"face detector model {self.model_path} does not exist (expected a YuNet .onnx file)")
        if model_path is None:
            _check_shipped_yunet(self.model_path)
        try:
            self._net = cv2.FaceDetectorYN.create(self.model_path, "", (320, 320), score_threshold, nms_threshold)
        except cv2.error as exc:
            raise DetectorError(
                f"cannot load face detector model {self.model_path}: not a YuNet .onnx model OpenCV can read"
            ) from exc
        self.max_side = max_side
        self._lock = threading.Lock()  # the net keeps its input size between calls: one image at a time

    def __repr__(self) -> str:
        return f"YuNetDetector({self.model_path!r})"

    def __call__(self, image: np.ndarray) -> list[Detection]:
        image, factor = _downscale(as_rgb(image), self.max_side)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        with self._lock:
            self._net.setInputSize((image.shape[1], image.shape[0]))
            _, faces = self._net.detect(bgr)
        found = [
            Detection(tuple(float(v) for v in row[:4]), float(row[14]), row[4:14].reshape(5, 2).astype(np.float32))
            for row in (faces if faces is not None else [])
        ]
        return [d.scaled(1.0 / factor) for d in found] if factor != 1.0 else found


def _check_shipped_yunet(path: str) -> None:
    """Refuse a shipped YuNet file whose bytes are not the released model's."""
    import hashlib

    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SHIPPED_YUNET_SHA256:
        raise DetectorError(
            f"the face detector shipped with kerascnn ({path}) is damaged: sha256 {digest[:16]}..., expected "
            f"{SHIPPED_YUNET_SHA256[:16]}...; reinstall kerascnn"
        )


class CallableDetector:
    """Any function ``fn(image) -> boxes`` as a detector.

    ``fn`` gets the RGB ``uint8`` image and returns an iterable of :class:`Detection` objects or
    of ``(x, y, w, h)`` / ``(x, y, w, h, score)`` sequences. Faces it returns are aligned by the
    "box" fallback (no landmarks known).
    """

    def __init__(self, fn: Callable[[np.ndarray], Sequence]):
        self.fn = fn

    def __repr__(self) -> str:
        return f"CallableDetector({getattr(self.fn, '__name__', self.fn)!r})"

    def __call__(self, image: np.ndarray) -> list[Detection]:
        found = []
        for item in self.fn(as_rgb(image)) or ():
            if isinstance(item, Detection):
                found.append(item)
                continue
            values = [float(v) for v in np.ravel(item)]
            if len(values) not in (4, 5) or values[2] <= 0 or values[3] <= 0:
                raise DetectorError(
                    f"detector {self!r} must return (x, y, w, h[, score]) boxes with w, h > 0, got {list(values)}"
                )
            found.append(Detection(tuple(values[:4]), values[4] if len(values) == 5 else 1.0))
        return found


Detector = Callable[[np.ndarray], "list[Detection]"]


def get_detector(spec: str | os.PathLike | Callable | None = None) -> Detector:
    """A detector from a user's choice.

    Args:
        spec: None or ``"yunet"`` (YuNet: the ``.onnx`` file named by ``$KERASCNN_DETECTOR_MODEL``
            when set, else the model shipped inside kerascnn), ``"haar"`` (OpenCV's Haar
            cascades), a path to a YuNet ``.onnx`` file, a detector instance, or any callable
            returning boxes.

    Returns:
        A callable ``detector(image) -> list[Detection]``.

    Raises:
        DetectorError: an unknown name, a missing or unreadable model file.
    """
    if isinstance(spec, (HaarDetector, YuNetDetector, CallableDetector)):
        return spec
    if callable(spec):
        return CallableDetector(spec)
    spec = None if spec is None else os.fspath(spec)
    if spec is None or spec.lower() == "yunet":
        return YuNetDetector(os.environ.get(DETECTOR_MODEL_ENV) or None)
    if spec.lower() == "haar":
        return HaarDetector()
    if Path(spec).suffix.lower() == ".onnx":
        return YuNetDetector(spec)
    raise DetectorError(f"unknown face detector {spec!r}: expected 'haar', 'yunet', a YuNet .onnx path or a callable")


def select_faces(
    detections: Sequence[Detection],
    image_shape: Sequence[int],
    select: str = "largest",
    source: str = "the image",
    single: bool = False,
) -> list[Detection]:
    """Keep the face(s) wanted among the detections of one image.

    Args:
        detections: what a detector returned for the image.
        image_shape: the image's ``(height, width, ...)``.
        select: ``"largest"`` (biggest box), ``"central"`` (box centre nearest the image centre)
            or ``"all"`` (every face, largest first).
        source: the image's name for error messages (its path).
        single: require exactly one face (raise on several instead of choosing).

    Returns:
        One detection, or every detection for ``"all"``.

    Raises:
        NoFaceError: no face (names ``source``).
        MultipleFacesError: several faces with ``single=True``.
        ValueError: an unknown ``select``.
    """
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    if not detections:
        raise NoFaceError(f"no face found in {source}")
    if single and len(detections) > 1:
        raise MultipleFacesError(f"{len(detections)} faces found in {source}, expected exactly one")
    by_size = sorted(detections, key=lambda d: -d.area)
    if select == "all":
        return by_size
    if select == "largest":
        return by_size[:1]
    cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0
    return [min(by_size, key=lambda d: (d.center[0] - cx) ** 2 + (d.center[1] - cy) ** 2)]


def box_landmarks(box: Sequence[float], angle: float = 0.0) -> np.ndarray:
    """The 5 template landmarks placed at their mean positions in a face box (see :data:`BOX_LANDMARKS`),
    the box turned by ``angle`` degrees about its centre (as ``cv2.getRotationMatrix2D`` turns)."""
    x, y, w, h = (float(v) for v in box)
    points = BOX_LANDMARKS * np.array([w, h], np.float32) + np.array([x, y], np.float32)
    if angle:
        matrix = cv2.getRotationMatrix2D((x + w / 2.0, y + h / 2.0), angle, 1.0)
        points = (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
    return points


def align_detection(image: np.ndarray, detection: Detection, size: int = 112,
                    template: AlignmentTemplate | None = None) -> tuple[np.ndarray, str]:
    """Warp one detected face onto the canonical ``size`` x ``size`` crop.

    Uses the five landmarks when known, else the two eye centres, else the box with the mean
    landmark positions of :data:`BOX_LANDMARKS`.

    Args:
        image: the RGB ``uint8`` image the detection was made on.
        detection: the face.
        size: side of the crop.
        template: where each kind of point goes in the crop (the face model's; default
            :data:`kerascnn.face.align.DEFAULT_TEMPLATE`).

    Returns:
        ``(crop, kind)``: the ``(size, size, 3)`` crop and ``"landmarks"``, ``"eyes"`` or ``"box"``.
    """
    image = as_rgb(image)
    template = template or DEFAULT_TEMPLATE
    if detection.landmarks is not None:
        kind, points = "landmarks", detection.landmarks
    elif detection.eyes is not None:
        kind, points = "eyes", detection.eyes
    else:
        kind, points = "box", box_landmarks(detection.box, detection.angle)
    return align_face(image, points, size, template.points(kind, size)), kind
