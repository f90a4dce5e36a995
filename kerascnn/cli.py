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
    pass


# --- faces: verify, identify, calibrate, evaluate, demo ------------------------------------
def _add_face_commands(sub) -> None:
    pass


# --- gallery: enroll, list, remove, rename, export, import ----------------------------------
def _add_gallery_commands(sub) -> None:
    pass


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
