"""The face commands: verify, identify, calibrate, evaluate, demo; exit codes and bad input."""

from __future__ import annotations

import json
import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest

from _face_helpers import EYES, digest, run_cli, tiny_embedder
from kerascnn.face.faces import Faces
from kerascnn.face.gallery import Gallery, model_identity
from kerascnn.face.pipeline import FacePipeline
from kerascnn.face.decision import identify, verify


@pytest.fixture(scope="module")
def setup(tmp_path_factory, orl_dir):
    """A saved tiny embedder and a gallery of two ORL people (3 images each)."""
    import keras

    keras.utils.set_random_seed(7)
    root = tmp_path_factory.mktemp("cli_face")
    model_path = root / "tiny.keras"
    tiny_embedder(32).save(model_path)
    pipeline = FacePipeline(detector="haar", model=str(model_path))
    gallery_path = root / "g.db"
    with Faces(gallery_path, pipeline=pipeline) as faces:
        for person in ("s1", "s2"):
            faces.enroll(person, [orl_dir / person / f"{i}.pgm" for i in (1, 2, 3)])
        templates = {n: faces.gallery.templates(n) for n in ("s1", "s2")}
    return {"model": str(model_path), "gallery": str(gallery_path), "pipeline": pipeline, "templates": templates,
            "root": root}


def _common(setup):
    return ["--gallery", setup["gallery"], "--model", setup["model"], "--detector", "haar"]


def test_verify_exit_codes_follow_the_threshold(setup, orl_dir, capsys):
    probe = orl_dir / "s1" / "5.pgm"
    embedding, _ = setup["pipeline"].embed_one(str(probe))
    score = verify(setup["templates"], "s1", embedding, 0.0).score
    code, out, _ = run_cli(capsys, "verify", *_common(setup), "--threshold", score - 1e-3, "s1", probe)
    assert code == 0 and out.startswith("MATCH") and f"{score:.4f}" in out
    code, out, _ = run_cli(capsys, "verify", *_common(setup), "--threshold", score + 1e-3, "--json", "s1", probe)
    data = json.loads(out)
    assert code == 1 and data["decision"] == "no match" and data["score"] == pytest.approx(score, abs=1e-5)
    assert data["templates"] == 3 and data["face"]["status"] == "ok"


def test_identify_recognized_top_k_and_not_recognized(setup, orl_dir, capsys):
    probe = orl_dir / "s2" / "6.pgm"
    embedding, _ = setup["pipeline"].embed_one(str(probe))
    expected = identify(setup["templates"], embedding, 0.0, top_k=2)
    code, out, _ = run_cli(capsys, "identify", *_common(setup), "--threshold", expected.score - 1e-3, "--json",
                        "--top-k", 2, probe)
    data = json.loads(out)
    assert code == 0 and data["name"] == expected.name and [c["name"] for c in data["candidates"]] == [
        c.name for c in expected.candidates]
    code, out, _ = run_cli(capsys, "identify", *_common(setup), "--threshold", 1.01, probe)
    assert code == 1 and out.startswith("NOT RECOGNIZED")


def test_grey_and_rgba_probes_work(setup, lfw_dir, orl_dir, tmp_path, capsys):
    rgb = cv2.imread(str(lfw_dir / EYES[0]))
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2))
    for probe in (rgba, orl_dir / "s3" / "1.pgm"):
        code, out, err = run_cli(capsys, "identify", *_common(setup), "--threshold", 0.5, probe)
        assert code in (0, 1) and "RECOGNIZED" in out and err == ""


def _huge_png_header(path):
    """A PNG whose header announces 100,000 x 100,000 pixels (nothing to decode)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)))
    return path


def test_bad_input_exit_2_with_one_clear_line_and_gallery_untouched(setup, tmp_path, orl_dir, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 120, 3), 200, np.uint8))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    good = orl_dir / "s1" / "4.pgm"
    before = digest(setup["gallery"])
    cases = [
        (["verify", *_common(setup), "--threshold", 0.5, "s1", blank], f"no face found in {blank}"),
        (["verify", *_common(setup), "--threshold", 0.5, "s1", text], f"cannot decode {text}"),
        (["verify", *_common(setup), "--threshold", 0.5, "s1", tmp_path / "nope.jpg"], "No such file"),
        (["identify", *_common(setup), "--threshold", 0.5, _huge_png_header(tmp_path / "huge.png")],
         "100000x100000 pixels, above the cap"),
        (["verify", *_common(setup), "--threshold", 0.5, "zoe", good], "'zoe' is not enrolled"),
        (["identify", "--gallery", tmp_path / "missing.db", "--model", setup["model"], "--threshold", 0.5, good],
         "does not exist"),
        (["identify", *_common(setup), good], "pass --threshold or run 'kerascnn calibrate' first"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1 and out == "", (argv, err)
        assert err.startswith(f"kerascnn {argv[0]}: error: ")
    assert digest(setup["gallery"]) == before


def test_empty_gallery_and_gallery_of_another_model(setup, tmp_path, orl_dir, capsys):
    good = orl_dir / "s1" / "4.pgm"
    empty = tmp_path / "empty.db"
    Gallery(empty, model_identity(setup["pipeline"].model)).close()
    code, _, err = run_cli(capsys, "identify", "--gallery", empty, "--model", setup["model"], "--threshold", 0.5, good)
    assert code == 2 and "is empty" in err
    other = tmp_path / "other.keras"
    tiny_embedder(32, name="other_model").save(other)
    before = digest(setup["gallery"])
    code, _, err = run_cli(capsys, "verify", "--gallery", setup["gallery"], "--model", other, "--threshold", 0.5, "s1", good)
    assert code == 2 and "model" in err and err.count("\n") == 1
    assert digest(setup["gallery"]) == before


def _tiny_pairs(lfw_pairs, tmp_path, per_half=3):
    """2 folds x ``per_half`` matched + ``per_half`` mismatched pairs taken from the real pairs file."""
    lines = lfw_pairs.read_text().splitlines()
    rows = [line for start in (1, 301, 601, 901) for line in lines[start:start + per_half]]
    path = tmp_path / "pairs.txt"
    path.write_text(f"2\t{per_half}\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_calibrate_stores_the_threshold_then_verify_uses_it(setup, lfw_pairs, lfw_dir, tmp_path, orl_dir, capsys,
                                                           kerascnn_home, yunet_path):
    pairs = _tiny_pairs(lfw_pairs, tmp_path)
    model = tmp_path / "cal.keras"
    shutil.copy(setup["model"], model)
    roc = tmp_path / "roc.png"
    code, out, _ = run_cli(capsys, "calibrate", "--pairs", pairs, "--images", lfw_dir, "--model", model,
                        "--detector", "haar", "--roc", roc, "--json")
    data = json.loads(out)
    assert code == 0 and not model.with_suffix(".json").exists()  # the user's calibration file, never a model card
    assert data["num_genuine"] + data["num_impostor"] == 12 and data["criterion"] == "best accuracy"
    stored = json.loads(open(data["calibration_file"]).read())
    assert roc.read_bytes()[:4] == b"\x89PNG" and data["calibration_file"].startswith(str(kerascnn_home))
    entry = stored["calibrations"][0]
    assert entry["calibration"]["threshold"] == pytest.approx(data["threshold"]) and entry["counts"] == {"pairs": 12}
    assert (entry["kind"], entry["detector"], entry["dataset"]) == ("1:1", "haar", str(pairs))
    for key in ("auc", "eer", "tar_at_far", "failure_to_detect"):
        assert key in data
    # verify without --threshold now reads the stored calibration, and says so
    code, out, _ = run_cli(capsys, "verify", "--gallery", setup["gallery"], "--model", model, "--detector", "haar",
                        "--json", "s1", orl_dir / "s1" / "7.pgm")
    assert code in (0, 1) and json.loads(out)["threshold"] == pytest.approx(data["threshold"])
    assert json.loads(out)["threshold_source"]["path"] == data["calibration_file"]
    code, out, _ = run_cli(capsys, "verify", "--gallery", setup["gallery"], "--model", model, "--detector", "haar",
                        "s1", orl_dir / "s1" / "7.pgm")
    assert out.splitlines()[1].startswith(f"  threshold from the user calibration {data['calibration_file']} (1:1; "
                                           f"detector haar; {pairs}; 12 pairs; stored 20")
    # with another detector there is no calibration: verify says where it looked
    code, _, err = run_cli(capsys, "verify", "--gallery", setup["gallery"], "--model", model, "--detector-model",
                        yunet_path, "s1", orl_dir / "s1" / "7.pgm")
    assert code == 2 and ("no 1:1 calibration of this model for detector yunet (none in the user's calibrations nor in "
                          "the model card); pass --threshold or run 'kerascnn calibrate' first") in err


@pytest.mark.slow
def test_evaluate_json_with_yunet(setup, lfw_pairs, lfw_dir, yunet_path, tmp_path, capsys):
    pairs = _tiny_pairs(lfw_pairs, tmp_path)
    code, out, _ = run_cli(capsys, "evaluate", "--pairs", pairs, "--images", lfw_dir, "--model", setup["model"],
                        "--detector-model", yunet_path, "--json")
    data = json.loads(out)
    assert code == 0 and data["pairs"] == 12 and data["failure_to_detect"] == 0 and data["pairs_scored"] == 12
    assert 0 <= data["accuracy"] <= 1 and 0 <= data["auc"] <= 1 and set(data["tar_at_far"]) == {"0.01", "0.001"}
    code, _, err = run_cli(capsys, "evaluate", "--pairs", pairs, "--images", lfw_dir, "--model", setup["model"],
                        "--folds", 3)
    assert code == 2 and "--folds must be between 1 and 2, got [3]" in err


@pytest.mark.slow
def test_evaluate_of_one_fold_says_it_was_cut_into_parts(setup, lfw_pairs, lfw_dir, tmp_path, capsys):
    pairs = _tiny_pairs(lfw_pairs, tmp_path, per_half=5)
    code, out, err = run_cli(capsys, "evaluate", "--pairs", pairs, "--images", lfw_dir, "--model", setup["model"],
                             "--detector", "haar", "--folds", 2)
    assert code == 0, err
    assert "(10 parts of fold 2, 5 genuine + 5 impostor pairs, cosine)" in out.splitlines()[0]


@pytest.mark.slow
def test_demo_enrolls_and_decides(setup, shared_dir, tmp_path, capsys):
    gallery = tmp_path / "demo.db"
    argv = ["demo", "--data", shared_dir / "data", "--model", setup["model"], "--detector", "haar", "--people", 2,
            "--enroll-images", 2, "--strangers", 1, "--threshold", 0.5, "--gallery", gallery]
    code, out, _ = run_cli(capsys, *argv)
    assert "enrolled 2 ORL people x 2 images (4 templates)" in out
    assert "of 3 probes decided correctly" in out and "identify: 1:N threshold: cosine 0.5000 (--threshold)" in out
    assert code == (0 if "3 of 3 probes decided correctly" in out else 1)
    with Gallery(gallery) as g:
        assert [i.name for i in g.identities()] == ["s1", "s2"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "already exists" in err


@pytest.mark.slow
def test_demo_exits_1_when_a_probe_is_decided_wrongly(setup, shared_dir, capsys):
    """One person, one probe: a threshold below every score decides it right (exit 0; the huge
    threshold printed short), one above every cosine decides it wrong (exit 1)."""
    argv = ["demo", "--data", shared_dir / "data", "--model", setup["model"], "--detector", "haar", "--people", 1,
            "--enroll-images", 1, "--strangers", 0]
    code, out, err = run_cli(capsys, *argv, "--threshold=-1e308")
    assert code == 0, err
    assert "verify: 1:1 cosine threshold -1e+308 (--threshold)" in out and max(map(len, out.splitlines())) < 200
    assert out.splitlines()[-1] == "1 of 1 probes decided correctly"
    code, out, _ = run_cli(capsys, *argv, "--threshold", 1.01)
    assert code == 1 and "0 of 1 probes decided correctly" in out
    assert out.splitlines()[-1].startswith("the model does not decide every probe correctly")


def test_verify_face_script_runs_verify_or_identify(setup, orl_dir, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "verify_face.py"
    spec = importlib.util.spec_from_file_location("verify_face", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    probe = orl_dir / "s1" / "5.pgm"
    assert module.main([*map(str, _common(setup)), "--threshold", "-1.0", "--json", "s1", str(probe)]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "match"
    assert module.main([*map(str, _common(setup)), "--threshold", "1.01", "--json", str(probe)]) == 1
    assert json.loads(capsys.readouterr().out)["decision"] == "not recognized"
