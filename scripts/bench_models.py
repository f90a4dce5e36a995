"""Benchmark: training speed of kerascnn's models against their keras.applications counterparts.

For each model (default: resnet50, mobilenet_v2, densenet121) both versions are built with
random weights and the same input size, classes, optimizer and loss; after a warm-up step each,
they are timed in turns (ours, theirs, ours, theirs ...) so that the load of a shared machine
hits both alike. A measurement is ``--steps`` calls of ``train_on_batch`` on a fixed batch; the
table shows the median images/s over ``--repeats`` measurements and the ratio ours / theirs
(target: at least 0.97; the layers are the same, so anything far from 1 is a real difference).

``--control`` also times keras.applications against a second copy of itself (an A/A run) in the
same way: its ratio and range show how far two identical models drift apart on this machine,
which is the yardstick for reading the ours/theirs column.

Usage:
    python3 scripts/bench_models.py [--size 128] [--batch 16] [--steps 3] [--repeats 5]
                                    [--models resnet50,mobilenet_v2,densenet121] [--jit] [--control]

Defaults are small enough for a 2-core CPU (a few minutes); on a GPU use e.g. ``--size 224
--batch 64 --steps 20``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerascnn import create_model  # noqa: E402

COUNTERPARTS = {
    "resnet50": keras.applications.ResNet50,
    "mobilenet_v2": keras.applications.MobileNetV2,
    "densenet121": keras.applications.DenseNet121,
}


def build(builder, size: int, classes: int, jit: bool) -> keras.Model:
    model = builder(weights=None, input_shape=(size, size, 3), classes=classes)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit,
    )
    return model


def images_per_second(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int) -> float:
    """Images/s of ``steps`` training steps (``train_on_batch`` returns the loss: synchronised)."""
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(x) / (time.perf_counter() - start)


def compare(name: str, args, control: bool = False) -> tuple[float, float, float, float]:
    """``(ours, theirs, ratio, spread)``: median images/s, their ratio, and the ratios' range.

    With ``control`` the first model is a second keras.applications copy instead of ours.
    """
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, args.classes, args.batch)
    first = COUNTERPARTS[name] if control else (lambda **kw: create_model(name, **kw))
    pair = {
        "ours": build(first, args.size, args.classes, args.jit),
        "theirs": build(COUNTERPARTS[name], args.size, args.classes, args.jit),
    }
    assert pair["ours"].count_params() == pair["theirs"].count_params(), name
    for model in pair.values():  # warm-up: trace and compile the train function
        model.train_on_batch(x, y)
    rates = {"ours": [], "theirs": []}
    for repeat in range(args.repeats):
        order = ("ours", "theirs") if repeat % 2 == 0 else ("theirs", "ours")
        for who in order:
            rates[who].append(images_per_second(pair[who], x, y, args.steps))
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["theirs"])
    ratios = [a / b for a, b in zip(rates["ours"], rates["theirs"])]
    keras.backend.clear_session()
    return ours, theirs, ours / theirs, max(ratios) - min(ratios)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(COUNTERPARTS), help="comma-separated names")
    parser.add_argument("--size", type=int, default=128, help="input height and width")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per model (median)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--jit", action="store_true", help="compile with XLA (slower on CPU)")
    parser.add_argument("--control", action="store_true",
                        help="also time keras.applications against itself (the noise floor)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in COUNTERPARTS]
    if unknown:
        parser.error(f"no keras.applications counterpart for {unknown}; choose from {list(COUNTERPARTS)}")
    device = "GPU" if keras.config.backend() == "tensorflow" and _has_gpu() else "CPU"
    print(f"training images/s, {args.size}x{args.size} batch {args.batch}, {args.steps} steps x "
          f"{args.repeats} repeats (median), {device}, jit={args.jit}")
    print(f"{'model':<14}{'ours':>10}{'keras.app':>11}{'ours/theirs':>13}{'ratio range':>13}")
    for name in names:
        ours, theirs, ratio, spread = compare(name, args)
        flag = "" if ratio >= 0.97 else "  below 0.97"
        print(f"{name:<14}{ours:>10.1f}{theirs:>11.1f}{ratio:>13.3f}{spread:>13.3f}{flag}", flush=True)
        if args.control:
            a, b, ratio, spread = compare(name, args, control=True)
            print(f"{'  A/A control':<14}{a:>10.1f}{b:>11.1f}{ratio:>13.3f}{spread:>13.3f}", flush=True)
    return 0


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


if __name__ == "__main__":
    sys.exit(main())
