"""The calibrations a command uses: the user's, kept outside the package, else the model card's.

A model's card (the JSON beside its ``.keras`` file; for the shipped models, inside the installed
package) holds the calibration the model came with, and is never written at run time.
``kerascnn calibrate`` stores what it measures in a *calibration file* instead: the user's,
``$KERASCNN_HOME/calibrations/<model name>-<first 16 hex digits of its weights' sha256>.json``
(``$KERASCNN_HOME`` defaults to ``~/.kerascnn``), or the file given with ``--out``, which
``--calibration FILE`` then reads. A calibration file holds one model's calibrations::

    {"format": 1,
     "model_identity": {...},                  # kerascnn.face.gallery.model_identity of the model
     "calibrations": [                         # in the order they were stored, the latest last
       {"kind": "1:1",                         # or "open-set"
        "detector": "yunet",                   # the detector it was measured with (detector_name)
        "dataset": "/data/lfw/pairs.txt",      # what it was measured on
        "counts": {"pairs": 4200},             # how much: data_counts
        "date": "2026-05-01T12:00:00+00:00", "kerascnn": "0.1.0",
        "calibration": {...}}]}                # the card format of kerascnn.face.model

There is one entry per kind, detector and data set. For a kind and the detector in use,
:func:`find_calibration` picks the latest entry of the user's file, else the card's calibration.
:func:`store_calibration` refuses (:class:`~kerascnn.errors.CalibrationDowngradeError`) a
calibration measured on less data than the one it would replace, unless forced.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kerascnn.errors import CalibrationDowngradeError, FaceModelError
from kerascnn.face.model import card_path, check_calibration, inference_card, kerascnn_home

KINDS = ("1:1", "open-set")
CARD_KEYS = {"1:1": "calibration", "open-set": "open_set_calibration"}
FORMAT = 1


def user_calibration_file(identity: dict) -> Path:
    """The user's calibration file of a model.

    Args:
        identity: the model's :func:`kerascnn.face.gallery.model_identity`.

    Returns:
        ``kerascnn_home()/calibrations/<name>-<weights sha256[:16]>.json`` (not checked for existence).
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(identity.get("name") or "model"))
    return kerascnn_home() / "calibrations" / f"{name}-{identity['weights_sha256'][:16]}.json"


def detector_name(detector) -> str:
    """The name a calibration records for a detector: ``"haar"``, ``"yunet"``, else its repr."""
    from kerascnn.face.detect import HaarDetector, YuNetDetector

    if isinstance(detector, HaarDetector):
        return "haar"
    if isinstance(detector, YuNetDetector):
        return "yunet"
    return repr(detector)


def data_counts(kind: str, calibration: dict) -> dict[str, int]:
    """How much data a calibration was measured on.

    Args:
        kind: ``"1:1"`` or ``"open-set"``.
        calibration: the calibration dict.

    Returns:
        1:1: ``{"pairs"}`` (genuine + impostor pairs scored); open-set: ``{"people", "searches"}``
        (mated and non-mated searches, summed over the gallery sizes); only the counts the
        calibration records (a hand-written card may record none).
    """
    if kind == "1:1":
        if "num_genuine" in calibration and "num_impostor" in calibration:
            return {"pairs": int(calibration["num_genuine"]) + int(calibration["num_impostor"])}
        return {}
    counts = {"people": int(calibration["people"])} if "people" in calibration else {}
    per_size = {p["gallery_size"]: int(p["mated_searches"]) + int(p["non_mated_searches"])
                for p in calibration.get("operating_points", []) if "mated_searches" in p and "non_mated_searches" in p}
    if per_size:
        counts["searches"] = sum(per_size.values())
    return counts


@dataclass
class CalibrationChoice:
    """A calibration a command uses, and where it comes from.

    Attributes:
        kind: ``"1:1"`` or ``"open-set"``.
        values: the calibration dict (the card format of :mod:`kerascnn.face.model`).
        origin: ``"user"`` (the user's calibration file), ``"file"`` (a file given with
            ``--calibration`` or ``--out``), ``"card"`` (the model card) or ``"--threshold"``.
        path: the file it was read from (None for ``--threshold``).
        detector: the detector it was measured with (None: not recorded).
        dataset: the data it was measured on (None: not recorded).
        date: when it was stored (None: not recorded).
        version: the kerascnn version that stored it (None: not recorded).
    """

    kind: str
    values: dict
    origin: str
    path: Path | None = None
    detector: str | None = None
    dataset: str | None = None
    date: str | None = None
    version: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        """How much data it was measured on (:func:`data_counts`)."""
        return data_counts(self.kind, self.values)

    def describe(self) -> str:
        """Where it comes from and how it was measured, in words."""
        if self.origin == "--threshold":
            return "--threshold"
        what = {"user": "the user calibration", "file": "the calibration file", "card": "the model card"}[self.origin]
        counts = ", ".join(f"{v:,} {k}" for k, v in self.counts.items()) or "data size not recorded"
        facts = [self.kind, f"detector {self.detector or 'not recorded'}", self.dataset, counts,
                 self.date and f"stored {self.date}", self.version and f"kerascnn {self.version}"]
        return f"{what} {self.path} ({'; '.join(f for f in facts if f)})"

    def to_dict(self) -> dict:
        """The JSON form of :meth:`describe` (the commands' ``threshold_source``)."""
        return {"origin": self.origin, "path": None if self.path is None else str(self.path), "kind": self.kind,
                "detector": self.detector, "dataset": self.dataset, "counts": self.counts, "date": self.date,
                "kerascnn": self.version}


def _read(path: Path) -> dict | None:
    """A calibration file's content, or None when there is no such file.

    Raises:
        FaceModelError: a file that is not a kerascnn calibration file.
    """
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FaceModelError(f"cannot read calibration file {path}: {exc}") from exc
    if (not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("model_identity"), dict)
            or not isinstance(data.get("calibrations"), list)):
        raise FaceModelError(f"{path} is not a kerascnn calibration file (expected a JSON object with format {FORMAT}, "
                             "model_identity and calibrations)")
    return data


def _check_identity(data: dict, identity: dict, path: Path) -> None:
    stored = data["model_identity"]
    if stored.get("weights_sha256") != identity.get("weights_sha256"):
        raise FaceModelError(
            f"calibration file {path} belongs to model {stored.get('name')!r} (weights sha256 "
            f"{str(stored.get('weights_sha256'))[:12]}...), not to the model in use {identity.get('name')!r} "
            f"({str(identity.get('weights_sha256'))[:12]}...)")


def _key(entry) -> tuple | None:
    """An entry's ``(kind, detector, dataset)``."""
    return (entry.get("kind"), entry.get("detector"), entry.get("dataset")) if isinstance(entry, dict) else None


def _latest(data: dict, kind: str, detector: str, origin: str, path: Path) -> CalibrationChoice | None:
    """The latest entry of a calibration file for ``kind`` and ``detector``, or None."""
    for entry in reversed(data["calibrations"]):
        if (_key(entry) or ())[:2] == (kind, detector):
            return CalibrationChoice(kind, check_calibration(entry.get("calibration"), str(path), kind), origin, path,
                                     detector, entry.get("dataset"), entry.get("date"), entry.get("kerascnn"))
    return None


def find_calibration(kind: str, identity: dict, detector: str, model_path: str | os.PathLike | None = None,
                     file: str | os.PathLike | None = None, card: bool = True) -> CalibrationChoice | None:
    """The calibration to use for a kind of decision with a detector.

    Args:
        kind: ``"1:1"`` or ``"open-set"``.
        identity: the model's :func:`kerascnn.face.gallery.model_identity`.
        detector: the detector in use (:func:`detector_name`).
        model_path: the model's name or ``.keras`` path (its card; ``None``: the default model).
        file: read only this calibration file (``--calibration``) instead of the user's and the card.
        card: fall back on the model card (False for a model given as an object, which has none).

    Returns:
        With ``file``: its latest entry for ``kind`` and ``detector``. Else the latest such entry
        of the user's calibration file, else the model card's calibration. None when there is none.

    Raises:
        FaceModelError: ``file`` missing, a file that is not a calibration file or belongs to
            another model, a malformed calibration or card.
    """
    if file is not None:
        path = Path(file)
        data = _read(path)
        if data is None:
            raise FaceModelError(f"calibration file {path} does not exist")
        _check_identity(data, identity, path)
        return _latest(data, kind, detector, "file", path)
    path = user_calibration_file(identity)
    data = _read(path)
    if data is not None:
        _check_identity(data, identity, path)
        chosen = _latest(data, kind, detector, "user", path)
        if chosen is not None:
            return chosen
    values = inference_card(model_path) if card else {}
    if CARD_KEYS[kind] not in values:
        return None
    where = card_path(model_path)
    checked = check_calibration(values[CARD_KEYS[kind]], str(where), kind)
    return CalibrationChoice(kind, checked, "card", where, detector=checked.get("detector"))


def store_calibration(kind: str, calibration: dict, identity: dict, detector: str, dataset: str, *,
                      model_path: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                      force: bool = False) -> tuple[Path, CalibrationChoice | None]:
    """Store a calibration in the user's calibration file (or ``out``), never in a model card.

    It replaces the entry of the same kind, detector and data set, and becomes the one in use
    for that kind and detector.

    Args:
        kind: ``"1:1"`` or ``"open-set"``.
        calibration: what :func:`kerascnn.face.decision.calibrate` or ``calibrate_open_set`` returned.
        identity: the model's :func:`kerascnn.face.gallery.model_identity`.
        detector: the detector it was measured with (:func:`detector_name`).
        dataset: what it was measured on (a path, with the subset used).
        model_path: the model's name or ``.keras`` path (whose card calibration is in use so far).
        out: write this calibration file instead of the user's.
        force: store it even when it was measured on less data than the one it replaces.

    Returns:
        ``(the file written, the calibration it replaces as the one in use, or None)``.

    Raises:
        CalibrationDowngradeError: fewer pairs, people or searches than the calibration in use
            for this kind and detector, or than the entry of the same data set (without
            ``force``); the file is left as it was.
        FaceModelError: a malformed calibration; an existing file that is not a calibration file
            or belongs to another model.
    """
    from kerascnn import __version__

    path = Path(out) if out is not None else user_calibration_file(identity)
    check_calibration(calibration, str(path), kind)
    data = _read(path) or {"format": FORMAT, "model_identity": identity, "calibrations": []}
    _check_identity(data, identity, path)
    origin = "user" if out is None else "file"
    replaced = (find_calibration(kind, identity, detector, model_path) if out is None
                else _latest(data, kind, detector, origin, path))
    same = next((e for e in data["calibrations"] if _key(e) == (kind, detector, dataset)), None)
    if same is not None:  # the entry of the same data set, when it is not the one in use
        same = CalibrationChoice(kind, check_calibration(same.get("calibration"), str(path), kind), origin, path,
                                 detector, dataset, same.get("date"), same.get("kerascnn"))
    counts = data_counts(kind, calibration)
    for old in filter(None, (replaced, same)):
        fewer = [k for k, v in old.counts.items() if k in counts and counts[k] < v]
        if fewer and not force:
            now = ", ".join(f"{counts[k]:,} {k}" for k in old.counts if k in counts)
            raise CalibrationDowngradeError(
                f"this {kind} calibration ({dataset}: {now}) was measured on fewer {' and '.join(fewer)} than "
                f"{old.describe()} it would replace: not stored; pass --force to store it anyway, or --out "
                f"FILE to keep it apart")
    entry = {"kind": kind, "detector": detector, "dataset": dataset, "counts": counts,
             "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "kerascnn": __version__,
             "calibration": dict(calibration)}
    data["calibrations"] = [e for e in data["calibrations"] if _key(e) != (kind, detector, dataset)] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path, replaced


# --- the threshold of a decision: policy shared by the Python API, the CLI and the service -------
@dataclass
class DecisionThreshold:
    """The threshold a decision uses, and why.

    Attributes:
        threshold: the value (a similarity for ``cosine``, a distance for ``euclidean``).
        metric: ``"cosine"`` or ``"euclidean"``.
        source: the calibration it comes from (``origin == "--threshold"`` when given by hand).
        description: one line saying where it comes from.
        operating_point: for a 1:N decision, the JSON form of the operating point (gallery size,
            FPIR, expected DIR) or of the fallback used; None for 1:1.
    """

    threshold: float
    metric: str
    source: CalibrationChoice
    description: str
    operating_point: dict | None = None


def _pipeline_calibration(pipeline, kind: str, file) -> CalibrationChoice | None:
    from kerascnn.face.gallery.records import model_identity

    return find_calibration(kind, model_identity(pipeline.model), detector_name(pipeline.detector),
                            pipeline.model_spec, file, card=getattr(pipeline, "has_card", False))


def _searched(file) -> str:
    return f"none in {file}" if file else "none in the user's calibrations nor in the model card"


def threshold_text(value: float) -> str:
    """A threshold as printed: 4 decimals, or 4 significant digits for a huge one (not 300 digits)."""
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"


def _given(kind: str, threshold: float, metric: str | None) -> CalibrationChoice:
    import math

    if not math.isfinite(threshold):
        raise FaceModelError(f"a decision threshold must be a finite number, got {threshold}")
    return CalibrationChoice(kind, {"threshold": float(threshold), "metric": metric or "cosine"}, "--threshold")


def verification_threshold(pipeline, threshold: float | None = None, metric: str | None = None,
                           calibration_file: str | os.PathLike | None = None) -> DecisionThreshold:
    """The 1:1 threshold for a face pipeline: the one given, else the calibration in use.

    Args:
        pipeline: the :class:`~kerascnn.face.pipeline.FacePipeline` whose model and detector
            made (and will make) the templates.
        threshold: a threshold given by hand (``--threshold``); overrides every calibration.
        metric: its metric (default ``"cosine"``); with a calibration, it must be the calibration's.
        calibration_file: read only this calibration file (``--calibration``).

    Returns:
        A :class:`DecisionThreshold`.

    Raises:
        FaceModelError: no 1:1 calibration for this model and detector, a metric that differs from
            the calibration's, a non-finite threshold.
    """
    if threshold is not None:
        chosen = _given("1:1", threshold, metric)
        return DecisionThreshold(chosen.values["threshold"], chosen.values["metric"], chosen, "--threshold")
    chosen = _pipeline_calibration(pipeline, "1:1", calibration_file)
    if chosen is None:
        raise FaceModelError(f"no 1:1 calibration of this model for detector {detector_name(pipeline.detector)} "
                             f"({_searched(calibration_file)}); pass --threshold or run 'kerascnn calibrate' first")
    found = chosen.values["metric"]
    if metric and metric != found:
        raise FaceModelError(f"--metric {metric} differs from the calibration's {found}: pass --threshold too")
    return DecisionThreshold(float(chosen.values["threshold"]), found, chosen, f"from {chosen.describe()}")


def identification_threshold(pipeline, gallery_size: int, fpir: float | None = None, threshold: float | None = None,
                             metric: str | None = None,
                             calibration_file: str | os.PathLike | None = None) -> DecisionThreshold:
    """The 1:N threshold for a gallery of ``gallery_size`` people (open-set identification).

    The threshold given by hand, else the open-set calibration's operating point for this gallery
    size and false positive identification rate, else (no open-set calibration) the 1:1
    threshold, whose false positives grow with the gallery's size (said in the description).

    Args:
        pipeline: the face pipeline in use.
        gallery_size: how many people are enrolled.
        fpir: the target FPIR (default :data:`kerascnn.face.decision.DEFAULT_FPIR`).
        threshold: a threshold given by hand; overrides every calibration.
        metric: its metric (default ``"cosine"``); with a calibration, it must be the calibration's.
        calibration_file: read only this calibration file.

    Returns:
        A :class:`DecisionThreshold` with its ``operating_point``.

    Raises:
        FaceModelError: ``fpir`` without an open-set calibration, no calibration at all, a metric
            that differs from the calibration's.
    """
    from kerascnn.face.decision import DEFAULT_FPIR, open_set_threshold

    if threshold is not None:
        given = verification_threshold(pipeline, threshold, metric)
        return DecisionThreshold(given.threshold, given.metric, given.source,
                                 f"1:N threshold: {given.metric} {threshold_text(given.threshold)} (--threshold)",
                                 {"threshold": given.threshold, "metric": given.metric, "how": "--threshold"})
    chosen = _pipeline_calibration(pipeline, "open-set", calibration_file)
    if chosen is None:
        if fpir is not None:
            raise FaceModelError(f"--fpir needs a 1:N calibration, and there is none ({_searched(calibration_file)}): "
                                 "run 'kerascnn calibrate --open-set --folder DIR' first, or pass --threshold")
        one = verification_threshold(pipeline, None, metric, calibration_file)
        how = (f"no 1:N calibration ({_searched(calibration_file)}): using the 1:1 threshold, whose false positives "
               "grow with the gallery's size (run 'kerascnn calibrate --open-set')")
        return DecisionThreshold(one.threshold, one.metric, one.source,
                                 f"1:N threshold: {one.metric} {threshold_text(one.threshold)} ({how})",
                                 {"threshold": one.threshold, "metric": one.metric, "how": how})
    point = open_set_threshold(chosen.values, gallery_size, DEFAULT_FPIR if fpir is None else fpir)
    if metric and metric != point.metric:
        raise FaceModelError(f"--metric {metric} differs from the 1:N calibration's {point.metric}: pass --threshold too")
    return DecisionThreshold(point.threshold, point.metric, chosen, point.describe(), point.to_dict())
