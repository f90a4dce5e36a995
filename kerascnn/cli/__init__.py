"""The ``kerascnn`` command: one module per group of commands, parsing and printing only.

Exit codes: 0 success (or a match), 1 a decision of "no match" / "not recognized" (or a demo
that decided some probe wrongly), 2 an error (bad argument, bad input, missing file, gallery
problem, or any unexpected failure), with a one-line message on stderr (``--verbose`` adds the
traceback; with ``--json`` the error is one JSON object ``{"error": ..., "type": ...}`` on stdout).

- :mod:`kerascnn.cli.app`: the parser, :func:`main` and the error reporting
- :mod:`kerascnn.cli.models`: ``models``, ``summary``, ``train``
- :mod:`kerascnn.cli.facetrain`: ``train-face``, ``finetune-face``, ``convert-dlib``, ``convert-facenet``
- :mod:`kerascnn.cli.gallery`: ``enroll``, ``list``, ``remove``, ``rename``, ``export``, ``import``
- :mod:`kerascnn.cli.face`: ``verify``, ``identify``, ``calibrate``, ``evaluate``, ``demo``
- :mod:`kerascnn.cli.serve`: ``serve``, ``keys`` (the face service, :mod:`kerascnn.serve`)
- :mod:`kerascnn.cli.common`: argument types and options shared by the groups
- :mod:`kerascnn.cli.quiet`: TensorFlow's start-up log lines swallowed (unless ``--verbose``)

Handlers import the library lazily, so that ``kerascnn --help`` answers at once; every decision
(thresholds, calibrations, workflows) is the library's. Nothing imports the CLI.
"""

from kerascnn.cli.app import build_parser, main
from kerascnn.cli.common import EXIT_ERROR, EXIT_NO_MATCH, EXIT_OK

__all__ = ["EXIT_ERROR", "EXIT_NO_MATCH", "EXIT_OK", "build_parser", "main"]
