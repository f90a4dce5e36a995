"""The ``kerascnn`` command.

Exit codes: 0 success (or a match), 1 a decision of "no match" / "not recognized",
2 an error (bad input, missing file, gallery problem...), with a one-line message on stderr.

Each group of subcommands is added by one function below; handlers import the library lazily
so that ``kerascnn --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

EXIT_OK, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2

EPILOG = """examples:
  kerascnn models 'resnet*'
  kerascnn summary resnet50 --input-shape 224 224 3
  kerascnn train --model resnet18 --data ../shared/data/orl --augment standard --epochs 5
  kerascnn enroll --gallery faces.db alice alice1.jpg alice2.jpg
  kerascnn verify --gallery faces.db alice probe.jpg
  kerascnn identify --gallery faces.db probe.jpg
"""


# --- models: models, summary -------------------------------------------------------------------
def _add_model_commands(sub) -> None:
    pass


# --- training: train -------------------------------------------------------------------------
def _add_training_commands(sub) -> None:
    pass


# --- face model: train-face ------------------------------------------------------------------
def _add_face_model_commands(sub) -> None:
    from kerascnn.face.train_options import add_arguments

    parser = sub.add_parser(
        "train-face", help="train a face embedder (distillation from dlib, or triplets), score and calibrate it",
        description="Align the faces of identity folders, train a small ResNet embedder, score it on a held-out "
                    "LFW fold, and write <out>/face_model.keras with its card face_model.json.",
    )
    add_arguments(parser)
    parser.set_defaults(func=_train_face)


def _train_face(args) -> int:
    import json

    from kerascnn.face.trainer import run

    card = run(args)
    print(json.dumps({k: card[k] for k in ("accuracy", "calibration") if k in card}, indent=2))
    return EXIT_OK


# --- faces: verify, identify, calibrate, evaluate, demo ------------------------------------
def _add_face_commands(sub) -> None:
    pass


# --- gallery: enroll, list, remove, rename, export, import ----------------------------------
def _add_gallery_commands(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gallery", required=True, metavar="G.db", help="the gallery file (SQLite)")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    common.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for another process's write lock (default 10)")

    p = sub.add_parser("enroll", parents=[common], help="enroll a person's photos, or a whole identity/image folder",
                       description="Enroll NAME from IMG... (every image must give a face, else nothing is "
                                   "enrolled), or every person of an identity/image --folder (images without a "
                                   "usable face are reported and skipped). Images already enrolled are skipped.")
    p.add_argument("name", nargs="?", metavar="NAME", help="the person's name")
    p.add_argument("images", nargs="*", metavar="IMG", help="photos of that person")
    p.add_argument("--folder", metavar="DIR", help="enroll every DIR/<name>/<image> instead")
    p.add_argument("--model", metavar="M.keras", help="embedding model (default: the shipped face model)")
    p.add_argument("--detector", default=None, help="haar or yunet (default: yunet when $KERASCNN_DETECTOR_MODEL is set)")
    p.add_argument("--detector-model", metavar="YUNET.onnx", help="YuNet face detector model file")
    p.add_argument("--select", choices=("largest", "central"), default="largest",
                   help="which face of a photo with several (default largest)")
    p.set_defaults(func=_cmd_enroll)

    p = sub.add_parser("list", parents=[common], help="list the enrolled identities")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("remove", parents=[common], help="remove an identity and its templates")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_cmd_remove)
    p = sub.add_parser("rename", parents=[common], help="rename an identity")
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    p.set_defaults(func=_cmd_rename)
    p = sub.add_parser("export", parents=[common], help="write the gallery to a portable .json or .npz file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("import", parents=[common], help="add the identities of an exported .json or .npz file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=_cmd_import)


def _print(args, data: dict, text: str) -> None:
    """One JSON object with ``--json``, else the text for a person."""
    import json

    print(json.dumps(data) if args.json else text)


def _cmd_enroll(args) -> int:
    from kerascnn.errors import GalleryInputError
    from kerascnn.face.gallery import model_identity, open_gallery

    if bool(args.folder) == bool(args.name):
        raise GalleryInputError("enroll needs either NAME IMG... or --folder DIR (not both)")
    if args.name and not args.images:
        raise GalleryInputError(f"enroll {args.name}: give at least one image")
    from kerascnn.face.pipeline import FacePipeline  # TensorFlow: only once the arguments are sound

    pipeline = FacePipeline(detector=args.detector_model or args.detector, model=args.model, select=args.select)
    with open_gallery(args.gallery, model_identity(pipeline.model), timeout=args.timeout) as gallery:
        if args.folder:
            report = gallery.enroll_folder(args.folder, pipeline, progress=True)
        else:
            report = gallery.enroll_images(args.name, args.images, pipeline, strict=True)
    lines = [f"skipped {path}: {error}" for path, error in report.failures]
    lines.append(f"enrolled {len(report.enrolled)} identities, {report.templates} templates into {args.gallery}"
                 + (f" ({report.skipped} images already enrolled)" if report.skipped else ""))
    _print(args, {"gallery": args.gallery, **report.to_dict()}, "\n".join(lines))
    return EXIT_OK


def _cmd_list(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, read_only=True, timeout=args.timeout) as gallery:
        infos, model = gallery.identities(), gallery.model_identity
    total = sum(i.templates for i in infos)
    width = max([len(i.name) for i in infos] + [4])
    rows = [f"{'NAME':<{width}}  TEMPLATES  CREATED"]
    rows += [f"{i.name:<{width}}  {i.templates:>9}  {i.created}" for i in infos]
    rows.append(f"{len(infos)} identities, {total} templates (model {model['name'] if model else 'not recorded'})")
    _print(args, {"gallery": args.gallery, "model_identity": model, "identities": [i.to_dict() for i in infos],
                  "templates": total}, "\n".join(rows))
    return EXIT_OK


def _cmd_remove(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, timeout=args.timeout) as gallery:
        count = gallery.remove(args.name)
    _print(args, {"removed": args.name, "templates": count}, f"removed {args.name} ({count} templates)")
    return EXIT_OK


def _cmd_rename(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, timeout=args.timeout) as gallery:
        gallery.rename(args.old, args.new)
    _print(args, {"renamed": args.old, "to": args.new}, f"renamed {args.old} to {args.new}")
    return EXIT_OK


def _cmd_export(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, read_only=True, timeout=args.timeout) as gallery:
        count = gallery.export(args.file)
    _print(args, {"exported": args.file, "templates": count}, f"exported {count} templates to {args.file}")
    return EXIT_OK


def _cmd_import(args) -> int:
    from kerascnn.face.gallery import open_gallery

    with open_gallery(args.gallery, timeout=args.timeout) as gallery:
        count = gallery.import_(args.file)
    _print(args, {"imported": args.file, "templates": count}, f"imported {count} templates into {args.gallery}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kerascnn`` command."""
    parser = argparse.ArgumentParser(
        prog="kerascnn",
        description="CNN models, training and face verification with Keras 3.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_model_commands(sub)
    _add_training_commands(sub)
    _add_face_model_commands(sub)
    _add_gallery_commands(sub)
    _add_face_commands(sub)
    return parser


def _version() -> str:
    from kerascnn import __version__

    return f"kerascnn {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    from kerascnn.errors import KerasCNNError

    try:
        return int(args.func(args) or EXIT_OK)
    except (KerasCNNError, FileNotFoundError, PermissionError) as exc:
        print(f"kerascnn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
