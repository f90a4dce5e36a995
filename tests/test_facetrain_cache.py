"""kerascnn.facetrain.cache: one cache root, keyed by the images' bytes and the crop settings."""

from __future__ import annotations

import shutil

from kerascnn.face.detect import SHIPPED_YUNET, SHIPPED_YUNET_SHA256
from kerascnn.facetrain.cache import cache_root, content_key, detector_tag


def _folder(tmp_path, name, images):
    folder = tmp_path / name
    folder.mkdir()
    paths = []
    for i, data in enumerate(images):
        path = folder / f"{i}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_key_follows_content_not_location(tmp_path):
    paths = _folder(tmp_path, "a", [b"one", b"two"])
    settings = {"detector": "yunet", "size": 150}
    key = content_key(paths, settings)
    moved = tmp_path / "b"
    shutil.copytree(tmp_path / "a", moved)
    assert content_key(sorted(moved.iterdir()), settings) == key  # a moved or renamed folder keeps its cache
    paths[1].write_bytes(b"TWO")
    assert content_key(paths, settings) != key  # an edited image never reuses a stale crop
    paths[1].write_bytes(b"two")
    assert content_key(paths, settings) == key
    assert content_key(paths, {**settings, "size": 112}) != key
    assert content_key(paths[::-1], settings) != key  # the order of the cached rows matters


def test_cache_root_and_detector_tags(tmp_path, monkeypatch, yunet_path):
    monkeypatch.delenv("KERASCNN_CACHE", raising=False)
    assert cache_root().parts[-2:] == (".cache", "kerascnn")
    monkeypatch.setenv("KERASCNN_CACHE", str(tmp_path))
    assert cache_root() == tmp_path and cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("KERASCNN_DETECTOR_MODEL", raising=False)
    shipped = f"{SHIPPED_YUNET.name}:{SHIPPED_YUNET_SHA256[:16]}"
    assert detector_tag(None) == detector_tag("yunet") == detector_tag(str(yunet_path)) == shipped
    assert detector_tag("haar") == "haar"
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the same model")
    assert detector_tag(other) != shipped and detector_tag(other).startswith("other.onnx:")
