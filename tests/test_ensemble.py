"""Fused face models (kerascnn.face.ensemble): several embedders, each with its own alignment, as one model."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from _face_helpers import EYES, run_cli, tiny_embedder
from kerascnn.errors import FaceModelError
from kerascnn.face.align import DEFAULT_TEMPLATE, AlignmentTemplate
from kerascnn.face.ensemble import build_fused_model, fit_fusion_weights, fused_network, member_crops, member_embeddings
from kerascnn.face.gallery import pipeline_identity
from kerascnn.face.model import load_face_model, load_face_model_card
from kerascnn.face.pipeline import FacePipeline
from kerascnn.layers import WeightedConcatenation


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def tiny_members(tmp_path_factory):
    """Two small embedders of different crop sizes and dimensions, saved as .keras (no card)."""
    folder = tmp_path_factory.mktemp("members")
    paths = []
    for size, dim, name in ((32, 16, "tiny_a"), (24, 8, "tiny_b")):
        path = folder / f"{name}.keras"
        tiny_embedder(size, dim=dim, name=name).save(path)
        paths.append(path)
    return paths


def test_weighted_concatenation_cosine_is_the_weighted_mean_of_cosines():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 6)).astype("float32"), rng.normal(size=(5, 3)).astype("float32")
    layer = WeightedConcatenation([3.0, 1.0])  # normalised to 0.75, 0.25
    assert layer.fusion_weights == [0.75, 0.25]
    out = np.asarray(layer([a, b]))
    assert out.shape == (5, 9)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    expected = 0.75 * _unit(a) @ _unit(a).T + 0.25 * _unit(b) @ _unit(b).T
    np.testing.assert_allclose(out @ out.T, expected, atol=1e-6)
    assert [w.name for w in layer.weights] == ["scales"] and not layer.trainable_weights
    for bad in ([], [1.0, -0.5], [0.0, 0.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="fusion_weights"):
            WeightedConcatenation(bad)


def test_fused_network_round_trips_in_safe_mode(tmp_path):
    members = [tiny_embedder(32, dim=16, name="m1"), tiny_embedder(24, dim=8, name="m2")]
    model = fused_network(members, [0.4, 0.6], ["a", "b"])
    assert [x.name for x in model.inputs] == ["a_image", "b_image"] and model.output_shape == (None, 24)
    assert not any(type(layer).__name__ == "Lambda" for layer in model.layers)
    model.save(tmp_path / "f.keras")
    loaded = keras.saving.load_model(tmp_path / "f.keras", safe_mode=True, compile=False)
    rng = np.random.default_rng(1)
    x = [rng.uniform(0, 255, (3, 32, 32, 3)).astype("float32"), rng.uniform(0, 255, (3, 24, 24, 3)).astype("float32")]
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
    # the member slices are sqrt(weight) times each member's own unit embedding
    out = np.asarray(model(x))
    np.testing.assert_allclose(out[:, :16], np.sqrt(0.4) * np.asarray(members[0](x[0])), atol=1e-6)
    np.testing.assert_allclose(out[:, 16:], np.sqrt(0.6) * np.asarray(members[1](x[1])), atol=1e-6)
    with pytest.raises(ValueError, match="two or more members"):
        fused_network(members[:1], [1.0], ["a"])
    with pytest.raises(ValueError, match="names must differ"):
        fused_network(members, [0.5, 0.5], ["a", "a"])


def test_fused_pipeline_aligns_one_crop_per_member(tiny_members, lfw_dir, yunet_path, tmp_path):
    template = AlignmentTemplate(24, DEFAULT_TEMPLATE.landmarks * 24 / 112 * 0.9 + 1.0, DEFAULT_TEMPLATE.eyes * 24 / 112,
                                 DEFAULT_TEMPLATE.box * 24 / 112, "a test template")
    template = AlignmentTemplate.from_dict(template.to_dict())  # as the card stores it (rounded)
    from kerascnn.face.model import update_card

    update_card(tiny_members[1], {"alignment": template.to_dict(), "test_time_flip": "all"})
    try:
        out = build_fused_model(tiny_members, [1.0, 3.0], tmp_path / "fused.keras")
    finally:
        tiny_members[1].with_suffix(".json").unlink()
    card = load_face_model_card(out)
    assert card["kind"] == "fused" and card["output"]["embedding_dim"] == 24
    assert [(m["name"], m["input"], m["size"], m["slice"], m["weight"]) for m in card["members"]] == [
        ("tiny_a", "tiny_a_image", 32, [0, 16], 0.25), ("tiny_b", "tiny_b_image", 24, [16, 24], 0.75)]
    assert card["members"][1]["alignment"] == template.to_dict()
    assert card["members"][0]["alignment"] == DEFAULT_TEMPLATE.to_dict()
    assert card["test_time_flip"] == "none"  # the first member's (no card: none)
    images = [str(lfw_dir / rel) for rel in EYES]
    fused = FacePipeline(detector=yunet_path, model=out, select="central")
    assert [(size, t.to_dict()) for size, t in fused.members] == [(32, DEFAULT_TEMPLATE.to_dict()),
                                                                  (24, template.to_dict())]
    batch = fused.embed_images(images, progress=False, keep_crops=True)
    assert [c.shape for c in batch.crops] == [(3, 32, 32, 3), (3, 24, 24, 3)] and batch.ok.all()
    alone = [FacePipeline(detector=yunet_path, model=path, select="central",
                          alignment=t).embed_images(images, progress=False, keep_crops=True)
             for path, t in zip(tiny_members, (DEFAULT_TEMPLATE, template))]
    for crops, member in zip(batch.crops, alone):
        np.testing.assert_array_equal(crops, member.crops)
    members = member_embeddings(card, batch.embeddings)
    for name, member in zip(("tiny_a", "tiny_b"), alone):
        np.testing.assert_allclose(members[name], member.embeddings, atol=1e-5)
    cosines = batch.embeddings @ batch.embeddings.T
    expected = sum(w * e.embeddings @ e.embeddings.T for w, e in zip((0.25, 0.75), alone))
    np.testing.assert_allclose(cosines, expected, atol=1e-5)
    # embed_crops takes one batch per member; flip="all" mirrors every member's crop
    np.testing.assert_allclose(fused.embed_crops(batch.crops), batch.embeddings, atol=1e-5)
    flipped = FacePipeline(detector=yunet_path, model=out, flip="all")
    mirrored = flipped.embed_crops([c[:, :, ::-1] for c in batch.crops])
    np.testing.assert_allclose(flipped.embed_crops(batch.crops), mirrored, atol=1e-5)


def test_identity_covers_fusion_weights_and_member_alignment(tiny_members, yunet_path, tmp_path):
    first = build_fused_model(tiny_members, [0.5, 0.5], tmp_path / "a.keras")
    second = build_fused_model(tiny_members, [0.6, 0.4], tmp_path / "b.keras")
    ids = [pipeline_identity(FacePipeline(detector="haar", model=path)) for path in (first, second)]
    assert ids[0]["weights_sha256"] != ids[1]["weights_sha256"]
    shifted = AlignmentTemplate(24, DEFAULT_TEMPLATE.landmarks * 24 / 112 + 1.0, DEFAULT_TEMPLATE.eyes * 24 / 112,
                                DEFAULT_TEMPLATE.box * 24 / 112)
    model = load_face_model(first)
    moved = pipeline_identity(FacePipeline(detector="haar", model=model, alignment=[DEFAULT_TEMPLATE, shifted]))
    bare = pipeline_identity(FacePipeline(detector="haar", model=model))
    assert moved["weights_sha256"] == bare["weights_sha256"] and moved["options_sha256"] != bare["options_sha256"]
    assert bare["input_size"] == [32, 32, 3] and bare["embedding_dim"] == 24


def test_fused_model_errors(tiny_members, tmp_path):
    out = build_fused_model(tiny_members, [0.5, 0.5], tmp_path / "fused.keras")
    model = load_face_model(out)
    card = load_face_model_card(out)
    with pytest.raises(ValueError, match="image_size applies to a single model"):
        FacePipeline(detector="haar", model=out, image_size=64)
    with pytest.raises(FaceModelError, match="needs 2 alignment templates, got 1"):
        member_crops(model, {}, [DEFAULT_TEMPLATE])
    swapped = {**card, "members": card["members"][::-1]}
    with pytest.raises(FaceModelError, match="are not the model's inputs"):
        member_crops(model, swapped, where="x.json")
    with pytest.raises(FaceModelError, match="'members' list"):
        member_crops(model, {"model": "x"}, where="x.json")
    broken = {**card, "members": [{**card["members"][0], "slice": [0, 99]}, card["members"][1]]}
    with pytest.raises(FaceModelError, match="no usable slice"):
        member_embeddings(broken, np.zeros((2, 24)))
    with pytest.raises(ValueError, match="fusion_weights"):
        build_fused_model(tiny_members, [0.5, -1.0], tmp_path / "bad.keras")


def test_enroll_and_identify_treat_the_fused_model_as_one(tiny_members, lfw_dir, tmp_path, capsys):
    out = build_fused_model(tiny_members, [0.3, 0.7], tmp_path / "fused.keras")
    gallery = tmp_path / "g.db"
    code, _, err = run_cli(capsys, "enroll", "--gallery", gallery, "--model", out, "--detector", "haar",
                           "aj", lfw_dir / EYES[0])
    assert code == 0, err
    code, text, _ = run_cli(capsys, "identify", "--gallery", gallery, "--model", out, "--detector", "haar",
                            "--threshold", 0.5, "--json", lfw_dir / EYES[0])
    data = json.loads(text)
    assert code == 0 and data["name"] == "aj" and data["score"] == pytest.approx(1.0, abs=1e-4)
    # a gallery enrolled with another fusion weight refuses the model
    other = build_fused_model(tiny_members, [0.7, 0.3], tmp_path / "other.keras")
    code, _, err = run_cli(capsys, "identify", "--gallery", gallery, "--model", other, "--detector", "haar",
                           "--threshold", 0.5, lfw_dir / EYES[0])
    assert code == 2 and "weights_sha256" in err


@pytest.mark.slow
def test_shipped_models_fuse_with_their_own_alignments(lfw_dir, yunet_path, tmp_path):
    out = build_fused_model(["dlib", "small"], [0.8, 0.2], tmp_path / "fused.keras")
    card = load_face_model_card(out)
    assert [(m["input"], m["size"]) for m in card["members"]] == [("dlib_image", 150), ("small_image", 64)]
    assert card["members"][0]["alignment"] == AlignmentTemplate.from_dict(load_face_model_card("dlib")["alignment"]).to_dict()
    assert card["test_time_flip"] == "coarse" and card["box_scales"] == [0.92, 1.0, 1.08]
    images = [str(lfw_dir / rel) for rel in EYES]
    fused = FacePipeline(detector=yunet_path, model=out, select="central").embed_images(images, progress=False)
    members = member_embeddings(card, fused.embeddings)
    for name in ("dlib", "small"):
        alone = FacePipeline(detector=yunet_path, model=name, select="central").embed_images(images, progress=False)
        np.testing.assert_allclose(members[name], alone.embeddings, atol=1e-5)


def test_fit_fusion_weights_finds_the_weight_of_best_tar_at_far():
    rng = np.random.default_rng(0)
    # member 0: good at low FAR; member 1: separates on average but a few impostors score very high
    genuine = np.stack([rng.normal(0.7, 0.1, 2000), rng.normal(0.6, 0.1, 2000)], axis=1)
    impostor = np.stack([rng.normal(0.0, 0.1, 20000), rng.normal(0.0, 0.1, 20000)], axis=1)
    impostor[:200, 1] = 0.95  # 1% impostors that member 1 takes for genuine
    weights, tar = fit_fusion_weights(genuine, impostor, 1e-3, steps=21)
    assert weights.shape == (2,) and weights.sum() == pytest.approx(1.0)
    grid = np.linspace(0, 1, 21)

    def tar_of(a):
        fused_imp = impostor @ [a, 1 - a]
        limit = np.sort(fused_imp)[-21]  # 20 impostors (FAR 1e-3) may score above it
        return np.mean(genuine @ [a, 1 - a] > limit)

    assert tar == pytest.approx(max(tar_of(a) for a in grid)) and tar == pytest.approx(tar_of(weights[0]))
    assert tar > tar_of(0.0) and weights[0] > 0.5
    with pytest.raises(ValueError, match="m >= 2"):
        fit_fusion_weights(genuine[:, :1], impostor[:, :1])


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_dlib_and_the_converted_facenet_fuse(capsys, kerascnn_home, lfw_dir, yunet_path, tmp_path):
    from kerascnn.face.facenet import graph_file

    try:
        graph_file()
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} (pip install -e '.[dev]')")
    assert run_cli(capsys, "convert-facenet")[0] == 0
    out = build_fused_model(["dlib", "facenet"], [0.95, 0.05], tmp_path / "fused.keras")
    card = load_face_model_card(out)
    assert [(m["name"], m["size"], m["embedding_dim"]) for m in card["members"]] == [("dlib", 150, 128),
                                                                                    ("facenet", 160, 512)]
    images = [str(lfw_dir / rel) for rel in EYES[:2]]
    batch = FacePipeline(detector=yunet_path, model=out).embed_images(images, progress=False)
    members = member_embeddings(card, batch.embeddings)
    alone = {name: FacePipeline(detector=yunet_path, model=name).embed_images(images, progress=False).embeddings
             for name in ("dlib", "facenet")}
    for name, embeddings in alone.items():
        np.testing.assert_allclose(members[name], embeddings, atol=1e-5)
    expected = 0.95 * alone["dlib"] @ alone["dlib"].T + 0.05 * alone["facenet"] @ alone["facenet"].T
    np.testing.assert_allclose(batch.embeddings @ batch.embeddings.T, expected, atol=1e-5)
