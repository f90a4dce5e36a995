#!/usr/bin/env python3
"""Benchmark: the cost of triplet mining in face training, and embedding throughput.

1. For P x K batches (32x4 to 128x4, 128-d embeddings), the time of ``TripletLoss`` forward +
   backward with each mining, as a fraction of one full training step (forward, loss, backward,
   update) of a small embedding model measured in the same run. It should stay a few percent.
2. Embedding throughput (images/s) of ``kerascnn.load_face_model()`` when it is available, else
   of a MobileNetV2 112x112 tower (printed note), via a ``tf.function`` call and via
   ``model.predict``. dlib's recognizer does about 9.5 images/s per core on these machines.

Usage:
    python3 scripts/bench_face_training.py [--p 32 64 128] [--k 4] [--input-size 112] [--repeats 3]

Timings are medians of ``--repeats`` runs after one warm-up, on whatever devices TensorFlow sees
(CPU here). ``KERASCNN_SMALL=1`` picks tiny settings (a smoke run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerascnn.losses import MININGS, TripletLoss  # noqa: E402
from kerascnn.siamese import build_embedding_model  # noqa: E402


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_model(input_size: int, dim: int) -> tuple[keras.Model, str]:
    """The small embedder the face model uses when available, else a MobileNetV2 tower."""
    try:
        from kerascnn.face.model import build_face_embedder

        return build_face_embedder(input_size=input_size, embedding_dim=dim), "kerascnn.face.model.build_face_embedder"
    except ImportError:
        return build_embedding_model("mobilenet_v2", (input_size, input_size, 3), dim), "mobilenet_v2 tower"


def loss_step_fn(loss: TripletLoss, labels, embeddings):
    """A compiled forward + backward of the loss alone (gradient w.r.t. the embeddings)."""
    var = tf.Variable(embeddings)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss(labels, var)
        return tape.gradient(value, var)

    return lambda: step().numpy()


def bench_mining(p_values, k: int, dim: int, input_size: int, repeats: int) -> None:
    model, model_name = training_model(input_size, dim)
    print(f"\n1. Triplet loss (forward + backward) as a fraction of one training step of {model_name} "
          f"({model.count_params():,} parameters, {input_size}x{input_size} input, {dim}-d)")
    header = f"{'batch':>9} {'step s':>8} " + " ".join(f"{m + ' ms':>15} {'%':>6}" for m in MININGS)
    print(header)
    rng = np.random.default_rng(0)
    for p in p_values:
        n = p * k
        labels = np.repeat(np.arange(p), k).astype(np.int32)
        images = rng.uniform(0, 255, (n, input_size, input_size, 3)).astype(np.float32)
        model.compile(keras.optimizers.SGD(1e-3), loss=TripletLoss(0.2, "batch_hard"), jit_compile=False)
        step = median_time(lambda: model.train_on_batch(images, labels), repeats)
        embeddings = rng.normal(size=(n, dim)).astype(np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        cells = []
        for mining in MININGS:
            t = median_time(loss_step_fn(TripletLoss(0.2, mining), tf.constant(labels), embeddings), max(repeats, 5))
            cells.append(f"{t * 1e3:>15.2f} {100 * t / step:>5.2f}%")
        print(f"{p:>4}x{k:<4} {step:>8.2f} " + " ".join(cells))


def bench_throughput(batch: int, n_images: int, repeats: int) -> None:
    try:
        import kerascnn

        model = kerascnn.load_face_model()
        what = "kerascnn.load_face_model()"
    except Exception as exc:  # noqa: BLE001 - any failure means: not shipped yet
        model = build_embedding_model("mobilenet_v2", (112, 112, 3), 128)
        what = f"a MobileNetV2 112x112 tower (note: load_face_model() unavailable: {type(exc).__name__}: {exc})"
    shape = tuple(model.input_shape[1:])
    images = np.random.default_rng(1).uniform(0, 255, (n_images, *shape)).astype(np.float32)
    call = tf.function(lambda x: model(x, training=False))
    batches = [tf.constant(images[i:i + batch]) for i in range(0, n_images, batch)]
    t_call = median_time(lambda: [call(b).numpy() for b in batches], repeats)
    t_predict = median_time(lambda: model.predict(images, batch_size=batch, verbose=0), repeats)
    print(f"\n2. Embedding throughput of {what}, input {shape}, batch {batch}, {os.cpu_count()} CPU cores")
    print(f"   tf.function call: {n_images / t_call:8.1f} images/s")
    print(f"   model.predict:    {n_images / t_predict:8.1f} images/s")
    print("   (dlib's ResNet recognizer: about 9.5 images/s per core on these machines)")


def main() -> None:
    small = os.environ.get("KERASCNN_SMALL") == "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, nargs="+", default=[4] if small else [32, 64, 128], help="identities per batch")
    parser.add_argument("--k", type=int, default=4, help="images per identity")
    parser.add_argument("--dim", type=int, default=128, help="embedding size")
    parser.add_argument("--input-size", type=int, default=32 if small else 112, help="training image side")
    parser.add_argument("--repeats", type=int, default=1 if small else 3, help="timed runs (median)")
    parser.add_argument("--images", type=int, default=32 if small else 256, help="images for the throughput test")
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices: {[d.device_type for d in tf.config.list_physical_devices()]}")
    bench_mining(args.p, args.k, args.dim, args.input_size, args.repeats)
    bench_throughput(32, args.images, args.repeats)


if __name__ == "__main__":
    main()
