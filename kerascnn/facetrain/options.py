"""Command-line options of a face-model training run (``kerascnn train-face``).

Kept apart from :mod:`kerascnn.facetrain.trainer` so that building the parser imports nothing heavy.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    """Add the training options to an ``argparse`` parser."""
    parser.add_argument("--data", action="append", required=True,
                        help="identity/image folder to train on (repeat for several, e.g. LFW's images and ORL)")
    parser.add_argument("--detector", default=None,
                        help="YuNet .onnx face detector used to align the training faces (default: the shipped YuNet)")
    parser.add_argument("--pairs", default=None, help="LFW pairs.txt whose --holdout-fold is held out and scored")
    parser.add_argument("--lfw-images", default=None,
                        help="folder the pairs refer to (default: the --data folder named 'images')")
    parser.add_argument("--holdout-fold", type=int, default=7, help="1-based fold of --pairs held out (default 7)")
    parser.add_argument("--out", default="runs/face_model", help="output folder: model, card, log, checkpoints")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--input-size", type=int, default=64, help="side of the aligned input crops")
    parser.add_argument("--canvas", type=int, default=None, help="stored crop size (default 1.25 x input size)")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256], help="channels per stage")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 2, 1], help="residual blocks per stage")
    parser.add_argument("--no-teacher", action="store_true", help="train with semi-hard triplets only (no dlib)")
    parser.add_argument("--teacher-partial", action="store_true",
                        help="start with the teacher embeddings cached so far (another process describes the rest)")
    parser.add_argument("--online-teacher", default=None, metavar="MODEL",
                        help="distil a Keras face model ('dlib' or a .keras path) that describes every augmented "
                             "view during training, instead of dlib's per-image descriptors")
    parser.add_argument("--init-weights", default=None, metavar="MODEL",
                        help="start from this embedder's weights ('small' or a .keras path of the same architecture)")
    parser.add_argument("--max-images", type=int, default=None, help="train on at most this many images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="cache folder (default ~/.cache/kerascnn)")
