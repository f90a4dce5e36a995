"""``kerascnn enroll``, ``list``, ``remove``, ``rename``, ``export`` and ``import``: the gallery of people."""

from __future__ import annotations

import argparse
import sys

from kerascnn.cli.common import (EXIT_ERROR, EXIT_OK, GALLERY_HELP, add_detector_option, face_pipeline, print_result,
                                 seconds)


def add_commands(sub) -> None:
    """Add ``enroll``, ``list``, ``remove``, ``rename``, ``export`` and ``import`` to the subparsers ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gallery", required=True, metavar="G", help=GALLERY_HELP)
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    common.add_argument("--timeout", type=seconds, default=10.0, metavar="S",
                        help="seconds to wait for another process's write lock (default 10)")

    p = sub.add_parser("enroll", parents=[common], help="enroll a person's photos, or a whole identity/image folder",
                       description="Enroll NAME from IMG... (every image must give a face, else nothing is "
                                   "enrolled), or every person of an identity/image --folder (images without a "
                                   "usable face or unreadable, and sub-folders whose name is not a valid name, "
                                   "are reported and skipped; exit 2 only when nothing at all was enrolled). "
                                   "Images already enrolled are skipped.")
    p.add_argument("name", nargs="?", metavar="NAME", help="the person's name")
    p.add_argument("images", nargs="*", metavar="IMG", help="photos of that person")
    p.add_argument("--folder", metavar="DIR", help="enroll every DIR/<name>/<image> instead")
    p.add_argument("--model", metavar="M.keras", help="embedding model (default: the shipped face model)")
    add_detector_option(p)
    p.add_argument("--allow-confusable", action="store_true",
                   help="enroll a new name even if it looks like an enrolled one (e.g. a Cyrillic 'а' in 'аlice')")
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
    p.add_argument("--allow-confusable", action="store_true", help="accept a NEW that looks like another enrolled name")
    p.set_defaults(func=_cmd_rename)
    p = sub.add_parser("export", parents=[common], help="write the gallery to a portable .json or .npz file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists (never the gallery itself)")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("import", parents=[common], help="add the identities of an exported .json or .npz file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--allow-confusable", action="store_true", help="add new names even if they look like enrolled ones")
    p.set_defaults(func=_cmd_import)


def _cmd_enroll(args) -> int:
    from kerascnn.errors import GalleryInputError

    if bool(args.folder) == bool(args.name):
        raise GalleryInputError("enroll needs either NAME IMG... or --folder DIR (not both)")
    if args.name and not args.images:
        raise GalleryInputError(f"enroll {args.name}: give at least one image")
    from kerascnn.face.faces import Faces  # TensorFlow: only once the arguments are sound

    with Faces(args.gallery, pipeline=face_pipeline(args, select=args.select), timeout=args.timeout) as faces:
        gallery = faces.gallery
        if args.folder:
            report = faces.enroll_folder(args.folder, progress=True, allow_confusable=args.allow_confusable)
        else:
            report = faces.enroll(args.name, args.images, strict=True, allow_confusable=args.allow_confusable)
    lines = [f"skipped {path}: {error}" for path, error in report.failures]
    lines.append(f"enrolled {len(report.enrolled)} identities, {report.templates} templates into {gallery.location}"
                 + (f" ({report.skipped} images already enrolled)" if report.skipped else ""))
    nothing = args.folder and report.templates == 0 and report.skipped == 0 and report.failures
    if nothing:  # every item failed: an error, not a success
        lines.append(f"nothing enrolled: all {len(report.failures)} items of {args.folder} failed")
    print_result(args, {"gallery": gallery.location, **report.to_dict(), "nothing_enrolled": bool(nothing)}, "\n".join(lines))
    if nothing:
        print(f"kerascnn enroll: error: nothing enrolled from {args.folder}: all {len(report.failures)} items "
              "failed (see above)", file=sys.stderr)
        return EXIT_ERROR
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
    print_result(args, {"gallery": gallery.location, "model_identity": model, "identities": [i.to_dict() for i in infos],
                  "templates": total}, "\n".join(rows))
    return EXIT_OK


def _cmd_remove(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, timeout=args.timeout) as gallery:
        count = gallery.remove(args.name)
    print_result(args, {"removed": args.name, "templates": count}, f"removed {args.name} ({count} templates)")
    return EXIT_OK


def _cmd_rename(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, timeout=args.timeout) as gallery:
        gallery.rename(args.old, args.new, allow_confusable=args.allow_confusable)
    print_result(args, {"renamed": args.old, "to": args.new}, f"renamed {args.old} to {args.new}")
    return EXIT_OK


def _cmd_export(args) -> int:
    from kerascnn.face.gallery import Gallery

    with Gallery(args.gallery, create=False, read_only=True, timeout=args.timeout) as gallery:
        count = gallery.export(args.file, overwrite=args.force)
    print_result(args, {"exported": args.file, "templates": count}, f"exported {count} templates to {args.file}")
    return EXIT_OK


def _cmd_import(args) -> int:
    from pathlib import Path

    from kerascnn.face.gallery import open_gallery
    from kerascnn.face.gallery.fileformat import read_export

    read_export(Path(args.file))  # a bad file is refused before a new gallery is created for it
    with open_gallery(args.gallery, timeout=args.timeout) as gallery:
        count = gallery.import_(args.file, allow_confusable=args.allow_confusable)
    print_result(args, {"imported": args.file, "templates": count}, f"imported {count} templates into {gallery.location}")
    return EXIT_OK
