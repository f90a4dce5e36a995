"""The ``kerascnn`` command's parser, :func:`main` and its error reporting (see :mod:`kerascnn.cli`)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from kerascnn.cli.face import add_commands as add_face_commands
from kerascnn.cli.facetrain import add_commands as add_face_model_commands
from kerascnn.cli.gallery import add_commands as add_gallery_commands
from kerascnn.cli.models import add_commands as add_model_commands
from kerascnn.cli.serve import add_commands as add_serve_commands
from kerascnn.cli.common import EXIT_ERROR, EXIT_OK
from kerascnn.cli.quiet import quiet_framework

EPILOG = """examples:
  kerascnn models 'resnet*'
  kerascnn summary resnet50 --input-shape 224 224 3
  kerascnn train --model resnet18 --data ../shared/data/orl --augment standard --epochs 5
  kerascnn enroll --gallery faces.db alice alice1.jpg alice2.jpg
  kerascnn verify --gallery faces.db alice probe.jpg
  kerascnn identify --gallery faces.db probe.jpg
  kerascnn identify --gallery postgresql://kiosk@db.example.org/faces probe.jpg
  kerascnn keys create --gallery faces.db --scope admin me
  kerascnn serve --gallery faces.db --port 8000
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kerascnn`` command."""
    parser = argparse.ArgumentParser(
        prog="kerascnn",
        description="CNN models, training and face verification with Keras 3.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and CUDA's log messages and the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_commands in (add_model_commands, add_face_model_commands, add_gallery_commands, add_face_commands,
                         add_serve_commands):
        add_commands(sub)
    for command in sub.choices.values():  # also after the command; SUPPRESS keeps a --verbose given before it
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="show TensorFlow's and CUDA's log messages and the traceback of an error")
    return parser


def _version() -> str:
    from kerascnn import __version__

    return f"kerascnn {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Every error exits 2 with one line on stderr, ``kerascnn CMD: error: ...`` (a traceback only with
    ``--verbose``); with ``--json`` the error is printed on stdout as ``{"error": ..., "type": ...}``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        if not args.verbose:
            quiet_framework()
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error is exit 2, never the "no match" of 1
        return _report_error(args, exc)


def _report_error(args, exc: Exception) -> int:
    """Print ``exc`` as one line (or JSON with ``--json``; with the traceback under ``--verbose``); returns 2."""
    import json
    import traceback

    from kerascnn.errors import KerasCNNError

    if isinstance(exc, KerasCNNError):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:  # "IsADirectoryError: [Errno 21] ..." -> "x: Is a directory"
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        message = f"{type(exc).__name__}: {exc}"
    message = " ".join(message.split()) or type(exc).__name__
    if getattr(args, "verbose", False):
        traceback.print_exception(exc, file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "type": type(exc).__name__}))
    else:
        print(f"kerascnn {args.command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR
