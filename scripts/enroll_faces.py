#!/usr/bin/env python3
"""Enroll people into a face-verification gallery (a thin script over kerascnn.face).

Each photo goes through the face pipeline (detect, select the largest face, align, embed with
the face model) and its embedding is stored, with the photo's sha256, in a SQLite gallery file
(created owner-only on first use). Photos already enrolled are skipped, so the script can be run
again after an interruption: every person enrolled before it stopped is kept.

Usage:
    # one person from a few photos (all must show a face, else nothing is enrolled)
    python scripts/enroll_faces.py --gallery faces.db alice alice1.jpg alice2.jpg

    # every person of an identity/image folder, e.g. the ORL faces (bad photos are reported)
    python scripts/enroll_faces.py --gallery faces.db --folder ../shared/data/orl

    # another embedding model, the YuNet detector
    python scripts/enroll_faces.py --gallery faces.db --folder people/ --model my_embedder.keras \\
        --detector-model ../shared/models/face_detection_yunet_2026may.onnx

Then: ``kerascnn list --gallery faces.db``, ``kerascnn verify --gallery faces.db alice probe.jpg``,
``kerascnn identify --gallery faces.db probe.jpg``. Exit codes: 0 done, 2 error (one line on stderr,
the gallery left as it was).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout

from kerascnn.errors import KerasCNNError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", required=True, help="the gallery file (created if missing)")
    parser.add_argument("name", nargs="?", help="the person's name")
    parser.add_argument("images", nargs="*", help="photos of that person")
    parser.add_argument("--folder", help="enroll every FOLDER/<name>/<image> instead")
    parser.add_argument("--model", help="embedding model .keras (default: the shipped face model)")
    parser.add_argument("--detector", help="haar, yunet or a YuNet .onnx face detector (default: the shipped YuNet)")
    args = parser.parse_args(argv)
    if bool(args.folder) == bool(args.name and args.images):
        parser.error("give NAME IMG... or --folder DIR")

    from kerascnn import face

    try:
        with face.open(args.gallery, detector=args.detector, model=args.model) as faces:
            if args.folder:
                report = faces.enroll_folder(args.folder)
            else:
                report = faces.enroll(args.name, args.images)
    except KerasCNNError as exc:
        print(f"enroll_faces: error: {exc}", file=sys.stderr)
        return 2
    for path, error in report.failures:
        print(f"skipped {path}: {error}")
    print(f"enrolled {report.templates} templates of {len(report.enrolled)} people into {args.gallery} "
          f"({report.skipped} photos were already enrolled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
