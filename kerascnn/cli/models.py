"""``kerascnn models``, ``summary`` and ``train``: the model registry and training a registry model."""

from __future__ import annotations

import sys

from kerascnn.cli.common import EXIT_NO_MATCH, EXIT_OK, fraction


def add_commands(sub) -> None:
    """Add ``models``, ``summary`` and ``train`` to the subparsers ``sub``."""
    _add_model_commands(sub)
    _add_training_command(sub)


def _add_model_commands(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list the registered models with their parameters and references",
        description="List the registered models (each is built once to count its parameters).",
    )
    p.add_argument("pattern", nargs="?", default=None, help="shell-style wildcard, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser(
        "summary",
        help="layer table of a model: output shapes, params, FLOPs, receptive field",
        description="Print kerascnn.inspect's layer table of a registered model.",
    )
    p.add_argument("name", help="registered model name (see `kerascnn models`)")
    p.add_argument("--input-shape", nargs=3, type=int, metavar=("H", "W", "C"), default=None,
                   help="input height, width and channels (default: the model's)")
    p.set_defaults(func=_cmd_summary)


def _cmd_models(args) -> int:
    import json

    import keras

    from kerascnn.models.registry import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        print(f"kerascnn models: no model matches {args.pattern!r}; see `kerascnn models`", file=sys.stderr)
        return EXIT_NO_MATCH
    rows = []
    for name in names:
        info = model_info(name)
        with keras.StatelessScope():  # variables are not initialised: shapes are enough to count
            params = info.builder().count_params()
        keras.backend.clear_session()
        rows.append({
            "name": name, "params": params, "input_shape": list(info.default_input_shape),
            "min_input_size": info.min_input_size, "preprocessing": info.preprocessing,
            "feature_info": [dict(f) for f in info.feature_info], "reference": info.reference,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    print(f"{'name'.ljust(width)}  {'params':>12}  {'input':<11}  reference")
    for r in rows:
        shape = "x".join(str(d) for d in r["input_shape"])
        print(f"{r['name'].ljust(width)}  {r['params']:>12,}  {shape:<11}  {r['reference']}")
    return EXIT_OK


def _cmd_summary(args) -> int:
    from kerascnn.inspect import layer_table
    from kerascnn.models.registry import create_model, model_info

    model_info(args.name)  # unknown names fail here, with close matches, before any building
    kwargs = {"input_shape": tuple(args.input_shape)} if args.input_shape else {}
    model = create_model(args.name, **kwargs)
    print(layer_table(model).to_text())
    return EXIT_OK


def _add_training_command(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a registry model on a folder of images (identity/image layout)",
        description="Train a registered model from scratch on DATA/<class>/<image> with a per-class "
        "validation split; saves RUN_DIR/model.keras, best.keras, history.csv, history.png and "
        "class_names.json. Run the same command again to resume an interrupted run.",
    )
    p.add_argument("--model", required=True, help="registered model name (see `kerascnn models`)")
    p.add_argument("--data", required=True, help="dataset folder, one sub-folder per class")
    p.add_argument("--augment", default=None, help="augmentation preset (kerascnn.data.AUGMENTATION_PRESETS)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    p.add_argument("--val-split", type=fraction, default=0.2, help="validation fraction of each class (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, shuffle, augmentation and weights")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (warm-up then cosine)")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
                   help="dtype policy (auto: mixed_float16 on recent GPUs, float32 on CPU)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from kerascnn.training import train_folder

    out = args.out or f"runs/{args.model}"
    _, history = train_folder(
        args.model, args.data, out, augment=args.augment, epochs=args.epochs, image_size=args.image_size,
        batch_size=args.batch_size, val_split=args.val_split, seed=args.seed, learning_rate=args.lr,
        precision=args.precision, patience=args.patience,
    )
    last = {k: v[-1] for k, v in history.history.items() if k != "learning_rate"}
    print(f"saved {out}/model.keras; last epoch: " + ", ".join(f"{k}={v:.4f}" for k, v in last.items()))
    return EXIT_OK
