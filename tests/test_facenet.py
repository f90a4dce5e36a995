"""FaceNet's frozen graph read into Keras: the same descriptors as the graph run by TensorFlow,
the same number of weights, ``kerascnn convert-facenet`` and ``--model facenet``, and bad files
refused with one clear line."""

from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
import pytest

from _face_helpers import BOX, EYES, run_cli
from kerascnn.cli import main
from kerascnn.errors import FaceModelError, FrozenGraphError, WeightsIntegrityError, WeightsMismatchError
from kerascnn.face import model as fm
from kerascnn.face.facenet import graph_file
from kerascnn.models import facenet_graph

pytestmark = pytest.mark.tensorflow_only  # the reference runs the graph with TensorFlow


@pytest.fixture(scope="module")
def graph():
    try:
        return graph_file()
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, graph):
    """``kerascnn convert-facenet`` into a fresh ``$KERASCNN_HOME``: (that home, stdout)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as text:
        patch.setenv("KERASCNN_HOME", str(home))
        assert main(["convert-facenet"]) == 0
    return home, text.getvalue()


@pytest.fixture
def facenet(converted, monkeypatch):
    """The converted model, loaded by name (``--model facenet``)."""
    monkeypatch.setenv("KERASCNN_HOME", str(converted[0]))
    return fm.load_face_model("facenet")


def _graph_embedder(graph_def):
    """The graph itself, run by TensorFlow on one prewhitened 160x160 image (its Reshape needs a batch of 1)."""
    import tensorflow as tf

    def run(x):
        return tf.import_graph_def(graph_def, input_map={"input:0": x}, return_elements=["embeddings:0"])[0]

    return tf.compat.v1.wrap_function(run, [tf.TensorSpec((1, 160, 160, 3), tf.float32)])


def _prewhiten(x: np.ndarray) -> np.ndarray:
    """Sandberg's facenet.prewhiten, verbatim."""
    mean, std = np.mean(x), np.std(x)
    return (x - mean) / np.maximum(std, 1.0 / np.sqrt(x.size))


def _crops(lfw_dir, yunet_path) -> np.ndarray:
    """Real LFW faces found by kerascnn's YuNet and aligned on the card's template at 160."""
    from kerascnn.face.detect import align_detection, get_detector, select_faces
    from kerascnn.face.facenet import ALIGNMENT

    detector, crops = get_detector(yunet_path), []
    for name in EYES + BOX:
        rgb = cv2.cvtColor(cv2.imread(str(lfw_dir / name)), cv2.COLOR_BGR2RGB)
        face = select_faces(detector(rgb), rgb.shape, "central")[0]
        crops.append(align_detection(rgb, face, 160, ALIGNMENT)[0])
    return np.stack(crops).astype(np.float32)


@pytest.mark.slow
def test_descriptors_equal_the_graphs_on_real_faces(converted, facenet, graph, lfw_dir, yunet_path):
    assert "use it with --model facenet" in converted[1]
    crops = _crops(lfw_dir, yunet_path)
    reference = _graph_embedder(facenet_graph.read_graph_def(graph))
    expected = np.concatenate([reference(_prewhiten(c)[None].astype(np.float32)).numpy() for c in crops])
    got = np.asarray(facenet(crops, training=False))
    assert got.shape == (5, 512)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.max(expected @ expected.T - np.eye(5)) < 0.9  # five different people: not a constant output


@pytest.mark.slow
def test_graph_weights_count_as_the_folded_model(graph, facenet):
    """Every float tensor of the graph (kernels, folded biases, bottleneck and its batch norm) but
    the bottleneck's constant BN scale of ones (TF-slim's scale=False) and the scalars (residual
    scales, axes) is a weight of the folded model, and it has no other."""
    import tensorflow as tf

    graph_def = facenet_graph.read_graph_def(graph)
    arrays = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}
    weights = {k: a for k, a in arrays.items() if a.dtype == np.float32 and a.ndim > 0}
    assert np.all(weights.pop("InceptionResnetV1/Bottleneck/BatchNorm/Const") == 1)
    count = sum(a.size for a in weights.values())
    assert count == facenet.count_params() == facenet_graph.read_facenet_graph(graph).count() == 23_468_848
    card = fm.load_face_model_card("facenet")
    assert card["parameters"] == count and card["licence"].startswith("MIT")
    assert card["output"]["metric"] == "cosine" and fm.load_alignment("facenet").size == 160


def test_model_facenet_says_how_to_convert_it():
    with pytest.raises(FaceModelError, match=r"face model 'facenet' is not converted yet: .*facenet\.keras does not "
                                             r"exist; run `kerascnn convert-facenet` to write it"):
        fm.load_face_model("facenet")


def test_foreign_and_truncated_files_are_refused(tmp_path, graph):
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff" * 4096)
    with pytest.raises(FrozenGraphError, match="garbage.pb is not a TensorFlow frozen graph"):
        facenet_graph.read_graph_def(garbage)
    truncated = tmp_path / "truncated.pb"
    truncated.write_bytes(graph.read_bytes()[:1_000_003])
    with pytest.raises(FrozenGraphError, match="truncated.pb is not a TensorFlow frozen graph"):
        facenet_graph.read_graph_def(truncated)


def _edited(graph, tmp_path, node_name: str, edit):
    """A copy of the graph with one constant changed by ``edit(array) -> array``."""
    import tensorflow as tf

    graph_def = facenet_graph.read_graph_def(graph)
    node = next(n for n in graph_def.node if n.name == node_name)
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(edit(tf.make_ndarray(node.attr["value"].tensor))))
    out = tmp_path / "edited.pb"
    out.write_bytes(graph_def.SerializeToString())
    return out


@pytest.mark.slow
def test_damaged_weights_and_other_architectures_are_refused(tmp_path, graph):
    def nan(a):
        a = a.copy()
        a.flat[7] = np.nan
        return a

    bad = _edited(graph, tmp_path, "InceptionResnetV1/Repeat_1/block17_4/Branch_1/Conv2d_0b_1x7/weights", nan)
    with pytest.raises(WeightsIntegrityError, match=r"the weights of 'block17_4_branch1_2_conv' hold NaN"):
        facenet_graph.read_facenet_graph(bad)
    other_scale = _edited(graph, tmp_path, "InceptionResnetV1/Repeat/block35_2/mul/x", lambda a: np.float32(0.3))
    model = facenet_graph.facenet_embedder(graph)
    with pytest.raises(WeightsMismatchError, match=r"block 'block35_2' has residual scale 0\.3.* in the graph, 0\.17"):
        facenet_graph.load_facenet_graph(model, other_scale)


def test_cli_refuses_another_graph_in_one_line_and_writes_nothing(tmp_path, graph, capsys):
    """A finite change of one weight parses and fits: only the file's digest tells it from FaceNet's."""
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad, out = tmp_path / "other.pb", tmp_path / "m.keras"
    bad.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "convert-facenet", "--graph", bad, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "other.pb: its sha256 is" in err and "the file is damaged or holds another network" in err
    assert not out.exists() and not out.with_suffix(".json").exists()
    code, _, err = run_cli(capsys, "convert-facenet", "--graph", tmp_path / "missing.pb", "--out", out)
    assert code == 2 and "no frozen graph at" in err and not out.exists()
