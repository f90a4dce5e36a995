"""Folder datasets: scanning, class names and counts, errors, deterministic splits."""

from __future__ import annotations

import numpy as np
import pytest

from kerascnn.data import identity_split, read_image, scan_folder, stratified_split
from kerascnn.errors import DatasetError


def test_orl_classes_counts_and_grey_pgm(orl_dir):
    ds = scan_folder(orl_dir)
    assert ds.num_classes == 40 and len(ds) == 400
    assert set(ds.class_counts().values()) == {10}
    assert ds.class_names == sorted(ds.class_names)
    rgb, grey = read_image(ds.paths[0]), read_image(ds.paths[0], channels=1)
    assert rgb.shape == (112, 92, 3) and grey.shape == (112, 92, 1)
    assert (rgb == grey).all()  # grey repeated into 3 channels


def test_empty_folder_and_empty_class_messages(tmp_path):
    with pytest.raises(DatasetError, match="has no class sub-folders"):
        scan_folder(tmp_path)
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"class folder .*alice has no images"):
        scan_folder(tmp_path)


def _fake_dataset(sizes):
    from kerascnn.data.folders import FolderDataset

    paths, labels = [], []
    for c, n in enumerate(sizes):
        paths += [f"c{c}/{i}.jpg" for i in range(n)]
        labels += [c] * n
    return FolderDataset("root", paths, np.array(labels, np.int32), [f"c{c}" for c in range(len(sizes))])


def test_stratified_split_per_class_fractions_deterministic():
    ds = _fake_dataset([10, 20, 7, 1])
    train, val, test = stratified_split(ds, (0.6, 0.2, 0.2), seed=3)
    assert sorted(train.paths + val.paths + test.paths) == sorted(ds.paths)  # a partition
    for part, frac in ((train, 0.6), (val, 0.2), (test, 0.2)):
        counts = part.class_counts()
        assert counts["c0"] == round(10 * frac) and counts["c1"] == round(20 * frac)
        assert part.class_names == ds.class_names
        assert all(p.startswith(f"c{l}/") for p, l in zip(part.paths, part.labels))
    assert train.class_counts()["c3"] == 1  # a 1-image class stays in the first part
    again = stratified_split(ds, (0.6, 0.2, 0.2), seed=3)
    assert [p.paths for p in again] == [p.paths for p in (train, val, test)]
    assert stratified_split(ds, (0.6, 0.2, 0.2), seed=4)[0].paths != train.paths


def test_identity_split_is_class_disjoint_and_relabelled(orl_dir):
    ds = scan_folder(orl_dir)
    train, test = identity_split(ds, (0.75, 0.25), seed=0)
    assert (train.num_classes, test.num_classes) == (30, 10)
    assert not set(train.class_names) & set(test.class_names)
    for part in (train, test):
        assert sorted(set(part.labels.tolist())) == list(range(part.num_classes))
        for path, label in zip(part.paths, part.labels):
            assert f"/{part.class_names[label]}/" in path
    assert identity_split(ds, (0.75, 0.25), seed=0)[1].class_names == test.class_names
    assert identity_split(ds, (0.75, 0.25), seed=1)[1].class_names != test.class_names


def test_split_errors():
    ds = _fake_dataset([3, 3])
    with pytest.raises(DatasetError, match=r"summing to 1, got \[0.5, 0.6\]"):
        stratified_split(ds, (0.5, 0.6))
    with pytest.raises(DatasetError, match="cannot split 2 classes .* a part would get no class"):
        identity_split(ds, (0.8, 0.1, 0.1))
