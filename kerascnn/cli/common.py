"""What the groups of commands share: exit codes, argument types, the face options, printing."""

from __future__ import annotations

import argparse
import math

EXIT_OK, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2

GALLERY_HELP = ("the gallery: a SQLite file (G.db), or a PostgreSQL database "
                "postgresql://user[:password]@host[:port]/dbname or 'host=... dbname=...' (pip install "
                "'kerascnn[postgres]'); output shows the password as ***")


# --- argument types: argparse turns their ArgumentTypeError into "argument --x: <message>", exit 2
def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def count(text: str) -> int:
    """An integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def finite(text: str) -> float:
    """A finite number (no nan, no inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


# --- options ------------------------------------------------------------------------------------
def add_detector_option(parser: argparse.ArgumentParser) -> None:
    """``--detector`` of every face command, and ``--detector-model PATH``, its deprecated hidden alias."""
    parser.add_argument("--detector", default=None, metavar="haar|yunet|YUNET.onnx",
                        help="face detector: haar, yunet (the model file of $KERASCNN_DETECTOR_MODEL) or a YuNet "
                             ".onnx file (default: yunet when $KERASCNN_DETECTOR_MODEL is set, else haar)")
    parser.add_argument("--detector-model", dest="detector", help=argparse.SUPPRESS)


def face_pipeline(args, select: str = "largest"):
    """The :class:`~kerascnn.face.pipeline.FacePipeline` of ``--model`` and ``--detector``."""
    from kerascnn.face.pipeline import FacePipeline

    return FacePipeline(detector=args.detector, model=args.model, select=select)


def print_result(args, data: dict, text: str) -> None:
    """One JSON object with ``--json``, else the text for a person."""
    import json

    print(json.dumps(data) if args.json else text)
