"""The face demo: enroll a few ORL people, then verify and identify held-back photos.

Photos of enrolled people and of people never enrolled (strangers) are decided at the
calibrated thresholds (1:1, and 1:N for the gallery's size), as ``kerascnn demo`` shows: the
thresholds come from calibration on development data, never from these photos.

Example:
    >>> report = run_demo("../shared/data", people=8, strangers=4)       # doctest: +SKIP
    >>> report.correct, len(report.rows)                                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kerascnn.errors import DatasetError, GalleryInputError


@dataclass
class DemoReport:
    """What the demo enrolled and decided.

    Attributes:
        orl: the ORL folder the photos come from.
        enrolled: the names enrolled.
        templates: how many templates the gallery held.
        verification: the 1:1 :class:`~kerascnn.face.calibrations.DecisionThreshold`.
        identification: the 1:N :class:`~kerascnn.face.calibrations.DecisionThreshold`.
        rows: one JSON-ready dict per probe: ``image``, ``truth``, and either ``error`` or
            ``enrolled``, ``verify``, ``identify`` (the decisions' dicts) and ``correct``.
    """

    orl: Path
    enrolled: list[str]
    templates: int
    verification: object
    identification: object
    rows: list[dict] = field(default_factory=list)

    @property
    def correct(self) -> int:
        """How many probes were decided correctly."""
        return sum(bool(r.get("correct")) for r in self.rows)

    def failure_counts(self) -> dict[str, int]:
        """What went wrong, by kind (only the kinds that happened): empty when every probe was decided correctly."""
        decided = [r for r in self.rows if "error" not in r]
        counts = {
            "probes without a usable face": len(self.rows) - len(decided),
            "enrolled people rejected by verify": sum(r["enrolled"] and not r["verify"]["match"] for r in decided),
            "enrolled people not identified": sum(r["enrolled"] and r["identify"]["name"] != r["truth"] for r in decided),
            "strangers accepted by verify": sum(not r["enrolled"] and r["verify"]["match"] for r in decided),
            "strangers identified as someone": sum(not r["enrolled"] and r["identify"]["recognized"] for r in decided),
        }
        return {what: n for what, n in counts.items() if n}


def _orl_people(orl: Path) -> dict[str, list[str]]:
    """Each ORL person (s1, s2, ... in numeric order) and their photos (1.pgm, 2.pgm, ... in numeric order)."""
    from kerascnn.data.folders import scan_folder

    dataset = scan_folder(orl)
    people = sorted(dataset.class_names, key=lambda n: int(n[1:]) if n[1:].isdigit() else n)
    return {n: sorted((p for p, y in zip(dataset.paths, dataset.labels) if dataset.class_names[y] == n),
                      key=lambda p: int(Path(p).stem) if Path(p).stem.isdigit() else p) for n in people}


def run_demo(data: str | os.PathLike, *, people: int = 8, enroll_images: int = 5, strangers: int = 4,
             pipeline=None, gallery: str | os.PathLike | None = None, threshold: float | None = None,
             metric: str | None = None, fpir: float | None = None,
             calibration_file: str | os.PathLike | None = None) -> DemoReport:
    """Enroll the first ``people`` ORL people into a fresh gallery, then decide held-back photos.

    Each enrolled person gives ``enroll_images`` photos and one more as a probe; each of the last
    ``strangers`` people gives one probe, verified as the first enrolled person.

    Args:
        data: the folder holding ``orl/`` (``orl/s<k>/<n>.pgm``).
        people: how many people to enroll.
        enroll_images: photos enrolled per person.
        strangers: how many people not enrolled to probe with.
        pipeline: the :class:`~kerascnn.face.pipeline.FacePipeline` (default: the default one).
        gallery: the fresh gallery file to create (default: a temporary one, deleted afterwards).
        threshold: decide verify and identify at this threshold instead of the calibrated ones.
        metric: the metric of ``threshold``.
        fpir: the target FPIR of the identify decisions.
        calibration_file: take the thresholds from this calibration file.

    Returns:
        A :class:`DemoReport`.

    Raises:
        DatasetError: ORL is missing or has too few people.
        GalleryInputError: ``gallery`` already exists.
        FaceModelError: no calibration for the model and detector, and no ``threshold``.
    """
    from kerascnn.face.calibrations import identification_threshold, verification_threshold
    from kerascnn.face.decision import identify, verify
    from kerascnn.face.faces import Faces

    orl = Path(data) / "orl"
    files = _orl_people(orl)
    names = list(files)
    if people + strangers > len(names):
        raise DatasetError(f"{orl} has {len(names)} people, the demo needs {people} + {strangers}")
    enrolled, outsiders = names[:people], names[-strangers:] if strangers else []
    if pipeline is None:
        from kerascnn.face.pipeline import FacePipeline

        pipeline = FacePipeline()
    one = verification_threshold(pipeline, threshold, metric, calibration_file)
    many = identification_threshold(pipeline, len(enrolled), fpir, threshold, metric, calibration_file)
    if gallery and os.path.exists(gallery):
        raise GalleryInputError(f"demo gallery {gallery} already exists: the demo enrolls into a fresh gallery")
    report = DemoReport(orl, enrolled, 0, one, many)
    with tempfile.TemporaryDirectory() as tmp:
        with Faces(gallery or os.path.join(tmp, "demo.db"), pipeline=pipeline) as faces:
            for name in enrolled:
                faces.enroll(name, files[name][:enroll_images], strict=False)
            probes = [(n, p) for n in enrolled for p in files[n][enroll_images:enroll_images + 1]]
            probes += [(n, files[n][0]) for n in outsiders]
            batch = pipeline.embed_images([p for _, p in probes], progress=False)
            for (truth, path), embedding, face in zip(probes, batch.embeddings, batch.results):
                if not face.ok:
                    report.rows.append({"image": path, "truth": truth, "error": face.message})
                    continue
                is_enrolled = truth in enrolled
                v = verify(faces.gallery, truth if is_enrolled else enrolled[0], embedding, one.threshold, one.metric)
                i = identify(faces.gallery, embedding, many.threshold, many.metric, top_k=3)
                ok = v.match == is_enrolled and (i.name == truth if is_enrolled else not i.recognized)
                report.rows.append({"image": path, "truth": truth, "enrolled": is_enrolled, "verify": v.to_dict(),
                                    "identify": i.to_dict(), "correct": bool(ok)})
            report.templates = len(faces.gallery)
    return report
