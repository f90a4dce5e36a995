#!/usr/bin/env python3
"""Fine-tuning beats training from scratch: pretrain on LFW identities, fine-tune on few-shot ORL.

1. Pretrain a registry network (``resnet18`` by default) to classify the LFW people with the most
   images (``--min-images`` each) and save it (``RUN/pretrain/model.keras``).
2. Split ORL's 40 identities: ``--shots`` images of each for training, the rest for testing.
3. Fine-tune: :func:`kerascnn.transfer.build_finetune_model` on the saved network, then
   :func:`kerascnn.transfer.finetune` (head on a frozen backbone, then the top stages).
4. From scratch: the same architecture with random weights, the same ORL images, the same number
   of epochs.

Both are scored on the held-out ORL images; seeds are fixed. No download: the data are
``../shared/data/lfw/images`` and ``../shared/data/orl``.

Example::

    python scripts/finetune_lfw_to_orl.py --image-size 64 --pretrain-epochs 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(os.environ.get("KERASCNN_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _cap_per_class(dataset, max_images: int | None):
    import numpy as np

    if not max_images:
        return dataset
    keep = [i for label in range(dataset.num_classes) for i in np.flatnonzero(dataset.labels == label)[:max_images]]
    return dataset.subset(sorted(keep))


def run(
    lfw_dir: str | os.PathLike,
    orl_dir: str | os.PathLike,
    out: str | os.PathLike,
    model: str = "resnet18",
    image_size: int = 64,
    min_images: int = 20,
    max_images: int | None = None,
    pretrain_epochs: int = 8,
    head_epochs: int = 4,
    finetune_epochs: int = 8,
    shots: int = 3,
    batch_size: int = 32,
    seed: int = 0,
    verbose: int = 2,
) -> dict[str, float]:
    """Pretrain, fine-tune, train from scratch; returns the ORL test accuracies and timings."""
    import keras

    from kerascnn import training, transfer
    from kerascnn.data import make_dataset, scan_folder, stratified_split
    from kerascnn.models.registry import create_model, model_info

    out = Path(out)
    mode = model_info(model).preprocessing
    read = dict(image_size=image_size, batch_size=batch_size, preprocessing=mode, cache=True)
    shape = (image_size, image_size, 3)
    result: dict[str, float] = {}

    # 1. pretraining on LFW identities
    start = time.perf_counter()
    lfw = _cap_per_class(scan_folder(lfw_dir, min_images_per_class=min_images), max_images)
    keras.utils.set_random_seed(seed)
    pretrained = create_model(model, input_shape=shape, classes=lfw.num_classes)
    lfw_ds = make_dataset(lfw, shuffle=True, seed=seed, augment="light", **read)
    training.fit(pretrained, lfw_ds, epochs=pretrain_epochs, run_dir=out / "pretrain", learning_rate=2e-3,
                 patience=None, verbose=verbose)
    result.update(lfw_people=lfw.num_classes, lfw_images=len(lfw), pretrain_s=time.perf_counter() - start)

    # 2. the few-shot task: ORL, `shots` images per identity for training
    orl = scan_folder(orl_dir)
    per_class = len(orl) // orl.num_classes
    orl_train, orl_test = stratified_split(orl, (shots / per_class, 1 - shots / per_class), seed)
    train_ds = make_dataset(orl_train, shuffle=True, seed=seed, augment="light", **read)
    test_ds = make_dataset(orl_test, **read)
    epochs = head_epochs + finetune_epochs

    # 3. fine-tuning the saved network
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    tuned = transfer.build_finetune_model(out / "pretrain" / "model.keras", orl.num_classes, dropout=0.2)
    transfer.finetune(tuned, train_ds, head_epochs=head_epochs, finetune_epochs=finetune_epochs,
                      head_lr=3e-3, finetune_lr=3e-4, unfreeze_stages=2, verbose=verbose)
    result["finetuned_accuracy"] = float(tuned.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"])
    result["finetune_s"] = time.perf_counter() - start

    # 4. the same architecture from scratch, same images, same number of epochs
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    scratch = create_model(model, input_shape=shape, classes=orl.num_classes)
    training.compile_model(scratch, learning_rate=2e-3, optimizer="adam")
    scratch.fit(train_ds, epochs=epochs, verbose=verbose, shuffle=False)  # the dataset shuffles
    result["scratch_accuracy"] = float(scratch.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"])
    result["scratch_s"] = time.perf_counter() - start
    result.update(orl_train_images=len(orl_train), orl_test_images=len(orl_test), epochs=epochs)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", default=str(SHARED / "data" / "lfw" / "images"))
    parser.add_argument("--orl", default=str(SHARED / "data" / "orl"))
    parser.add_argument("--out", default="runs/finetune_lfw_to_orl")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--min-images", type=int, default=20, help="LFW people with at least this many images")
    parser.add_argument("--max-images", type=int, default=None, help="at most this many images per LFW person")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--head-epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--shots", type=int, default=3, help="ORL training images per identity")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.lfw, args.orl, args.out, args.model, args.image_size, args.min_images, args.max_images,
                 args.pretrain_epochs, args.head_epochs, args.finetune_epochs, args.shots, seed=args.seed)
    print(f"pretraining: {result['lfw_people']} LFW people, {result['lfw_images']} images, "
          f"{args.pretrain_epochs} epochs, {result['pretrain_s']:.0f} s")
    print(f"ORL: {result['orl_train_images']} training images ({args.shots} per identity), "
          f"{result['orl_test_images']} test images, {result['epochs']} epochs each")
    print(f"fine-tuned from LFW: test accuracy {result['finetuned_accuracy']:.3f} ({result['finetune_s']:.0f} s)")
    print(f"from scratch:        test accuracy {result['scratch_accuracy']:.3f} ({result['scratch_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
