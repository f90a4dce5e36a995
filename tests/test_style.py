"""kerascnn.style: Gram matrices against NumPy, the optimisation's effect on a random VGG, bad input."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

from kerascnn import style
from kerascnn.errors import ImageSizeMismatchError, LayerNotFoundError

SIZE = 32


def _images():
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    content = np.stack([yy, xx, np.full_like(yy, 0.5)], -1).astype(np.float32)  # smooth ramps
    stripes = (np.sin(xx * 25 + yy * 10) > 0).astype(np.float32)  # high-frequency diagonal stripes
    return content, np.stack([stripes, 1 - stripes, 0.5 * stripes], -1)


def test_gram_matrix_matches_numpy():
    features = np.random.default_rng(0).normal(size=(2, 5, 4, 3)).astype(np.float32)
    expected = np.stack([f.reshape(-1, 3).T @ f.reshape(-1, 3) / 20 for f in features])
    np.testing.assert_allclose(np.asarray(style.gram_matrix(features)), expected, rtol=1e-5, atol=1e-6)


def test_losses_are_zero_at_their_targets():
    content, stripes = _images()
    transfer = style.StyleTransfer(content, stripes, "vgg16", weights=None)
    assert transfer.losses(content)["content"] == 0.0 and transfer.losses(content)["style"] > 0
    assert transfer.losses(stripes)["style"] == pytest.approx(0.0, abs=1e-6) and transfer.losses(stripes)["content"] > 0


@pytest.mark.slow
def test_style_loss_falls_tenfold_while_content_stays_close(tmp_path):
    keras.utils.set_random_seed(0)  # random VGG-16 features (weights=None): no download
    content, stripes = _images()
    transfer = style.StyleTransfer(content, stripes, "vgg16", weights=None, style_weight=1e-3)
    image, history = transfer.run(steps=80, learning_rate=0.05, path=tmp_path / "styled.png")
    assert image.shape == content.shape and 0.0 <= image.min() and image.max() <= 1.0
    assert len(history["style"]) == 81
    assert history["style"][0] == pytest.approx(transfer.losses(content)["style"], rel=1e-4)
    assert history["style"][-1] < history["style"][0] / 10, history["style"][::10]
    # the result stays nearer the content than the style image itself is (content loss bounded)
    assert history["content"][-1] < transfer.losses(stripes)["content"]
    written = cv2.imread(str(tmp_path / "styled.png"))
    assert written.shape == (SIZE, SIZE, 3)


def test_style_image_of_another_size_is_refused():
    content, stripes = _images()
    with pytest.raises(ImageSizeMismatchError, match=r"style image is \(32, 24\).*content image is \(32, 32\).*resize"):
        style.StyleTransfer(content, stripes[:, :24], "vgg16", weights=None)


def test_unknown_style_layer_lists_candidates():
    content, stripes = _images()
    with pytest.raises(LayerNotFoundError, match=r"'block6_conv1'.*block5_conv1"):
        style.StyleTransfer(content, stripes, "vgg16", weights=None, style_layers=["block1_conv1", "block6_conv1"])
