"""FacePipeline: images (paths or arrays) to embeddings, per-item status, batching."""

from __future__ import annotations

import numpy as np
import pytest

from _face_helpers import BOX, EYES, tiny_embedder, two_faces
from kerascnn.data.folders import read_image
from kerascnn.errors import FaceModelError, ImageReadError, ImageTooLargeError, MultipleFacesError, NoFaceError
from kerascnn.face.pipeline import FacePipeline


@pytest.fixture
def model():
    return tiny_embedder(32)


@pytest.fixture
def images(lfw_dir, orl_dir):
    return [str(lfw_dir / EYES[0]), str(lfw_dir / BOX[0]), str(orl_dir / "s1" / "1.pgm")]


def test_embed_paths_unit_vectors_status_and_alignment(model, images, yunet_path):
    batch = FacePipeline(detector="haar", model=model).embed_images(images, progress=False, keep_crops=True)
    assert batch.embeddings.shape == (3, 16) and batch.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.embeddings, axis=1), 1.0, atol=1e-5)
    assert batch.ok.all() and [r.index for r in batch.results] == [0, 1, 2]
    assert [r.alignment for r in batch.results] == ["eyes", "box", "eyes"]
    assert [r.source for r in batch.results] == images
    assert batch.crops.shape == (3, 32, 32, 3) and batch.crops.dtype == np.uint8
    yunet = FacePipeline(detector=yunet_path, model=model).embed_images(images, progress=False)
    assert [r.alignment for r in yunet.results] == ["landmarks"] * 3


def test_embeddings_equal_model_predict_on_the_crops(model, images):
    pipeline = FacePipeline(detector="haar", model=model, batch_size=2)
    batch = pipeline.embed_images(images, progress=False, keep_crops=True)
    expected = model.predict(batch.crops.astype(np.float32), verbose=0)
    np.testing.assert_allclose(batch.embeddings, expected, atol=1e-5)
    # the batch split does not change anything
    whole = FacePipeline(detector="haar", model=model, batch_size=64).embed_crops(batch.crops)
    np.testing.assert_allclose(whole, batch.embeddings, atol=1e-5)


def test_errors_do_not_stop_the_batch_unless_strict(model, images, tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    blank = np.full((120, 120, 3), 90, np.uint8)
    inputs = [images[0], str(not_image), blank, str(tmp_path / "missing.png"), images[2]]
    pipeline = FacePipeline(detector="haar", model=model)
    batch = pipeline.embed_images(inputs, progress=False)
    assert batch.ok.tolist() == [True, False, False, False, True]
    assert np.isnan(batch.embeddings[~batch.ok]).all() and np.isfinite(batch.embeddings[batch.ok]).all()
    errors = {r.index: r for r in batch.errors}
    assert isinstance(errors[1].error, ImageReadError) and f"cannot decode {not_image}" in errors[1].message
    assert isinstance(errors[2].error, NoFaceError) and errors[2].message == "no face found in array[2]"
    assert "No such file" in errors[3].message and errors[3].to_dict()["error_type"] == "ImageReadError"
    assert batch.failure_count() == 3
    # the good rows are what the good images give alone
    alone = pipeline.embed_images([images[0], images[2]], progress=False)
    np.testing.assert_allclose(batch.embeddings[batch.ok], alone.embeddings, atol=1e-5)
    with pytest.raises(ImageReadError, match="cannot decode"):
        pipeline.embed_images(inputs, progress=False, strict=True)


def test_grey_rgba_and_array_inputs_give_the_same_embedding(model, lfw_dir):
    rgb = read_image(lfw_dir / EYES[1])
    rgba = np.concatenate([rgb, np.zeros(rgb.shape[:2] + (1,), np.uint8)], axis=2)
    batch = FacePipeline(detector="haar", model=model).embed_images(
        [str(lfw_dir / EYES[1]), rgb, rgba, rgb.mean(axis=2).astype(np.uint8)], progress=False)
    assert batch.ok.all()
    np.testing.assert_allclose(batch.embeddings[1], batch.embeddings[0], atol=1e-6)
    np.testing.assert_allclose(batch.embeddings[2], batch.embeddings[0], atol=1e-6)
    assert batch.results[3].detection is not None  # the grey one found its face too


def test_one_channel_model(lfw_dir):
    model = tiny_embedder(24, channels=1)
    batch = FacePipeline(detector="haar", model=model).embed_images([str(lfw_dir / EYES[0])], progress=False)
    assert batch.ok.all() and batch.embeddings.shape == (1, 16)


def test_select_all_and_single(model, lfw_dir):
    image, _, _ = two_faces(lfw_dir)
    batch = FacePipeline(detector="haar", model=model, select="all").embed_images([image, image], progress=False)
    assert [r.index for r in batch.results] == [0, 0, 1, 1] and batch.ok.all()
    assert batch.results[0].detection.area > batch.results[1].detection.area
    single = FacePipeline(detector="haar", model=model, single=True).embed_images([image], progress=False)
    assert isinstance(single.results[0].error, MultipleFacesError)
    with pytest.raises(MultipleFacesError):
        FacePipeline(detector="haar", model=model, single=True).embed_one(image)


def test_pixel_cap(model, images):
    batch = FacePipeline(detector="haar", model=model, max_pixels=10_000).embed_images(images[:1], progress=False)
    assert isinstance(batch.results[0].error, ImageTooLargeError)
    assert "250x250 pixels, above the cap of 10,000" in batch.results[0].message


def test_model_from_keras_file_and_bad_model_files(model, images, tmp_path):
    path = tmp_path / "emb.keras"
    model.save(path)
    a = FacePipeline(detector="haar", model=model).embed_images(images[:1], progress=False)
    b = FacePipeline(detector="haar", model=str(path)).embed_images(images[:1], progress=False)
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-6)
    with pytest.raises(FaceModelError, match=f"face model {tmp_path / 'nope.keras'} does not exist"):
        FacePipeline(detector="haar", model=tmp_path / "nope.keras")
    junk = tmp_path / "junk.keras"
    junk.write_text("junk")
    with pytest.raises(FaceModelError, match=f"cannot load face model {junk}"):
        FacePipeline(detector="haar", model=junk)
    with pytest.raises(FaceModelError, match=r"must take \(batch, size, size, 1 or 3\) images, got input shape \(None, 8, 8, 2\)"):
        FacePipeline(detector="haar", model=tiny_embedder(8, channels=2))


def test_progress_bar_on_long_work(model, capsys):
    blanks = [np.full((40, 40, 3), 0, np.uint8)] * 64
    batch = FacePipeline(detector="haar", model=model).embed_images(blanks, progress=True)
    assert batch.failure_count() == 64
    assert "detect+align" in capsys.readouterr().err


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="select must be one of"):
        FacePipeline(detector="haar", model=model, select="biggest")
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        FacePipeline(detector="haar", model=model, batch_size=0)
