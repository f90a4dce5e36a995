"""The default (dlib) face model on the command line: conversion, model names, and bad input
that must exit 2 with one clear line and leave every file as it was."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

import kerascnn
from _face_helpers import damaged_dat, digest, run_cli
from kerascnn.cli import main
from kerascnn.face import model as fm
from kerascnn.face.gallery import pipeline_identity
from kerascnn.face.pipeline import FacePipeline
from kerascnn.models.dlib_resnet import dlib_file


@pytest.fixture(scope="module")
def dat():
    try:
        return dlib_file()
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, dat):
    """``kerascnn convert-dlib`` of dlib's file into a fresh folder: (the model's path, stdout)."""
    out = tmp_path_factory.mktemp("convert") / "m.keras"
    with contextlib.redirect_stdout(io.StringIO()) as text:
        assert main(["convert-dlib", "--dat", str(dat), "--out", str(out)]) == 0
    return out, text.getvalue()


@pytest.mark.slow
def test_convert_dlib_rebuilds_the_default_model(converted):
    out, text = converted
    assert "wrote" in text and out.is_file() and out.with_suffix(".json").is_file()
    x = np.random.default_rng(0).uniform(0, 255, (2, 150, 150, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(kerascnn.load_face_model(out)(x)),
                               np.asarray(kerascnn.load_face_model()(x)), atol=1e-6)


@pytest.mark.slow
def test_converted_model_has_the_shipped_card_and_identity(converted):
    """Issue 17: the converted model embeds, scores and is identified as the shipped one."""
    out, _ = converted
    card, shipped = fm.load_face_model_card(out), fm.load_face_model_card()
    assert card["model"] == "m.keras"
    assert {k: v for k, v in card.items() if k != "model"} == {k: v for k, v in shipped.items() if k != "model"}
    assert fm.load_alignment(out).size == 150 and fm.load_calibration(out) == fm.load_calibration()
    ours, theirs = FacePipeline("haar", model=str(out)), FacePipeline("haar")
    assert (ours.alignment.size, ours.flip, ours.box_scales) == (theirs.alignment.size, theirs.flip, theirs.box_scales)
    assert pipeline_identity(ours) == pipeline_identity(theirs)


@pytest.mark.slow
def test_a_card_that_changes_templates_changes_the_identity(converted, tmp_path, orl_dir, capsys):
    """The same weights under a card without alignment and inference options (what convert-dlib
    wrote before) make other templates: a gallery of one refuses the other."""
    out, _ = converted
    bare = tmp_path / "bare.keras"
    shutil.copy(out, bare)
    options = ("alignment", "test_time_flip", "box_scales")
    card = {k: v for k, v in fm.load_face_model_card(out).items() if k not in options}
    bare.with_suffix(".json").write_text(json.dumps(card))
    gallery = tmp_path / "g.db"
    code, _, _ = run_cli(capsys, "enroll", "--gallery", gallery, "--model", out, "--detector", "haar",
                         "s1", orl_dir / "s1" / "1.pgm")
    assert code == 0
    before = digest(gallery)
    probe = orl_dir / "s1" / "2.pgm"
    code, _, err = run_cli(capsys, "verify", "--gallery", gallery, "--model", bare, "--detector", "haar", "s1", probe)
    assert code == 2 and "differs in options_sha256" in err and digest(gallery) == before
    code, out_text, _ = run_cli(capsys, "verify", "--gallery", gallery, "--detector", "haar", "s1", probe)
    assert code in (0, 1) and "s1" in out_text  # the shipped model: the same templates


@pytest.mark.parametrize("case", ["missing", "foreign", "truncated", "flipped", "other"])
@pytest.mark.slow
def test_bad_dlib_file_exits_2_and_writes_nothing(tmp_path, dat, yunet_path, case, capsys):
    bad = tmp_path / "bad.dat"
    if case == "foreign":
        shutil.copy(yunet_path, bad)
    elif case == "truncated":
        bad.write_bytes(dat.read_bytes()[:3_000_000])
    elif case in ("flipped", "other"):
        damaged_dat(dat, bad, case)
    out = tmp_path / "m.keras"
    out.write_bytes(b"a previous model")
    code, _, err = run_cli(capsys, "convert-dlib", "--dat", bad, "--out", out)
    expected = {"missing": "bad.dat does not exist", "foreign": "not dlib data", "truncated": "the file is truncated",
                "flipped": "dlib layer 87 (con, Keras layer stage4_block2_2_conv, byte 10521699): its filters hold "
                           "124181, expected |filters| <= 10",
                "other": "its descriptor of kerascnn's test chip differs from dlib's network's by"}
    assert code == 2 and expected[case] in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"a previous model" and not out.with_suffix(".json").exists()


def test_unknown_model_name_lists_the_shipped_ones(tmp_path, orl_dir, capsys):
    code, _, err = run_cli(capsys, "enroll", "--gallery", tmp_path / "g.db", "--model", "resnet", "--detector", "haar",
                        "alice", orl_dir / "s1" / "1.pgm")
    assert code == 2
    assert "unknown face model 'resnet': the shipped models are dlib (default), small" in err
    assert not (tmp_path / "g.db").exists()


@pytest.mark.slow
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
