"""Helpers of the face tests: a tiny embedding model, the fixed real-face test set, composites."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from kerascnn.errors import GalleryInputError

# LFW deep-funneled images with known outcomes (checked once by eye and with both detectors):
# one face each, Haar finds both eyes in EYES and no eye pair in BOX; SEVERAL has other faces.
EYES = ["AJ_Cook/AJ_Cook_0001.jpg", "AJ_Lamas/AJ_Lamas_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"]
BOX = ["Abbas_Kiarostami/Abbas_Kiarostami_0001.jpg", "Abner_Martinez/Abner_Martinez_0001.jpg"]
SEVERAL = "Abdulaziz_Kamilov/Abdulaziz_Kamilov_0001.jpg"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``kerascnn ARGV`` run in this process."""
    from kerascnn.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def digest(path) -> str:
    """The sha256 of a file's bytes (to show that a command left it as it was)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def damaged_dat(dat: Path, out: Path, how: str) -> Path:
    """A damaged copy of dlib's network file: ``"flipped"``, 64 bytes inverted in its middle (issue
    17: a filter value of 124,181); ``"nan"``, a NaN among the filters of its 40th layer;
    ``"other"``, the signs of 4,096 filter values of that layer flipped (plausible values: another
    network)."""
    from kerascnn.models.dlib_format import read_dlib_network

    data = bytearray(dat.read_bytes())
    middle = len(data) // 2
    if how == "flipped":
        data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    else:
        filters = read_dlib_network(dat).layers[40].arrays["filters"].reshape(-1)
        start = bytes(data).index(filters[:8].astype("<f4").tobytes())
        if how == "nan":
            data[start:start + 4] = np.float32("nan").tobytes()
        else:
            for pos in range(start + 3, start + 4 * 4096, 4):
                data[pos] ^= 0x80
    out.write_bytes(bytes(data))
    return out


def tiny_embedder(size: int = 32, channels: int = 3, dim: int = 16, name: str = "tiny_embedder"):
    """A small random embedding model: aligned crops 0..255 in, unit vectors out."""
    import keras

    inputs = keras.Input((size, size, channels))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(dim)(x)
    return keras.Model(inputs, keras.layers.UnitNormalization()(x), name=name)


def face_crop(lfw_dir: Path, rel: str, side: int) -> np.ndarray:
    """The central 150x150 (face) part of an LFW image, resized to ``side``, RGB."""
    from kerascnn.data.folders import read_image

    return cv2.resize(read_image(lfw_dir / rel)[50:200, 50:200], (side, side), interpolation=cv2.INTER_AREA)


def two_faces(lfw_dir: Path) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """A 260x760 image: a large face at the left edge and a smaller face at the centre.

    Returns the image and the centres (x, y) of the large and of the central face.
    """
    canvas = np.full((260, 760, 3), 128, np.uint8)
    canvas[20:240, 10:230] = face_crop(lfw_dir, EYES[0], 220)
    canvas[60:200, 310:450] = face_crop(lfw_dir, EYES[1], 140)
    return canvas, (120.0, 130.0), (380.0, 130.0)


FAKE_DIM = 8


class FakePipeline:
    """A face pipeline without TensorFlow: an image file's embedding is a random vector seeded by
    its bytes; files whose bytes start with b"bad" have "no face"."""

    def __init__(self, dim=FAKE_DIM, name="fake"):
        self.model = SimpleNamespace(
            name=name, weights=[np.arange(3, dtype=np.float32)],
            inputs=[SimpleNamespace(shape=(None, 16, 16, 3))], outputs=[SimpleNamespace(shape=(None, dim))],
        )
        self.detector, self.model_spec, self.has_card = "fake detector", None, False
        self.dim = dim
        self.calls = []

    def embedding_of(self, path):
        seed = int.from_bytes(hashlib.sha256(Path(path).read_bytes()).digest()[:4], "little")
        return np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)

    def embed_images(self, paths, progress=True, strict=False):
        self.calls.append([str(p) for p in paths])
        results, rows = [], []
        for i, p in enumerate(paths):
            if Path(p).read_bytes().startswith(b"bad"):
                if strict:
                    raise GalleryInputError(f"no face in {p}")  # any KerasCNNError
                results.append(SimpleNamespace(index=i, ok=False, error=f"no face found in {p}"))
                rows.append(np.full(self.dim, np.nan, np.float32))
            else:
                results.append(SimpleNamespace(index=i, ok=True, error=None, to_dict=lambda p=p: {"source": str(p)}))
                rows.append(self.embedding_of(p))
        return SimpleNamespace(embeddings=np.stack(rows), results=results)

    def embed_one(self, path):
        batch = self.embed_images([path], strict=True)
        return batch.embeddings[0] / np.linalg.norm(batch.embeddings[0]), batch.results[0]


def make_folder(root: Path, people: dict[str, int], bad: tuple[str, ...] = ()) -> Path:
    for name, n in people.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            content = b"bad" if f"{name}/{i}" in bad else f"{name} image {i}".encode()
            (root / name / f"{i}.jpg").write_bytes(content)
    return root
