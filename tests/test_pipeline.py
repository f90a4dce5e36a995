"""tf.data pipelines: decoding, resizing, labels, shuffling, caching, preprocessing, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kerascnn.data import decode_image, make_dataset, preprocess, read_image, scan_folder
from kerascnn.errors import DatasetError, ImageReadError


@pytest.fixture(scope="module")
def orl_small(orl_dir):
    ds = scan_folder(orl_dir, classes=["s1", "s2", "s3"])
    return ds


def _all(ds):
    xs, ys = zip(*ds.as_numpy_iterator())
    return np.concatenate(xs), np.concatenate(ys)


def test_decode_pgm_and_jpeg_like_read_image(orl_small, lfw_dir):
    pgm = orl_small.paths[0]
    jpg = sorted(p for p in (lfw_dir / "Aaron_Peirsol").iterdir())[0]
    for path in (pgm, str(jpg)):
        for channels in (1, 3):
            got = decode_image(tf.constant(path), channels).numpy()
            np.testing.assert_array_equal(got, read_image(path, channels))


def test_make_dataset_at_native_size_equals_files(orl_small):
    ds = make_dataset(orl_small, image_size=(112, 92), batch_size=7)
    x, y = _all(ds)
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (30, 112, 92, 3)
    np.testing.assert_array_equal(y, orl_small.labels)
    for i in (0, 13, 29):
        np.testing.assert_array_equal(x[i], read_image(orl_small.paths[i]).astype(np.float32))


def test_resize_grey_channels_and_batches(orl_small):
    ds = make_dataset(orl_small.paths, image_size=32, batch_size=8, channels=1, drop_remainder=True)
    shapes = [b.shape for b in ds]  # no labels: images only
    assert shapes == [(8, 32, 32, 1)] * 3
    small = tf.image.resize(read_image(orl_small.paths[0], 1), (32, 32), antialias=True).numpy()
    np.testing.assert_allclose(next(iter(ds))[0], np.clip(np.round(small), 0, 255), atol=0)


def test_shuffle_is_seeded_and_changes_each_epoch(orl_small):
    def make():
        return make_dataset(orl_small, image_size=16, batch_size=30, shuffle=True, seed=5, cache=True)

    ds = make()
    (x1, y1), (x2, y2) = _all(ds.take(1)), _all(ds.take(1))
    assert sorted(y1) == sorted(orl_small.labels.tolist()) == sorted(y2)
    assert list(y1) != list(orl_small.labels)  # shuffled
    assert not np.array_equal(x1, x2)  # reshuffled each epoch
    np.testing.assert_array_equal(_all(make().take(1))[0], x1)  # same seed, same order


def test_augmentation_stream_reproducible_when_deterministic(orl_small):
    def make(seed):
        return make_dataset(orl_small, image_size=24, batch_size=10, seed=seed, augment=["flip", "rotation", "pca_lighting"],
                            deterministic_augment=True)

    a, b, c = (_all(make(s))[0] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    plain = _all(make_dataset(orl_small, image_size=24, batch_size=10))[0]
    assert not np.array_equal(a, plain)


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf", "none"])
def test_preprocess_modes_match_formulas(mode):
    rgb = np.random.default_rng(0).uniform(0, 255, (2, 3, 4, 3)).astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = {
        "caffe": rgb[..., ::-1] - np.array([103.939, 116.779, 123.68]),
        "torch": (rgb / 255 - mean) / std,
        "tf": rgb / 127.5 - 1,
        "none": rgb,
    }[mode]
    np.testing.assert_allclose(preprocess(rgb, mode).numpy(), expected, rtol=1e-5, atol=1e-4)
    grey = preprocess(rgb[..., :1], mode).numpy()
    assert grey.shape == (2, 3, 4, 1)
    np.testing.assert_allclose(grey, preprocess(np.repeat(rgb[..., :1], 3, -1), mode).numpy().mean(-1, keepdims=True), atol=1e-4)
    with pytest.raises(ValueError, match="preprocessing mode must be one of .* got 'imagenet'"):
        preprocess(rgb, "imagenet")


def test_make_dataset_applies_preprocessing(orl_small):
    x, _ = _all(make_dataset(orl_small, image_size=(112, 92), batch_size=30, preprocessing="tf"))
    np.testing.assert_allclose(x[0], read_image(orl_small.paths[0]) / 127.5 - 1, atol=1e-6)


@pytest.fixture
def bad_files(tmp_path, orl_small):
    good = read_image(orl_small.paths[0])
    import cv2

    ok = tmp_path / "ok.png"
    cv2.imwrite(str(ok), good)
    data = open(orl_small.paths[0], "rb").read()
    jpeg = cv2.imencode(".jpg", good)[1].tobytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    assert data  # the source exists
    return str(ok), str(truncated), str(text)


def test_bad_file_raises_with_path(bad_files):
    ok, truncated, text = bad_files
    with pytest.raises(ImageReadError, match=f"{truncated}: truncated JPEG"):
        make_dataset([ok, truncated], [0, 1], image_size=8)
    with pytest.raises(ImageReadError, match=f"{text}: not an image"):
        make_dataset([text, ok], [0, 1], image_size=8)


def test_bad_files_skipped_with_warning_naming_them(bad_files):
    ok, truncated, text = bad_files
    with pytest.warns(UserWarning) as record:
        ds = make_dataset([truncated, ok, text], [0, 1, 2], image_size=8, on_error="skip")
    messages = " ".join(str(w.message) for w in record)
    assert truncated in messages and text in messages
    assert _all(ds)[1].tolist() == [1]


def test_damage_inside_a_file_is_named_at_run_time(tmp_path, bad_files):
    ok = bad_files[0]
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50 + b"\xff\xd9")  # passes the cheap check
    with pytest.warns(UserWarning, match="damaged.jpg"):
        ys = _all(make_dataset([str(damaged), ok], [0, 1], image_size=8, on_error="skip"))[1]
    assert ys.tolist() == [1]
    with pytest.raises(tf.errors.OpError, match="damaged.jpg"):
        _all(make_dataset([str(damaged), ok], [0, 1], image_size=8))


def test_dataset_errors(tmp_path, orl_small):
    with pytest.raises(DatasetError, match="has no class sub-folders"):
        make_dataset(tmp_path)
    (tmp_path / "bob").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*bob has no images"):
        make_dataset(tmp_path)
    with pytest.raises(DatasetError, match="empty list of image paths"):
        make_dataset([])
    with pytest.raises(DatasetError, match=r"one label per path \(30\), got labels of shape \(2,\)"):
        make_dataset(orl_small.paths, [0, 1])
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
        make_dataset(orl_small, on_error="ignore")
