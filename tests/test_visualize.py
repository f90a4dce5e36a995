"""kerascnn.visualize: shapes, ranges, and one meaningful property per function."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

from kerascnn import visualize

SIZE = 32
SQUARE = 8


def _square_images(n: int, rng: np.random.Generator):
    """Noise images; class 1 has a bright square somewhere (the only thing that decides)."""
    x = rng.uniform(0.0, 0.3, (n, SIZE, SIZE, 1)).astype(np.float32)
    y = rng.integers(0, 2, n)
    corners = rng.integers(0, SIZE - SQUARE, (n, 2))
    for image, label, (r, c) in zip(x, y, corners):
        if label:
            image[r:r + SQUARE, c:c + SQUARE] = 1.0
    return x, y


@pytest.fixture(scope="module")
def square_classifier():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = _square_images(512, rng)
    inputs = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(name="pool1")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalMaxPooling2D(name="gmp")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    x_test, y_test = _square_images(128, np.random.default_rng(1))
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy > 0.95, f"the toy classifier did not learn (accuracy {accuracy:.2f})"
    return model


def _probe(row: int = 4, col: int = 20) -> np.ndarray:
    image = np.random.default_rng(5).uniform(0.0, 0.3, (SIZE, SIZE, 1)).astype(np.float32)
    image[row:row + SQUARE, col:col + SQUARE] = 1.0
    return image


def _inside(heat: np.ndarray, row: int, col: int, margin: int = 2) -> bool:
    r, c = np.unravel_index(np.argmax(heat), heat.shape)
    return row - margin <= r < row + SQUARE + margin and col - margin <= c < col + SQUARE + margin


@pytest.mark.slow
def test_grad_cam_peak_lies_on_the_deciding_square(square_classifier, tmp_path):
    heat = visualize.grad_cam(square_classifier, _probe(), class_index=1)
    assert heat.shape == (SIZE, SIZE)
    assert 0.0 <= heat.min() and heat.max() == pytest.approx(1.0)
    assert _inside(heat, 4, 20)
    # the same at another position: the map follows the object
    assert _inside(visualize.grad_cam(square_classifier, _probe(22, 3), class_index=1, layer_name="conv2"), 22, 3)
    overlay = visualize.overlay_heatmap(_probe()[..., 0], heat, path=tmp_path / "cam.png")
    assert overlay.shape == (SIZE, SIZE, 3) and overlay.dtype == np.uint8
    assert cv2.imread(str(tmp_path / "cam.png")).shape == (SIZE, SIZE, 3)


def test_saliency_is_stronger_on_the_square(square_classifier):
    sal = visualize.saliency_map(square_classifier, _probe(), class_index=1)
    assert sal.shape == (SIZE, SIZE) and 0.0 <= sal.min() <= sal.max() <= 1.0
    mask = np.zeros((SIZE, SIZE), bool)
    mask[4:4 + SQUARE, 20:20 + SQUARE] = True
    assert sal[mask].mean() > 2 * sal[~mask].mean()


def test_occlusion_drops_score_most_over_the_square(square_classifier):
    drops = visualize.occlusion_sensitivity(square_classifier, _probe(), class_index=1, patch=8, stride=4)
    assert drops.shape == (SIZE, SIZE)
    assert _inside(drops, 4, 20, margin=4)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[4:4 + SQUARE, 20:20 + SQUARE] = True
    # covering the square removes the evidence for class 1; covering noise does not
    assert drops[mask].mean() > 0.1 and drops[mask].mean() > 10 * abs(drops[~mask].mean())


def test_activation_maximization_increases_the_objective(square_classifier):
    # the class-1 probability of a noise start grows several-fold
    image, history = visualize.activation_maximization(square_classifier, unit=1, steps=30, learning_rate=0.05)
    assert image.shape == (SIZE, SIZE, 1) and np.isfinite(image).all()
    assert history[-1] > 3 * history[0]
    assert float(square_classifier(image[None])[0, 1]) == pytest.approx(history[-1], rel=0.2)
    # a channel of a conv layer (the most active one on a real probe, so it is not a dead ReLU)
    unit = int(visualize.feature_maps(square_classifier, "conv2", _probe()).mean(axis=(0, 1)).argmax())
    _, history = visualize.activation_maximization(square_classifier, "conv2", unit, steps=20, learning_rate=0.05)
    assert history[-1] > history[0]


def test_classic_kernels_match_opencv_filter2d(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (20, 24)).astype(np.uint8)
    responses = visualize.apply_classic_kernels(grey, path=tmp_path / "kernels.png")
    assert set(responses) == set(visualize.CLASSIC_KERNELS)
    image = grey.astype(np.float32) / 255.0
    for name, kernel in visualize.CLASSIC_KERNELS.items():
        # Conv2D is a cross-correlation with zero padding: filter2D does the same
        expected = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        np.testing.assert_allclose(responses[name], expected, atol=1e-5, err_msg=name)
    assert (tmp_path / "kernels.png").stat().st_size > 1000


def test_vertical_edge_kernel_responds_only_at_the_edge():
    step = np.zeros((16, 16), np.float32)
    step[:, 8:] = 1.0
    response = visualize.apply_classic_kernels(step, ["vertical_edge"])["vertical_edge"]
    interior = response[1:-1]  # rows away from the zero-padded top and bottom
    assert np.abs(interior[:, 7:9]).min() > 0.9
    assert np.abs(interior[:, 1:6]).max() == 0 and np.abs(interior[:, 10:15]).max() == 0


def test_unknown_classic_kernel_is_named():
    with pytest.raises(KeyError, match="laplace"):
        visualize.classic_kernel_layer(["laplace"])


def test_filter_tiles_and_feature_maps(square_classifier, tmp_path):
    tiles = visualize.filter_tiles(square_classifier, path=tmp_path / "filters.png")
    assert tiles.shape == (8, 3, 3, 1) and tiles.min() >= 0 and tiles.max() <= 1
    assert cv2.imread(str(tmp_path / "filters.png")) is not None
    maps = visualize.feature_maps(square_classifier, "conv1", _probe())
    assert maps.shape == (SIZE, SIZE, 8)
    expected = keras.Model(square_classifier.inputs, square_classifier.get_layer("conv1").output)(_probe()[None])
    np.testing.assert_allclose(maps, np.asarray(expected)[0], rtol=1e-6)
    visualize.plot_feature_maps(maps, tmp_path / "maps.png")
    assert cv2.imread(str(tmp_path / "maps.png")) is not None


def test_rgb_filters_are_colour_tiles():
    layer = keras.layers.Conv2D(4, 5)
    layer.build((None, 8, 8, 3))
    tiles = visualize.filter_tiles(layer)
    assert tiles.shape == (4, 5, 5, 3)
    for tile in tiles:
        assert tile.min() == pytest.approx(0.0) and tile.max() == pytest.approx(1.0)


def test_pca_projection_separates_two_identities(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (20, 16)) + np.eye(16)[0]
    b = rng.normal(0, 0.05, (20, 16)) + np.eye(16)[1]
    points = visualize.project_embeddings(np.vstack([a, b]))
    assert points.shape == (40, 2)
    # the first principal axis carries the identity difference
    assert (np.sign(points[:20, 0]) != np.sign(points[20:, 0][:, None])).all()
    assert points[:, 0].var() > points[:, 1].var()
    labels = ["a"] * 20 + ["b"] * 20
    visualize.plot_embeddings(points, labels, tmp_path / "emb.png")
    assert cv2.imread(str(tmp_path / "emb.png")) is not None
    with pytest.raises(ValueError, match="pca"):
        visualize.project_embeddings(np.vstack([a, b]), method="umap")


def test_tsne_projection_when_sklearn_is_installed():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    points = visualize.project_embeddings(rng.normal(size=(30, 8)), method="tsne")
    assert points.shape == (30, 2) and np.isfinite(points).all()


def test_nearest_neighbors_against_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    probes, gallery = rng.normal(size=(3, 8)), rng.normal(size=(10, 8))
    idx, dist = visualize.nearest_neighbors(probes, gallery, k=4)
    for p in range(3):
        brute = np.linalg.norm(gallery - probes[p], axis=1)
        np.testing.assert_array_equal(idx[p], np.argsort(brute)[:4])
        np.testing.assert_allclose(dist[p], np.sort(brute)[:4], rtol=1e-4)
    images = rng.integers(0, 255, (10, 12, 12)).astype(np.uint8)
    visualize.plot_neighbor_gallery(images[:3], images, idx, dist, tmp_path / "nn.png",
                                    probe_labels=[0, 1, 2], gallery_labels=list(range(10)))
    assert cv2.imread(str(tmp_path / "nn.png")) is not None


def test_tile_images_layout():
    images = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)
    grid = visualize.tile_images(images, columns=3, pad=1)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1)
    np.testing.assert_array_equal(grid[3:5, 4:7], images[4])


# --- ReLU backward rules, DeepDream, top patches -----------------------------------------------


def _relu_mlp(seed: int = 3):
    """input (1, 1, 4) -> Dense(5, relu) -> Dense(5) -> ReLU layer -> Dense(3, softmax), and its weights."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((1, 1, 4))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(5, activation="relu", name="d1")(h)
    h = keras.layers.Dense(5, name="d2")(h)
    h = keras.layers.ReLU(name="r2")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs)
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(weights)
    return model, weights


def _numpy_backward(weights, x, c, rule):
    """The input signal of class c's logit, back-propagated through the MLP by hand."""
    w1, b1, w2, b2, w3, _ = weights
    z1 = x @ w1 + b1
    z2 = np.maximum(z1, 0) @ w2 + b2
    relu_back = {
        "vanilla": lambda g, z: g * (z > 0),
        "guided": lambda g, z: g * (z > 0) * (g > 0),
        "deconvnet": lambda g, z: np.maximum(g, 0),
    }[rule]
    g = relu_back(w3[:, c], z2)
    g = relu_back(w2 @ g, z1)
    return w1 @ g


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_relu_backward_rules_match_numpy(rule):
    model, weights = _relu_mlp()
    function = visualize.guided_backprop if rule == "guided" else visualize.deconvnet_saliency
    differs = False
    for seed in range(4):
        x = np.random.default_rng(seed).normal(size=(1, 1, 4)).astype(np.float32)
        for c in range(3):
            expected = _numpy_backward(weights, x.ravel(), c, rule)
            np.testing.assert_allclose(function(model, x, c).ravel(), expected, rtol=1e-4, atol=1e-5)
            differs |= not np.allclose(expected, _numpy_backward(weights, x.ravel(), c, "vanilla"), atol=1e-4)
    assert differs, "the test inputs never exercise the rule (same as the plain gradient)"
    # the model itself is unchanged: its ReLUs and softmax are the ordinary ones
    assert model.get_layer("d1").activation is keras.activations.relu
    assert isinstance(model.get_layer("r2"), keras.layers.ReLU)
    assert model.get_layer("out").activation is keras.activations.softmax


def test_relu_rules_reach_into_nested_models():
    model, weights = _relu_mlp()
    inputs = keras.Input((1, 1, 4))
    outer = keras.Model(inputs, model(inputs))
    x = np.random.default_rng(0).normal(size=(1, 1, 4)).astype(np.float32)
    np.testing.assert_allclose(visualize.guided_backprop(outer, x, 1).ravel(),
                               _numpy_backward(weights, x.ravel(), 1, "guided"), rtol=1e-4, atol=1e-5)


def test_guided_grad_cam_lies_on_the_square(square_classifier):
    image = _probe()
    ggc = visualize.guided_grad_cam(square_classifier, image, class_index=1)
    guided = visualize.guided_backprop(square_classifier, image, class_index=1)
    cam = visualize.grad_cam(square_classifier, image, class_index=1)
    assert ggc.shape == image.shape
    np.testing.assert_allclose(ggc, guided * cam[..., None], rtol=1e-5, atol=1e-7)
    energy = np.abs(ggc[..., 0])
    mask = np.zeros((SIZE, SIZE), bool)
    mask[2:6 + SQUARE, 18:22 + SQUARE] = True  # the square and a 2-pixel rim (its edges decide)
    assert energy[mask].sum() > 0.8 * energy.sum()


def test_deep_dream_raises_the_objective():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    model = keras.Model(inputs, h)
    image = np.random.default_rng(0).uniform(0, 1, (40, 40, 3)).astype(np.float32)
    dream, history = visualize.deep_dream(model, ["c1", "c2"], image, octaves=3, steps=8, step_size=0.05, jitter=4)
    assert dream.shape == image.shape and len(history) == 24
    objective = lambda x: sum(float(np.mean(visualize.feature_maps(model, n, x))) for n in ("c1", "c2"))
    assert objective(dream) > 1.5 * objective(image)
    for octave in range(3):  # it rises within each octave
        assert history[8 * octave + 7] > history[8 * octave]


def test_unknown_layer_lists_candidates(square_classifier):
    from kerascnn.errors import LayerNotFoundError

    with pytest.raises(LayerNotFoundError, match=r"no layer named 'conv3'.*did you mean.*conv1.*Its layers: .*gmp"):
        visualize.deep_dream(square_classifier, "conv3", _probe())
    with pytest.raises(LayerNotFoundError, match="conv9"):
        visualize.grad_cam(square_classifier, _probe(), layer_name="conv9")


def test_top_activating_patches_over_a_folder(tmp_path):
    # unit 0 reads the pixel under its 5x5 window's centre; unit 1 is a random filter
    inputs = keras.Input((24, 24, 1))
    conv = keras.layers.Conv2D(2, 5, padding="same", use_bias=False, name="conv")
    model = keras.Model(inputs, keras.layers.GlobalMaxPooling2D()(conv(inputs)))
    kernel = np.zeros((5, 5, 1, 2), np.float32)
    kernel[2, 2, 0, 0] = 1.0
    kernel[..., 1] = np.random.default_rng(0).normal(size=(5, 5, 1))
    conv.set_weights([kernel])
    rng = np.random.default_rng(1)
    spots = {}
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            image = rng.integers(0, 100, (24, 24), dtype=np.uint8)
            r, c = rng.integers(0, 24, 2)
            image[r, c] = 150 + 20 * i + (cls == "b") * 5  # one bright pixel, brightness known
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), image)
            spots[f"{cls}/{i}"] = (r, c, image)
    patches, scores, where = visualize.top_activating_patches(model, "conv", 0, tmp_path, k=3, batch_size=4,
                                                              path=tmp_path / "top.png")
    assert patches.shape == (3, 5, 5, 1)
    names = [f"{cls}/{i}" for cls in ("a", "b") for i in range(5)]
    brightest = sorted(names, key=lambda n: -int(spots[n][2][spots[n][0], spots[n][1]]))[:3]
    assert [names[w[0]] for w in where] == brightest
    for (index, r, c), patch, score in zip(where, patches, scores):
        row, col, image = spots[names[index]]
        assert (r, c) == (row, col)
        assert patch[2, 2, 0] == image[row, col] == pytest.approx(score * 255, abs=1e-3)
        expected = np.pad(image, 2)[row:row + 5, col:col + 5]  # zero-padded receptive field
        np.testing.assert_array_equal(patch[..., 0], expected)
    assert cv2.imread(str(tmp_path / "top.png")) is not None
    # the random unit: scores equal a brute-force max over each image's feature map
    images = np.stack([spots[n][2] for n in names])[..., None].astype(np.float32)
    _, scores, where = visualize.top_activating_patches(model, "conv", 1, images / 255.0, k=10)
    brute = [visualize.feature_maps(model, "conv", x)[..., 1].max() for x in images / 255.0]
    np.testing.assert_allclose(scores, np.sort(brute)[::-1], rtol=1e-5)
    assert sorted(w[0] for w in where) == list(range(10))


@pytest.mark.slow
def test_relu_rule_clone_of_a_registry_model_computes_the_same_function():
    import kerascnn

    model = kerascnn.create_model("resnet18", input_shape=(32, 32, 3), classes=4, weights=None)
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    for rule in ("guided", "deconvnet"):
        logits = np.asarray(visualize._with_relu_rule(model, rule)(x, training=False))
        np.testing.assert_allclose(keras.ops.softmax(logits), model(x, training=False), rtol=1e-4, atol=1e-6)
    signal = visualize.guided_backprop(model, x[0])
    assert signal.shape == (32, 32, 3) and np.abs(signal).max() > 0
