"""The default (dlib) face model on the command line: conversion, model names, and bad input
that must exit 2 with one clear line and leave every file as it was."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import kerascnn
from _face_helpers import digest, run_cli
from kerascnn.models.dlib_resnet import dlib_file


@pytest.fixture(scope="module")
def dat():
    try:
        return dlib_file()
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} (pip install -e '.[dev]')")


def test_convert_dlib_rebuilds_the_default_model(tmp_path, dat, capsys):
    out = tmp_path / "m.keras"
    code, text, _ = run_cli(capsys, "convert-dlib", "--dat", dat, "--out", out)
    assert code == 0 and "wrote" in text and out.is_file() and out.with_suffix(".json").is_file()
    x = np.random.default_rng(0).uniform(0, 255, (2, 150, 150, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(kerascnn.load_face_model(out)(x)),
                               np.asarray(kerascnn.load_face_model()(x)), atol=1e-6)


@pytest.mark.parametrize("case", ["missing", "foreign", "truncated"])
def test_bad_dlib_file_exits_2_and_writes_nothing(tmp_path, dat, yunet_path, case, capsys):
    bad = tmp_path / "bad.dat"
    if case == "foreign":
        shutil.copy(yunet_path, bad)
    elif case == "truncated":
        bad.write_bytes(dat.read_bytes()[:3_000_000])
    out = tmp_path / "m.keras"
    out.write_bytes(b"a previous model")
    code, _, err = run_cli(capsys, "convert-dlib", "--dat", bad, "--out", out)
    expected = {"missing": "bad.dat does not exist", "foreign": "not dlib data", "truncated": "the file is truncated"}
    assert code == 2 and expected[case] in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"a previous model" and not out.with_suffix(".json").exists()


def test_unknown_model_name_lists_the_shipped_ones(tmp_path, orl_dir, capsys):
    code, _, err = run_cli(capsys, "enroll", "--gallery", tmp_path / "g.db", "--model", "resnet", "--detector", "haar",
                        "alice", orl_dir / "s1" / "1.pgm")
    assert code == 2
    assert "unknown face model 'resnet': the shipped models are dlib (default), small" in err
    assert not (tmp_path / "g.db").exists()


def test_gallery_of_the_small_model_is_refused_by_the_default_one(tmp_path, orl_dir, capsys):
    gallery = tmp_path / "g.db"
    code, _, _ = run_cli(capsys, "enroll", "--gallery", gallery, "--model", "small", "--detector", "haar",
                      "s1", orl_dir / "s1" / "1.pgm", orl_dir / "s1" / "2.pgm")
    assert code == 0
    before = digest(gallery)
    code, out, err = run_cli(capsys, "verify", "--gallery", gallery, "--detector", "haar", "s1", orl_dir / "s1" / "3.pgm")
    assert code == 2 and out == ""
    assert "was enrolled with model" in err and "re-enroll with this model or use the gallery's model" in err
    assert digest(gallery) == before
    code, out, _ = run_cli(capsys, "verify", "--gallery", gallery, "--model", "small", "--detector", "haar",
                        "s1", orl_dir / "s1" / "3.pgm")
    assert code in (0, 1) and "s1" in out
