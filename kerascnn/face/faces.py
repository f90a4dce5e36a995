"""The short way in: compare two photos, or keep a gallery of people and ask who is in a photo.

:func:`compare` answers "same person?" for two photos; :func:`open` gives a :class:`Faces`, a
gallery of enrolled people together with the face pipeline that fills and searches it. Both
take their thresholds from the calibration in use for the model and detector (the user's
calibration file, else the model card: :mod:`kerascnn.face.calibrations`) and say where each
threshold came from; 1:N decisions use the open-set operating point for the gallery's size.

Example:
    >>> from kerascnn import face
    >>> face.compare("a.jpg", "b.jpg").match                          # doctest: +SKIP
    >>> faces = face.open("faces.db")                                 # doctest: +SKIP
    >>> faces.enroll("alice", ["alice1.jpg", "alice2.jpg"])           # doctest: +SKIP
    >>> faces.identify("probe.jpg").name                              # doctest: +SKIP

The lower layers stay public: :class:`~kerascnn.face.pipeline.FacePipeline` (images to
embeddings), :class:`~kerascnn.face.gallery.Gallery` (names and templates) and
:mod:`kerascnn.face.decision` (1:1 and 1:N decisions on embeddings).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kerascnn.errors import EmptyGalleryError, GalleryInputError, ImageReadError, UnknownIdentityError
from kerascnn.face.decision import Comparison, Identification, Verification, identify, is_match, pair_scores, verify
from kerascnn.face.gallery import EnrollReport, Gallery, IdentityInfo, open_gallery, pipeline_identity, sha256_file
from kerascnn.progress import progress_counter

Photo = Any  # a path (str or os.PathLike), an RGB / grey uint8 array, or an image file's bytes
# (The model, its calibrations and TensorFlow load on first use: a gallery-only user never pays for them.)


@functools.lru_cache(maxsize=4)
def _shared_pipeline(model: str | None, detector: str | None, select: str, stamps: tuple):
    from kerascnn.face.pipeline import FacePipeline

    return FacePipeline(detector=detector, model=model, select=select)


def _stamp(spec: str | None) -> int | None:
    """A file's modification time (a rewritten model or detector file is loaded again), else None."""
    try:
        return os.stat(spec).st_mtime_ns if spec is not None else None
    except OSError:
        return None


def _pipeline(pipeline, model, detector, select: str):
    """The given pipeline, else one built from names (shared between calls: the model loads once)."""
    if pipeline is not None:
        return pipeline
    names = all(v is None or isinstance(v, (str, os.PathLike)) for v in (model, detector))
    if names:
        model, detector = (None if v is None else os.fspath(v) for v in (model, detector))
        return _shared_pipeline(model, detector, select, (_stamp(model), _stamp(detector)))
    from kerascnn.face.pipeline import FacePipeline

    return FacePipeline(detector=detector, model=model, select=select)


def compare(a: Photo, b: Photo, *, threshold: float | None = None, model: Any = None, detector: Any = None,
            select: str = "largest", pipeline: Any = None,
            calibration_file: str | os.PathLike | None = None) -> Comparison:
    """Are the faces in two photos the same person? (1:1, no gallery)

    Args:
        a: a photo: an image path, an RGB (or grey) ``uint8`` array, or an image file's bytes.
        b: the other photo.
        threshold: decide at this threshold instead of the calibrated one.
        model: the face model (a shipped name such as ``"dlib"`` or ``"small"``, a ``.keras``
            path or a Keras model); default the default face model.
        detector: ``"yunet"`` (default, shipped), ``"haar"``, a YuNet ``.onnx`` path or a callable.
        select: which face of a photo with several: ``"largest"`` or ``"central"``.
        pipeline: a ready :class:`~kerascnn.face.pipeline.FacePipeline` (then ``model``,
            ``detector`` and ``select`` are its own).
        calibration_file: take the threshold from this calibration file (``calibrate --out``).

    Returns:
        A :class:`~kerascnn.face.decision.Comparison`: ``match``, ``score``, ``threshold``,
        ``metric``, ``threshold_source`` and the face used in each photo.

    Raises:
        NoFaceError, ImageReadError, ImageTooLargeError: a photo without a usable face.
        FaceModelError: no calibration for this model and detector and no ``threshold``.
    """
    from kerascnn.face.calibrations import verification_threshold

    pipeline = _pipeline(pipeline, model, detector, select)
    decision = verification_threshold(pipeline, threshold, None, calibration_file)
    batch = pipeline.embed_images([a, b], progress=False, strict=True)
    score = float(pair_scores(batch.embeddings[:1], batch.embeddings[1:], decision.metric)[0])
    return Comparison(bool(is_match(score, decision.threshold, decision.metric)), score, decision.threshold,
                      decision.metric, decision.source.to_dict(), tuple(batch.results))


def open(location: str | os.PathLike | Gallery, **kwargs: Any) -> "Faces":  # noqa: A001 - the API's verb
    """Open (or create) a gallery of people: ``kerascnn.face.open("faces.db")``.

    Args:
        location: a SQLite file path, a ``postgresql://`` URL or libpq ``key=value`` string, or an
            open :class:`~kerascnn.face.gallery.Gallery`.
        kwargs: the keyword arguments of :class:`Faces`.

    Returns:
        A :class:`Faces` (close it, or use it in a ``with`` block).
    """
    return Faces(location, **kwargs)


class Faces:
    """A gallery of enrolled people with the face pipeline that fills and searches it.

    Safe to share between threads (a web server's workers may call one instance at once): the
    gallery is used under a lock, and the model runs outside it.

    Args:
        location: a SQLite file path, a ``postgresql://`` URL or libpq ``key=value`` string, or an
            open :class:`~kerascnn.face.gallery.Gallery` (closed with this object).
        model: the face model (name, ``.keras`` path or Keras model); default the default model.
        detector: ``"yunet"`` (default, shipped), ``"haar"``, a YuNet ``.onnx`` path or a callable.
        select: which face of a photo with several: ``"largest"`` or ``"central"``.
        pipeline: a ready :class:`~kerascnn.face.pipeline.FacePipeline` instead of the three above.
        create: create the gallery if it does not exist.
        read_only: open it for searching only.
        timeout: seconds a writer waits for another process's lock.
        calibration_file: take thresholds from this calibration file (``calibrate --out``).

    Raises:
        GalleryNotFoundError, GalleryModelMismatchError, GalleryCorruptError: as
        :class:`~kerascnn.face.gallery.Gallery` does.
    """

    def __init__(self, location: str | os.PathLike | Gallery, *, model: Any = None, detector: Any = None,
                 select: str = "largest", pipeline: Any = None, create: bool = True, read_only: bool = False,
                 timeout: float = 30.0, calibration_file: str | os.PathLike | None = None):
        self.pipeline = _pipeline(pipeline, model, detector, select)
        self.calibration_file = calibration_file
        identity = pipeline_identity(self.pipeline)
        if isinstance(location, Gallery):
            self.gallery = location
            self.gallery.check_model(identity)
        elif read_only:
            self.gallery = Gallery(location, identity, create=False, read_only=True, timeout=timeout)
        else:
            self.gallery = open_gallery(location, identity, create=create, timeout=timeout)
        self._lock = threading.RLock()

    # -- the gallery's people --------------------------------------------------------------------
    def people(self) -> list[str]:
        """The names of the enrolled people, sorted."""
        return [info.name for info in self.identities()]

    def identities(self) -> list[IdentityInfo]:
        """Each enrolled person's name, number of templates and enrollment time."""
        with self._lock:
            return self.gallery.identities()

    def __len__(self) -> int:
        """The number of enrolled people (one count query)."""
        with self._lock:
            return self.gallery.identity_count()

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self.gallery

    def remove(self, name: str) -> int:
        """Forget a person: every template of theirs goes, in one transaction.

        Returns:
            The number of templates removed.

        Raises:
            UnknownIdentityError: ``name`` is not enrolled.
        """
        with self._lock:
            return self.gallery.remove(name)

    def rename(self, old: str, new: str, allow_confusable: bool = False) -> None:
        """Rename a person (see :meth:`kerascnn.face.gallery.Gallery.rename`)."""
        with self._lock:
            self.gallery.rename(old, new, allow_confusable=allow_confusable)

    # -- enrollment --------------------------------------------------------------------------------
    def enroll(self, name: str, photos: Sequence[str | os.PathLike | bytes] | str | os.PathLike, *,
               strict: bool = True, progress: bool = False, allow_confusable: bool = False) -> EnrollReport:
        """Enroll photos of one person (one transaction); photos already enrolled are skipped.

        Args:
            name: the person's name.
            photos: image files of that person (one path is taken as a list of one), or their
                bytes (an upload, decoded in memory: never written to disk).
            strict: raise the error of the first photo that gives no face, enrolling nothing;
                else such photos are reported in ``failures`` and the others enrolled.
            progress: show a progress bar.
            allow_confusable: enroll a new name even if it looks like an enrolled one.

        Returns:
            An :class:`~kerascnn.face.gallery.EnrollReport`.

        Raises:
            GalleryInputError: no photo, a bad name; ConfusableNameError: a look-alike name
                (checked before any photo is embedded).
            NoFaceError, ImageReadError: with ``strict``, the first photo without a usable face.
        """
        if isinstance(photos, (str, os.PathLike)):
            photos = [photos]
        paths = [p if isinstance(p, bytes) else os.fspath(p) for p in photos]
        with self._lock:
            name = self.gallery.check_new_name(name, allow_confusable)
        if not paths:
            raise GalleryInputError(f"enroll({name!r}) got no photo: give at least one image file")
        report = EnrollReport()
        digests: list[str | None] = []
        for path in paths:
            try:
                digest = hashlib.sha256(path).hexdigest() if isinstance(path, bytes) else sha256_file(path)
                digests.append(f"sha256:{digest}")
            except OSError as exc:  # unreadable: the image reader says why (strict), or it is skipped
                message = f"cannot read image file {path}: {exc.strerror or exc}"
                if strict:
                    raise ImageReadError(message) from exc
                digests.append(None)
                report.failures.append((path, message))
        with self._lock:
            known = self.gallery.enrolled_sources(name)
        todo = [i for i, d in enumerate(digests) if d is not None and d[7:] not in known]
        report.skipped = sum(d is not None for d in digests) - len(todo)
        embeddings, errors = _first_faces(self.pipeline, [paths[i] for i in todo], progress, strict)
        report.failures += [(_source(paths[i], i), error) for i, error in zip(todo, errors) if error is not None]
        ok = [j for j, error in enumerate(errors) if error is None]
        if ok:
            with self._lock:
                report.enrolled[name] = self.gallery.enroll(name, embeddings[ok], [digests[todo[j]] for j in ok],
                                                            allow_confusable=allow_confusable)
        return report

    def enroll_folder(self, folder: str | os.PathLike, *, progress: bool = True,
                      allow_confusable: bool = False) -> EnrollReport:
        """Enroll every person of a ``person/image`` folder, one transaction per person.

        A process killed mid-way keeps every person committed before; running it again skips the
        photos already enrolled and completes the rest. Photos without a usable face or that
        cannot be read, and sub-folders whose name cannot be a name or looks like an enrolled
        one, are reported in ``failures`` and skipped.

        Args:
            folder: one sub-folder per person, holding that person's photos.
            progress: show a progress bar over the photos.
            allow_confusable: enroll new names even if they look like enrolled ones.

        Returns:
            An :class:`~kerascnn.face.gallery.EnrollReport` over all people.

        Raises:
            DatasetError: the folder is missing or has no person sub-folder with images.
        """
        from kerascnn.data.folders import scan_folder

        dataset = scan_folder(folder, skip_empty_classes=True)
        report = EnrollReport()
        bar = progress_counter(len(dataset), "enroll", progress)
        for label, name in enumerate(dataset.class_names):
            paths = [p for p, y in zip(dataset.paths, dataset.labels) if y == label]
            try:
                part = self.enroll(name, paths, strict=False, allow_confusable=allow_confusable)
            except GalleryInputError as exc:  # a folder name that cannot be a name, or looks like one
                report.failures.append((str(Path(folder) / name), f"not enrolled: {exc}"))
            else:
                report.enrolled.update(part.enrolled)
                report.skipped += part.skipped
                report.failures.extend(part.failures)
            bar.update(len(paths))
        bar.close()
        return report

    # -- decisions ---------------------------------------------------------------------------------
    def verify(self, name: str, photo: Photo, *, threshold: float | None = None, metric: str | None = None,
               reduce: str = "best") -> Verification:
        """Is the face in ``photo`` the enrolled ``name``? (1:1)

        Args:
            name: the claimed person.
            photo: an image path, array or file's bytes (its largest face, or as ``select`` says).
            threshold: decide at this threshold instead of the calibrated one.
            metric: the metric of ``threshold`` (default ``"cosine"``); without ``threshold`` it
                must be the calibration's.
            reduce: ``"best"`` (closest template) or ``"mean"`` (the mean template).

        Returns:
            A :class:`~kerascnn.face.decision.Verification` with its ``threshold_source``,
            ``decision_threshold`` and ``face``.

        Raises:
            UnknownIdentityError: ``name`` is not enrolled.
            NoFaceError, ImageReadError: no usable face in ``photo``.
            FaceModelError: no calibration and no ``threshold``, or a ``metric`` the calibration's differs from.
        """
        from kerascnn.face.calibrations import verification_threshold

        decision = verification_threshold(self.pipeline, threshold, metric, self.calibration_file)
        with self._lock:
            if name not in self.gallery:
                raise UnknownIdentityError(f"{name!r} is not enrolled in gallery {self.gallery.location}")
        probe, face = self.pipeline.embed_one(photo)
        with self._lock:
            result = verify(self.gallery, name, probe, decision.threshold, decision.metric, reduce=reduce)
        result.threshold_source, result.face, result.decision_threshold = decision.source.to_dict(), face, decision
        return result

    def identify(self, photo: Photo, *, top_k: int = 5, fpir: float | None = None, threshold: float | None = None,
                 metric: str | None = None) -> Identification:
        """Who, among the enrolled, is the face in ``photo``, if anyone? (1:N, open set)

        The threshold is the open-set operating point for the gallery's size at ``fpir`` (the
        rate at which strangers are taken for someone), from the calibration in use.

        Args:
            photo: an image path, array or file's bytes.
            top_k: how many candidates to report.
            fpir: the false positive identification rate to decide at (default the calibration's
                default, :data:`kerascnn.face.decision.DEFAULT_FPIR`).
            threshold: decide at this threshold instead.
            metric: the metric of ``threshold`` (default ``"cosine"``); without ``threshold`` it
                must be the calibration's.

        Returns:
            An :class:`~kerascnn.face.decision.Identification`: ``name`` (None for a stranger),
            ``score``, ``candidates``, ``operating_point``, ``threshold_source``,
            ``decision_threshold`` and ``face``.

        Raises:
            EmptyGalleryError: nobody is enrolled (said before ``photo`` is read).
            NoFaceError, ImageReadError: no usable face in ``photo``.
            FaceModelError: no calibration and no ``threshold``, or a ``metric`` the calibration's differs from.
        """
        from kerascnn.face.calibrations import identification_threshold

        with self._lock:
            size = self.gallery.identity_count()
        if size == 0:
            raise EmptyGalleryError(f"gallery {self.gallery.location} is empty: enroll someone before identifying")
        decision = identification_threshold(self.pipeline, size, fpir, threshold, metric, self.calibration_file)
        probe, face = self.pipeline.embed_one(photo)
        with self._lock:
            result = identify(self.gallery, probe, decision.threshold, decision.metric, top_k=top_k)
        result.threshold_source, result.face, result.decision_threshold = decision.source.to_dict(), face, decision
        result.operating_point = decision.operating_point
        return result

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the gallery."""
        with self._lock:
            self.gallery.close()

    def __enter__(self) -> "Faces":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Faces({self.gallery.location!r}, model={self.pipeline.model.name!r})"


def _source(photo: str | bytes, index: int) -> str:
    """How reports name a photo: its path, or ``bytes[i]`` for the bytes of the ``index``-th."""
    return f"bytes[{index}]" if isinstance(photo, bytes) else photo


def _first_faces(pipeline, paths: list[str | bytes], progress: bool,
                 strict: bool) -> tuple[np.ndarray, list[str | None]]:
    """Per photo: the selected face's embedding row, and None or the error message of a photo without one."""
    if not paths:
        return np.zeros((0, 0), np.float32), []
    batch = pipeline.embed_images(paths, progress=progress, strict=strict)
    rows: dict[int, int] = {}
    errors: dict[int, str] = {}
    for row, result in enumerate(batch.results):
        if result.ok:
            rows.setdefault(result.index, row)
        else:
            errors.setdefault(result.index, str(result.error))
    embeddings = np.asarray(batch.embeddings, np.float32)
    picked = np.stack([embeddings[rows[i]] if i in rows else np.full(embeddings.shape[1], np.nan, np.float32)
                       for i in range(len(paths))])
    return picked, [None if i in rows else errors.get(i, "no embedding") for i in range(len(paths))]
