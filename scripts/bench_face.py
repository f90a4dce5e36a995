#!/usr/bin/env python3
"""Benchmark the face tools: enrollment throughput by stage, identification latency by gallery size.

Enrollment (real LFW images): read, detect, align, embed, store, each timed on its own over the
same images, and end to end; the embedding stage is compared with ``model.predict`` on the same
crops (the reference measured in the same run). Identification: galleries of random unit
templates (``--sizes``, default 10^4, 10^5, 10^6), one query and a batch of 1,000, through
``Gallery.search`` (one query: the int8 scan with float32 re-ranking, and the float32 product;
a batch: the float32 product) against a bare NumPy ``q @ T.T`` + top-1 on the same matrix, with
the recall@1 of the gallery against that product and the memory per template; and the gallery's
faiss index with its recall@1, when faiss is installed. Store throughput: enrollments per second
with 1, 2 and 4 concurrent writer processes (``--writers``) into SQLite, and into PostgreSQL when
``--postgres URL`` names a server where that user may create databases; with ``--postgres``,
also the time a search process takes to load a PostgreSQL gallery of each size.

Descriptor: the default (dlib) model's descriptor through Keras in float32 and bfloat16, against
dlib's own ``compute_face_descriptor`` on the same chips (``--descriptor-count``).

Reference for the whole enrollment: when dlib is installed (the ``teacher`` extra), the
face_recognition recipe (dlib's HOG detector with one upsampling, 5-point landmarks, the ResNet
descriptor) runs on the same photos in the same run, and the report gives kerascnn's end-to-end
rate over dlib's. dlib uses one core; pass ``--threads 1`` to hold kerascnn (TensorFlow and
OpenCV) to one core too, for a per-core comparison.

Usage:
    python3 scripts/bench_face.py [--images ../shared/data/lfw/images] [--count 200] \\
        [--detector-model ../shared/models/face_detection_yunet_2026may.onnx] [--model M.keras] \\
        [--sizes 10000 100000 1000000] [--threads 1] [--dlib-count 40] \\
        [--writers 1 2 4] [--enrollments 500] [--postgres postgresql://user:pw@host/postgres]

``--sizes`` (or ``--writers``) with no number skips identification (or the store throughput);
``--skip-enrollment`` skips enrollment.

Without ``--model`` the default face model is used (``--model small`` for the small one).
``KERASCNN_SMALL=1`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SMALL = os.environ.get("KERASCNN_SMALL") == "1"


def _timed(fn, repeat: int = 1):
    """(result, median seconds) of ``fn()`` over ``repeat`` runs."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, float(np.median(times))


def bench_dlib(paths) -> dict | None:
    """Images/s of dlib's face_recognition recipe on ``paths`` (``None`` without dlib).

    Per image: read, HOG detection with one upsampling (face_recognition's default), the largest
    face's 5 landmarks and chip, the 128-d descriptor; nothing is stored.
    """
    from kerascnn.data.folders import read_image
    from kerascnn.distillation import DlibTeacher
    from kerascnn.errors import TeacherUnavailableError

    try:
        teacher = DlibTeacher()
        import dlib

        detector = dlib.get_frontal_face_detector()
        teacher.prepare(np.zeros((64, 64, 3), np.uint8), (8, 8, 48, 48))  # load the model files
        teacher.describe(np.zeros((1, 150, 150, 3), np.uint8))
    except (TeacherUnavailableError, ImportError) as exc:
        print(f"note: dlib reference skipped: {exc}", file=sys.stderr)
        return None
    times = {"detect": 0.0, "landmarks_chip": 0.0, "descriptor": 0.0}
    faces = 0
    start = time.perf_counter()
    for path in paths:
        image = read_image(path)
        t0 = time.perf_counter()
        boxes = detector(image, 1)
        t1 = time.perf_counter()
        times["detect"] += t1 - t0
        if not boxes:
            continue
        r = max(boxes, key=lambda b: b.width() * b.height())
        chip = teacher.prepare(image, (r.left(), r.top(), r.width(), r.height()))
        t2 = time.perf_counter()
        teacher.describe(chip[None])
        times["landmarks_chip"] += t2 - t1
        times["descriptor"] += time.perf_counter() - t2
        faces += 1
    total = time.perf_counter() - start
    return {
        "images": len(paths),
        "faces": faces,
        "ms_per_image_by_stage": {k: round(1000 * v / len(paths), 1) for k, v in times.items()},
        "images_per_s": round(len(paths) / total, 2),
    }


def bench_enrollment(args) -> dict:
    """Per-stage and end-to-end enrollment time on real images."""
    from kerascnn.data.folders import read_image, scan_folder
    from kerascnn.face.detect import align_detection, select_faces
    from kerascnn.face.faces import Faces
    from kerascnn.face.gallery import Gallery, pipeline_identity
    from kerascnn.face.pipeline import FacePipeline

    # the model by name or path, so that its card's alignment and inference options apply
    pipeline = FacePipeline(detector=args.detector_model or "haar", model=args.model)
    model, model_name = pipeline.model, args.model or "the default face model"
    plain = FacePipeline(detector=pipeline.detector, model=model, flip=False, alignment=pipeline.alignment)
    paths = scan_folder(args.images).paths[:: max(1, 9000 // args.count)][: args.count]
    images, t_read = _timed(lambda: [read_image(p) for p in paths])
    detections, t_detect = _timed(lambda: [pipeline.detector(im) for im in images])
    kept = [(im, d) for im, d in zip(images, detections) if d]

    def align():
        return np.stack([align_detection(im, select_faces(d, im.shape)[0], pipeline.image_size, pipeline.alignment)[0]
                         for im, d in kept])

    crops, t_align = _timed(align)
    pipeline.embed_crops(crops[:2])  # trace once
    embeddings, t_embed = _timed(lambda: pipeline.embed_crops(crops), repeat=3)
    model.predict(crops[:2].astype(np.float32), verbose=0)
    _, t_predict = _timed(lambda: model.predict(crops.astype(np.float32), batch_size=64, verbose=0), repeat=3)
    identity = pipeline_identity(pipeline)
    with tempfile.TemporaryDirectory() as tmp:
        with Gallery(os.path.join(tmp, "bench.db"), identity) as gallery:
            names = [os.path.basename(os.path.dirname(p)) for p, (_, d) in zip(paths, zip(images, detections)) if d]

            def store():
                for name in sorted(set(names)):
                    rows = [i for i, n in enumerate(names) if n == name]
                    gallery.enroll(name, embeddings[rows], model_identity=identity)

            _, t_store = _timed(store)
        end_to_end_paths = paths[: max(8, len(paths) // 4)]
        with Faces(os.path.join(tmp, "e2e.db"), pipeline=pipeline) as faces:
            _, t_e2e = _timed(lambda: faces.enroll("bench", end_to_end_paths, strict=False))
    dlib = bench_dlib(end_to_end_paths[: args.dlib_count]) if args.dlib_count else None
    n, m = len(paths), len(crops)
    stages = {"read": t_read / n, "detect": t_detect / n, "align": t_align / max(m, 1), "embed": t_embed / max(m, 1),
              "store": t_store / max(m, 1)}
    return {
        "model": model_name,
        "detector": repr(pipeline.detector),
        "images": n,
        "faces": m,
        "ms_per_image_by_stage": {k: round(1000 * v, 2) for k, v in stages.items()},
        "images_per_s_sum_of_stages": round(1.0 / sum(stages.values()), 1),
        "images_per_s_end_to_end": round(len(end_to_end_paths) / t_e2e, 1),
        "end_to_end_images": len(end_to_end_paths),
        "embed_images_per_s_tf_function": round(m / t_embed, 1),
        "embed_images_per_s_model_predict": round(m / t_predict, 1),
        "embed_speedup_vs_predict": round(t_predict / t_embed, 2),
        "test_time_flip": pipeline.flip,
        "embeddings_equal_predict (without flip)": bool(np.allclose(
            plain.embed_crops(crops), model.predict(crops.astype(np.float32), verbose=0), atol=1e-4)),
        "threads": args.threads or "all",
        "dlib_reference": dlib or ("skipped (--dlib-count 0)" if not args.dlib_count
                                   else "dlib not installed (pip install -e '.[teacher]'): skipped"),
        "end_to_end_over_dlib": round(len(end_to_end_paths) / t_e2e / dlib["images_per_s"], 1) if dlib else None,
    }


def _random_gallery(path: str, n: int, dim: int, per_identity: int, rng) -> np.ndarray:
    """A gallery of ``n`` random unit templates, ``per_identity`` per name; returns them."""
    from kerascnn.face.gallery import Gallery

    templates = rng.standard_normal((n, dim), dtype=np.float32)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    with Gallery(path, None) as gallery:
        for start in range(0, n, per_identity):
            gallery.enroll(f"id{start // per_identity:07d}", templates[start:start + per_identity])
    return templates


def bench_identification(args) -> list[dict]:
    """Search latency of galleries of random templates: gallery vs bare float32 matmul, exact and faiss.

    The gallery's exact search scans int8 codes and re-ranks in float32 for a few queries
    (``exact_ms_1_query``; ``float32_ms_1_query`` is the same search through the float32 product),
    and multiplies in float32 for a batch; ``exact_recall_at_1_vs_float32`` compares its top-1
    identity with the owner of the bare product's top-1 template.
    """
    from kerascnn.face.gallery import Gallery
    from kerascnn.face.gallery import index as index_module

    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"g{n}.db")
            templates, t_build = _timed(lambda: _random_gallery(path, n, 128, args.per_identity, rng))
            owner = np.arange(n) // args.per_identity
            # probes: noisy copies of templates, so recall is measurable
            picked = rng.integers(0, n, 1000)
            queries = templates[picked] + 0.3 * rng.standard_normal((1000, 128), dtype=np.float32) / np.sqrt(128)
            queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
            row = {"templates": n, "identities": n // args.per_identity, "build_s": round(t_build, 1)}
            with Gallery(path, None, create=False) as gallery:
                _, row["load_s"] = _timed(lambda: gallery.search(queries[:1]))  # the first search loads the index
                row["load_s"] = round(row["load_s"], 1)
                _, t1 = _timed(lambda: gallery.search(queries[:1], k=5), repeat=20)
                (names, _), tb = _timed(lambda: gallery.search(queries, k=5), repeat=3)
                compact = index_module.COMPACT_MAX_QUERIES
                index_module.COMPACT_MAX_QUERIES = 0
                _, t1_f32 = _timed(lambda: gallery.search(queries[:1], k=5), repeat=20)
                index_module.COMPACT_MAX_QUERIES = compact
                (names1, _), _ = _timed(lambda: gallery.search(queries[:8], k=1))
                memory = gallery._cache.bytes_per_template
                with Gallery(path, None, create=False) as writer:  # another connection changes the gallery
                    writer.enroll("newcomer", templates[:args.per_identity])
                    _, t_enrolled = _timed(lambda: gallery.search(queries[:1], k=5))  # reads the newcomer only
                    writer.remove("newcomer")
                    _, t_removed = _timed(lambda: gallery.search(queries[:1], k=5))  # drops its rows
                row["search_after_another_enrollment_ms"] = round(1000 * t_enrolled, 1)
                row["search_after_another_removal_ms"] = round(1000 * t_removed, 1)
            row["exact_ms_1_query"] = round(1000 * t1, 2)
            row["float32_ms_1_query"] = round(1000 * t1_f32, 2)
            row["exact_ms_1000_queries"] = round(1000 * tb, 1)
            row["exact_recall_at_1"] = float(np.mean(names[:, 0] == np.array([f"id{o:07d}" for o in owner[picked]])))
            _, r1 = _timed(lambda: np.argmax(queries[:1] @ templates.T, axis=1), repeat=20)
            best, rb = _timed(lambda: np.argmax(queries @ templates.T, axis=1), repeat=3)
            reference = np.array([f"id{o:07d}" for o in owner[best]], dtype=object)
            row["exact_recall_at_1_vs_float32"] = float(np.mean(names[:, 0] == reference))
            row["compact_recall_at_1_vs_float32_8_queries"] = float(np.mean(names1[:, 0] == reference[:8]))
            row["numpy_matmul_ms_1_query"] = round(1000 * r1, 2)
            row["numpy_matmul_ms_1000_queries"] = round(1000 * rb, 1)
            row["gallery_over_matmul_1"] = round(t1 / r1, 2)
            row["gallery_over_matmul_1000"] = round(tb / rb, 2)
            row["bytes_per_template"] = {**memory, "numpy_float32": 4 * 128}
            try:
                import faiss  # noqa: F401
            except ImportError:
                row["faiss"] = "not installed (pip install faiss-cpu): skipped"
            else:
                with Gallery(path, None, create=False, index="faiss") as gallery:
                    gallery.search(queries[:1])
                    _, f1 = _timed(lambda: gallery.search(queries[:1], k=5), repeat=20)
                    (fnames, _), fb = _timed(lambda: gallery.search(queries, k=5), repeat=3)
                row["faiss_ms_1_query"] = round(1000 * f1, 2)
                row["faiss_ms_1000_queries"] = round(1000 * fb, 1)
                row["faiss_recall_at_1_vs_exact"] = float(np.mean(fnames[:, 0] == names[:, 0]))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


def bench_descriptor(args) -> dict:
    """The dlib model's descriptor in Keras (float32, bfloat16) against dlib's on the same chips.

    The chips are the face pipeline's aligned 150x150 crops of LFW photos; dlib's
    ``compute_face_descriptor`` takes each chip as it is. Keras runs through a ``tf.function``
    on batches of ``--descriptor-batch`` chips. bfloat16 is the same model built under the
    ``mixed_bfloat16`` policy with the same weights; it is worth using only where its
    descriptors stay within 1e-3 of float32's.
    """
    import keras
    import tensorflow as tf

    import kerascnn
    from kerascnn.data.folders import scan_folder
    from kerascnn.face.pipeline import FacePipeline

    pipeline = FacePipeline(detector=args.detector_model or "haar", model="dlib")
    paths = scan_folder(args.images).paths[::max(1, 9000 // args.descriptor_count)][:args.descriptor_count]
    batch = pipeline.embed_images(paths, progress=False, keep_crops=True)
    chips = batch.crops[batch.ok].astype(np.float32)
    n, size = len(chips), args.descriptor_batch

    def keras_rate(model) -> tuple[np.ndarray, float]:
        fn = tf.function(lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec((None, 150, 150, 3), tf.float32)])
        fn(chips[:size])  # trace
        run = lambda: np.concatenate([np.asarray(fn(chips[i:i + size]), np.float32) for i in range(0, n, size)])  # noqa: E731
        out, seconds = _timed(run, repeat=3)
        return out, seconds / n

    f32 = kerascnn.create_model("dlib_resnet29", weights="dlib")
    out32, t32 = keras_rate(f32)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        bf16 = kerascnn.create_model("dlib_resnet29")
    finally:
        keras.config.set_dtype_policy(previous)
    bf16.set_weights(f32.get_weights())
    out16, t16 = keras_rate(bf16)
    cosine = np.sum(out16 * out32, 1) / (np.linalg.norm(out16, axis=1) * np.linalg.norm(out32, axis=1))
    report = {
        "chips": n, "batch": size, "threads": args.threads or "all",
        "keras_float32_ms_per_chip": round(1000 * t32, 2),
        "keras_bfloat16_ms_per_chip": round(1000 * t16, 2),
        "bfloat16_max_abs_diff": float(np.abs(out16 - out32).max()),
        "bfloat16_min_cosine": float(cosine.min()),
        "bfloat16_usable (diff <= 1e-3)": bool(np.abs(out16 - out32).max() <= 1e-3),
    }
    try:
        import dlib

        from kerascnn.models.dlib_resnet import dlib_file

        net = dlib.face_recognition_model_v1(str(dlib_file()))
        uint8 = chips.astype(np.uint8)
        net.compute_face_descriptor(np.ascontiguousarray(uint8[0]))
        ref, t_dlib = _timed(lambda: np.array([net.compute_face_descriptor(np.ascontiguousarray(c)) for c in uint8]))
        report.update(dlib_ms_per_chip=round(1000 * t_dlib / n, 2),
                      keras_float32_over_dlib=round(t_dlib / n / t32, 1),
                      keras_vs_dlib_max_abs_diff=float(np.abs(out32 - ref).max()))
    except (ImportError, FileNotFoundError) as exc:
        report["dlib_reference"] = f"skipped: {exc}"
    return report


def _enroll_worker(location: str, tag: int, count: int, results) -> None:
    """One writer process: ``count`` enrollments (one transaction each, 2 templates of 128-d)."""
    from kerascnn.face.gallery import Gallery

    rng = np.random.default_rng(tag)
    batches = rng.standard_normal((count, 2, 128), dtype=np.float32)
    with Gallery(location, None, timeout=120) as gallery:
        start = time.time()
        for i in range(count):
            gallery.enroll(f"w{tag}-{i:06d}", batches[i])
        results.put((start, time.time()))


def bench_writers(args) -> list[dict]:
    """Enrollments per second with 1, 2, 4 concurrent writer processes: SQLite, and PostgreSQL
    when ``--postgres`` names a server (each run gets a new database, dropped afterwards)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no inherited TensorFlow state
    stores = ["sqlite"] + (["postgresql"] if args.postgres else [])
    rows = []
    for store in stores:
        for writers in args.writers:
            with tempfile.TemporaryDirectory() as tmp:
                if store == "sqlite":
                    location, drop = os.path.join(tmp, "w.db"), None
                else:
                    location, drop = _new_database(args.postgres, f"kerascnn_bench_w{writers}")
                from kerascnn.face.gallery import Gallery

                Gallery(location, None).close()  # the schema, before the writers race
                results = context.Queue()
                procs = [context.Process(target=_enroll_worker, args=(location, w, args.enrollments, results))
                         for w in range(writers)]
                for p in procs:
                    p.start()
                spans = [results.get(timeout=600) for _ in procs]
                for p in procs:
                    p.join()
                with Gallery(location, None, create=False) as gallery:
                    assert len(gallery) == 2 * writers * args.enrollments  # nothing lost
                if drop:
                    drop()
            wall = max(e for _, e in spans) - min(s for s, _ in spans)
            total = writers * args.enrollments
            row = {"store": store, "writers": writers, "enrollments": total, "templates": 2 * total,
                   "enrollments_per_s": round(total / wall, 1)}
            if store == "postgresql":
                row["server"] = _server_settings(args.postgres)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


def bench_postgres_load(args) -> list[dict]:
    """Seconds for a search process to load a PostgreSQL gallery of ``n`` random templates (its
    first search), for each of ``--sizes``; the rows are written with COPY, not through enroll."""
    import psycopg

    from kerascnn.face.gallery import Gallery

    rng = np.random.default_rng(1)
    rows = []
    for n in args.sizes:
        location, drop = _new_database(args.postgres, f"kerascnn_bench_load{n}")
        Gallery(location, None).close()
        templates = rng.standard_normal((n, 128), dtype=np.float32)
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("UPDATE metadata SET value = '128' WHERE key = 'embedding_dim'")
            with conn.cursor().copy("COPY identities (id, name, created) FROM STDIN") as copy:
                for i in range(0, n, args.per_identity):
                    copy.write_row((i // args.per_identity + 1, f"id{i // args.per_identity:07d}", "t"))
            with conn.cursor().copy("COPY templates (identity_id, embedding, created) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((i // args.per_identity + 1, templates[i].tobytes(), "t"))
        with Gallery(location, None, create=False, read_only=True) as gallery:
            _, t_load = _timed(lambda: gallery.search(templates[:1]))
        drop()
        row = {"store": "postgresql", "templates": n, "load_s": round(t_load, 1),
               "server": _server_settings(args.postgres)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def _server_settings(url: str) -> dict:
    """The PostgreSQL settings that decide what a commit costs."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {key: conn.execute(f"SHOW {key}").fetchone()[0] for key in ("fsync", "synchronous_commit")}


def _new_database(admin_url: str, name: str):
    """(URL of a new empty database ``name`` on the server of ``admin_url``, a function dropping it)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")

    def drop():
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


def _limit_threads(n: int) -> None:
    """Hold TensorFlow (before its first op) and OpenCV to ``n`` threads."""
    import cv2
    import tensorflow as tf

    cv2.setNumThreads(n)
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="../shared/data/lfw/images", help="identity/image folder of photos")
    parser.add_argument("--count", type=int, default=16 if SMALL else 200, help="photos to enroll")
    parser.add_argument("--model", help="face model: a shipped model's name or a .keras (default: the default model)")
    parser.add_argument("--detector-model", default=os.environ.get("KERASCNN_DETECTOR_MODEL"),
                        help="YuNet .onnx (default: Haar cascades)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000] if SMALL else [10_000, 100_000, 1_000_000])
    parser.add_argument("--per-identity", type=int, default=10, help="templates per identity in the galleries")
    parser.add_argument("--skip-enrollment", action="store_true")
    parser.add_argument("--writers", type=int, nargs="*", default=[1, 2] if SMALL else [1, 2, 4],
                        help="concurrent writer processes for the store throughput (none: skip it)")
    parser.add_argument("--enrollments", type=int, default=50 if SMALL else 500,
                        help="enrollments (transactions of 2 templates) per writer")
    parser.add_argument("--postgres", metavar="URL",
                        help="PostgreSQL URL of a user who may create databases (adds its writer throughput)")
    parser.add_argument("--threads", type=int, help="CPU threads for TensorFlow and OpenCV (default: all)")
    parser.add_argument("--dlib-count", type=int, default=4 if SMALL else 40,
                        help="photos for the dlib reference (0: skip it)")
    parser.add_argument("--descriptor-count", type=int, default=8 if SMALL else 100,
                        help="chips for the descriptor benchmark, Keras vs dlib (0: skip it)")
    parser.add_argument("--descriptor-batch", type=int, default=5, help="chips per Keras call there")
    args = parser.parse_args(argv)
    if args.threads:
        _limit_threads(args.threads)
    report = {}
    if args.descriptor_count:
        report["descriptor"] = bench_descriptor(args)
        print(json.dumps(report["descriptor"]), file=sys.stderr)
    if not args.skip_enrollment:
        report["enrollment"] = bench_enrollment(args)
        print(json.dumps(report["enrollment"]), file=sys.stderr)
    report["identification"] = bench_identification(args)
    if args.writers:
        report["store_writers"] = bench_writers(args)
    if args.postgres and args.sizes:
        report["postgres_load"] = bench_postgres_load(args)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
