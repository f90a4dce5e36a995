#!/usr/bin/env python3
"""Training speed under mixed precision and XLA, as ratios to float32 measured in the same run.

For each configuration (float32; mixed_bfloat16; mixed_float16 on GPUs only, since CPUs emulate
float16; float32 with XLA ``jit_compile=True``; mixed with XLA) the script trains a registry
model on one synthetic batch repeated (so the input pipeline is not measured: see
``scripts/bench_pipeline.py`` for that) and prints the median images/s of ``--repeats`` timed
``fit`` calls of ``--steps`` steps, after a warm-up call that traces and compiles, and the ratio
to float32.

Example::

    python scripts/bench_training.py --model resnet18 --image-size 64 --batch-size 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def images_per_second(model_name: str, policy: str, jit: bool, image_size: int, batch_size: int,
                      steps: int, repeats: int) -> float:
    """Median training images/s of one configuration."""
    import keras
    import numpy as np
    import tensorflow as tf

    from kerascnn import training
    from kerascnn.models.registry import create_model

    keras.backend.clear_session()
    training.set_precision(policy)
    keras.utils.set_random_seed(0)
    model = training.float32_output(create_model(model_name, input_shape=(image_size, image_size, 3), classes=10))
    training.compile_model(model, learning_rate=0.01, optimizer="sgd", metrics=(), jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, 10, batch_size).astype("int32")
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # trace (and XLA-compile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    keras.mixed_precision.set_global_policy("float32")
    return batch_size * steps / statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed fit call")
    parser.add_argument("--repeats", type=int, default=3, help="timed fit calls (the median is kept)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    mixed = "mixed_float16" if gpu else "mixed_bfloat16"
    configs = [("float32", False), (mixed, False), ("float32", True), (mixed, True)]
    if gpu:
        configs.insert(2, ("mixed_bfloat16", False))
    print(f"{args.model}, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"{'GPU' if gpu else 'CPU'}, {os.cpu_count()} cores")
    print(f"{'policy':<16}{'XLA':<6}{'images/s':>10}{'vs float32':>12}")
    reference = None
    for policy, jit in configs:
        rate = images_per_second(args.model, policy, jit, args.image_size, args.batch_size, args.steps, args.repeats)
        reference = reference or rate
        print(f"{policy:<16}{'yes' if jit else 'no':<6}{rate:>10.1f}{rate / reference:>11.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
