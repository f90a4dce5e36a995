"""Benchmark: can the tf.data pipeline feed training? Images/s of each augmentation preset vs the
training-step rate of resnet50 and mobilenet_v2 on the same cores.

Reads real LFW images (``../shared/data/lfw/images``) at 160x160, decoded once and cached, batch 32;
prints, for every preset, its rate and the ratio pipeline / training (above 1: the pipeline is
not the bottleneck), then the pipeline rate with a private thread pool of 1 vs 2 threads, and the
decode rate of ``read_image`` in ``tf.numpy_function`` vs ``tf.io.decode_image``.

Usage:
    python3 scripts/bench_pipeline.py [--images 512] [--batches 12] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerascnn.data import AUGMENTATION_PRESETS, decode_image, make_dataset, scan_folder  # noqa: E402

SIZE, BATCH = 160, 32
LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "images"


def pipeline_rate(paths, preset, batches, threads=None):
    """Images/s of ``batches`` augmented batches, after one warm-up pass fills the cache."""
    ds = make_dataset(paths, np.zeros(len(paths), np.int32), image_size=SIZE, batch_size=BATCH,
                      shuffle=True, seed=0, augment=None if preset == "none" else preset, cache=True,
                      check_files=False)
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        ds = ds.with_options(options)
    for _ in ds:  # warm-up: decode into the cache, trace the augmentation
        pass
    ds = ds.repeat()
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - start)


def training_rate(name, steps):
    """Images/s of ``model.train_on_batch`` at 160x160, batch 32 (after 1 warm-up step)."""
    import keras

    try:
        from kerascnn import create_model

        model = create_model(name, input_shape=(SIZE, SIZE, 3), classes=100, weights=None)
    except Exception as exc:  # noqa: BLE001 - a missing registry entry falls back, with a note
        print(f"note: kerascnn.create_model({name!r}) failed ({exc}); using keras.applications")
        app = {"resnet50": keras.applications.ResNet50, "mobilenet_v2": keras.applications.MobileNetV2}[name]
        model = app(input_shape=(SIZE, SIZE, 3), classes=100, weights=None)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
    y = np.zeros(BATCH, np.int32)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * BATCH / (time.perf_counter() - start)


def decode_rates(paths):
    """Images/s decoding the files with read_image (numpy_function) vs tf.io.decode_image."""
    def tf_io(p):
        image = tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image

    rates = {}
    for name, fn in (("read_image via tf.numpy_function", decode_image), ("tf.io.decode_image", tf_io)):
        ds = tf.data.Dataset.from_tensor_slices(paths).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
        start = time.perf_counter()
        for _ in ds:
            pass
        rates[name] = len(paths) / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="LFW images to cache")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per preset")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model")
    args = parser.parse_args()
    paths = scan_folder(LFW).paths[: args.images]
    print(f"{len(paths)} LFW images at {SIZE}x{SIZE}, batch {BATCH}, {os.cpu_count()} cores")
    for name, rate in decode_rates(paths).items():
        print(f"decode  {name:34s} {rate:8.0f} images/s")
    train = {m: training_rate(m, args.steps) for m in ("resnet50", "mobilenet_v2")}
    for m, rate in train.items():
        print(f"train   {m:34s} {rate:8.1f} images/s")
    print(f"{'preset':12s} {'images/s':>9s} " + " ".join(f"{'/' + m:>14s}" for m in train))
    for preset in AUGMENTATION_PRESETS:
        rate = pipeline_rate(paths, preset, args.batches)
        print(f"{preset:12s} {rate:9.0f} " + " ".join(f"{rate / r:14.1f}" for r in train.values()))
    one, two = (pipeline_rate(paths, "standard", args.batches, threads=t) for t in (1, 2))
    print(f"'standard' with 1 thread {one:.0f} images/s, 2 threads {two:.0f} images/s: x{two / one:.2f}")


if __name__ == "__main__":
    main()
