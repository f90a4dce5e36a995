"""`kerascnn calibrate --open-set`, identify's 1:N operating point, the demo's, and quiet output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _face_helpers import digest, run_cli, tiny_embedder
from kerascnn.cli import main
from kerascnn.face import model as fm
from kerascnn.face.faces import Faces
from kerascnn.face.gallery import Gallery, model_identity
from kerascnn.face.model import save_calibration
from kerascnn.face.pipeline import FacePipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, orl_dir):
    """A saved tiny embedder with its 1:1 calibration, a gallery of two ORL people, and an
    identity folder of 12 other ORL people (links, not copies)."""
    import keras

    keras.utils.set_random_seed(11)
    root = tmp_path_factory.mktemp("open_set")
    model = root / "tiny.keras"
    tiny_embedder(32).save(model)
    save_calibration(model, {"metric": "cosine", "threshold": 0.5, "source": "a test value"})
    pipeline = FacePipeline(detector="haar", model=str(model))
    gallery = root / "g.db"
    with Faces(gallery, pipeline=pipeline) as faces:
        for person in ("s1", "s2"):
            faces.enroll(person, [orl_dir / person / f"{i}.pgm" for i in (1, 2, 3)])
    folder = root / "dev"
    folder.mkdir()
    for k in range(20, 32):
        (folder / f"s{k}").symlink_to(orl_dir / f"s{k}")
    return {"model": model, "gallery": gallery, "folder": folder, "root": root, "pipeline": pipeline}


@pytest.mark.slow
def test_calibrate_open_set_then_identify_uses_the_operating_point(setup, orl_dir, capsys, kerascnn_home, monkeypatch):
    model = setup["root"] / "cal.keras"  # the installed default model: calibrate runs without --model, as in the README
    shutil.copy(setup["model"], model)
    shutil.copy(setup["model"].with_suffix(".json"), model.with_suffix(".json"))  # the 1:1 calibration
    monkeypatch.setattr(fm, "DEFAULT_MODEL", model)
    card = digest(model.with_suffix(".json"))
    plot = setup["root"] / "dir.png"
    code, out, err = run_cli(capsys, "calibrate", "--open-set", "--folder", setup["folder"], "--detector", "haar",
                          "--gallery-sizes", 3, 6, "--fpir", 0.1, 0.001, "--draws", 2, "--plot", plot, "--json")
    data = json.loads(out)
    assert code == 0 and digest(model.with_suffix(".json")) == card  # the model card is left as it was
    assert data["people"] == 12 and data["replaces"] is None and data["detector"] == "haar"
    assert plot.read_bytes()[:4] == b"\x89PNG" and "lfw" not in data["source"] and str(setup["folder"]) in data["source"]
    points = {(p["gallery_size"], p["fpir"]): p for p in data["operating_points"]}
    assert points[(6, 0.001)]["threshold"] is None and points[(6, 0.001)]["non_mated_needed"] == 1000
    assert points[(3, 0.1)]["threshold"] is not None
    # stored in the user's calibration file, with its provenance
    stored = Path(data["calibration_file"])
    assert stored.parent == kerascnn_home / "calibrations"
    entry = json.loads(stored.read_text())["calibrations"][-1]
    assert entry["calibration"]["operating_points"] == data["operating_points"]
    assert (entry["kind"], entry["detector"], entry["dataset"]) == ("open-set", "haar", str(setup["folder"]))
    n = data["images"]  # each draw searches every image but the enrolled ones
    assert entry["counts"] == {"people": 12, "searches": 2 * (n - 3) + 2 * (n - 6)} and entry["date"]
    # the text report says what is not measurable and how many searches it needs
    code, out, _ = run_cli(capsys, "calibrate", "--open-set", "--folder", setup["folder"], "--model", model,
                        "--detector", "haar", "--gallery-sizes", 6, "--fpir", 0.1, 0.001, "--draws", 1, "--no-save")
    assert code == 0 and "FPIR 0.001   not measurable: needs at least 1000 non-mated searches (better 10000), has 60" in out
    # identify: a gallery of 2 is below the calibrated 3..6: the N=3 point, said so, also in --json
    probe = orl_dir / "s1" / "8.pgm"
    code, out, _ = run_cli(capsys, "identify", "--gallery", setup["gallery"], "--model", model, "--detector", "haar",
                        "--fpir", 0.1, "--json", probe)
    point = json.loads(out)["operating_point"]
    assert json.loads(out)["threshold_source"]["origin"] == "user"
    assert json.loads(out)["threshold_source"]["path"] == str(stored)
    assert point["threshold"] == pytest.approx(points[(3, 0.1)]["threshold"]) and point["gallery_size"] == 2
    assert "below the calibrated range 3..6: using the N=3 operating point" in point["how"]
    assert json.loads(out)["threshold"] == pytest.approx(point["threshold"])
    code, out, _ = run_cli(capsys, "identify", "--gallery", setup["gallery"], "--model", model, "--detector", "haar",
                        "--fpir", 0.1, probe)
    assert out.strip().splitlines()[-1].startswith("1:N operating point: FPIR 0.1 for a gallery of 2, cosine threshold")
    assert out.strip().splitlines()[-2].startswith(f"threshold from the user calibration {stored} (open-set; "
                                                   "detector haar;")
    code, _, err = run_cli(capsys, "identify", "--gallery", setup["gallery"], "--model", model, "--detector", "haar",
                        "--fpir", 0.001, probe)
    assert code == 2 and "no 1:N operating point at FPIR 0.001 in the calibration (calibrated and measured: 0.1)" in err
    empty = setup["root"] / "empty.db"
    Gallery(empty, model_identity(setup["pipeline"].model)).close()
    code, _, err = run_cli(capsys, "identify", "--gallery", empty, "--model", model, "--detector", "haar", probe)
    assert code == 2 and f"gallery {empty} is empty: enroll someone before identifying" in err
    # --threshold still overrides
    code, out, _ = run_cli(capsys, "identify", "--gallery", setup["gallery"], "--model", model, "--detector", "haar",
                        "--threshold", 0.25, "--json", probe)
    assert json.loads(out)["operating_point"] == {"threshold": 0.25, "metric": "cosine", "how": "--threshold"}
    # the demo identifies at the 1:N point for its 2 people and says where it comes from
    code, out, err = run_cli(capsys, "demo", "--data", orl_dir.parent, "--model", model, "--detector", "haar",
                        "--people", 2, "--enroll-images", 2, "--strangers", 1, "--fpir", 0.1)
    lines = out.splitlines()
    assert code in (0, 1), err
    assert lines[2].startswith("identify: 1:N operating point: FPIR 0.1 for a gallery of 2")
    assert "calibrated on development data: kerascnn calibrate --open-set on" in lines[2]
    assert lines[3] == "(thresholds come from calibration on development data, never from these photos)"
    rows = [line for line in lines if line.startswith(("ok ", "BAD"))]
    if any(r.startswith("BAD") for r in rows):
        assert lines[-1].startswith("the model does not decide every probe correctly at these operating points: ")
        assert code == 1
    else:
        assert lines[-1] == "3 of 3 probes decided correctly" and code == 0
    assert lines[1].startswith("verify: 1:1 cosine threshold 0.5000 (from the model card ")
    # a calibration on two people would replace the one on 12: refused, the file left as it was
    two = setup["root"] / "two"
    two.mkdir()
    for k in (20, 21):
        (two / f"s{k}").symlink_to(orl_dir / f"s{k}")
    before = digest(stored)
    code, _, err = run_cli(capsys, "calibrate", "--open-set", "--folder", two, "--detector", "haar", "--fpir", 0.1)
    assert code == 2 and f"this open-set calibration ({two}: 2 people, " in err
    assert f"was measured on fewer people and searches than the user calibration {stored}" in err
    assert digest(stored) == before
    # kept apart with --out and used with --calibration; or stored with --force
    mine = setup["root"] / "two.json"
    code, out, _ = run_cli(capsys, "calibrate", "--open-set", "--folder", two, "--detector", "haar", "--fpir", 0.1,
                           "--out", mine, "--json")
    assert code == 0 and json.loads(out)["calibration_file"] == str(mine) and digest(stored) == before
    code, out, _ = run_cli(capsys, "identify", "--gallery", setup["gallery"], "--detector", "haar", "--fpir", 0.1,
                           "--calibration", mine, "--json", probe)
    source = json.loads(out)["threshold_source"]
    assert source["origin"] == "file" and source["dataset"] == str(two) and source["counts"]["people"] == 2
    code, out, _ = run_cli(capsys, "calibrate", "--open-set", "--folder", two, "--detector", "haar", "--fpir", 0.1,
                           "--force", "--json")
    assert code == 0 and json.loads(out)["replaces"]["dataset"] == str(setup["folder"])
    assert json.loads(stored.read_text())["calibrations"][-1]["dataset"] == str(two)


def test_open_set_bad_input_messages(setup, orl_dir, tmp_path, capsys):
    base = ["calibrate", "--open-set", "--model", setup["model"], "--detector", "haar"]
    one = tmp_path / "one"
    one.mkdir()
    (one / "s1").symlink_to(orl_dir / "s1")
    code, _, err = run_cli(capsys, *base, "--folder", one)
    assert code == 2 and f"{one}: open-set calibration needs at least 2 people (some enrolled, others not), got 1" \
        in err
    singles = tmp_path / "singles"
    for k in (1, 2, 3):
        (singles / f"s{k}").mkdir(parents=True)
        (singles / f"s{k}" / "1.pgm").symlink_to(orl_dir / f"s{k}" / "1.pgm")
    code, _, err = run_cli(capsys, *base, "--folder", singles)
    assert code == 2 and "needs people with at least 2 images (1 enrolled + 1 mated search); every one of the 3 " \
                         "people" in err
    code, _, err = run_cli(capsys, *base)
    assert code == 2 and "calibrate --open-set needs --folder DIR" in err
    code, _, err = run_cli(capsys, *base, "--folder", singles, "--sets", 1)
    assert code == 2 and "--sets needs --people PEOPLE.txt" in err
    code, _, err = run_cli(capsys, "calibrate", "--model", setup["model"])
    assert code == 2 and "calibrate needs --pairs and --images (1:1), or --open-set --folder DIR (1:N)" in err
    code, _, err = run_cli(capsys, "identify", "--gallery", setup["gallery"], "--model", setup["model"], "--detector",
                        "haar", "--fpir", 0.01, orl_dir / "s1" / "8.pgm")
    assert code == 2 and ("--fpir needs a 1:N calibration, and there is none (none in the user's calibrations nor "
                          "in the model card)") in err


def test_calibrate_checks_its_arguments_against_the_data_before_embedding(setup, monkeypatch, capsys):
    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded before checking the arguments")

    monkeypatch.setattr(FacePipeline, "embed_images", no_embedding)
    base = ["calibrate", "--open-set", "--folder", setup["folder"], "--model", setup["model"], "--detector", "haar"]
    for extra, message in [
        (["--draws", 1000000], f"{setup['folder']}: 1000000 draws per gallery size are more than the data supports: "
                               "at most 1000 (each draw searches up to 120 images;"),
        (["--gallery-sizes", 3, 12], "gallery sizes [12] cannot be drawn: 12 people have more than 1 images"),
        (["--enroll", 10], "needs people with at least 11 images (10 enrolled + 1 mated search)"),
        (["--fpir", 0.1, 0], "every FPIR must be in (0, 1), got [0.1, 0.0]"),
        (["--draws", 0], "enroll_per_person and draws must be >= 1, got 1 and 0"),
    ]:
        code, out, err = run_cli(capsys, *base, *extra)
        assert code == 2 and message in err and err.count("\n") == 1, (extra, err)
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", "--pairs", "p.txt", "--images", "i", "--target-far", "1.5"])
    assert exit_.value.code == 2 and "--target-far: must be in [0, 1), got 1.5" in capsys.readouterr().err


def _cli(*argv, env=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    return subprocess.run([sys.executable, "-m", "kerascnn", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_face_commands_print_no_framework_log_lines_unless_verbose(setup, orl_dir):
    argv = ["identify", "--gallery", setup["gallery"], "--model", setup["model"], "--detector", "haar",
            "--threshold", 0.5, orl_dir / "s1" / "8.pgm"]
    quiet = _cli(*argv)
    first = quiet.stdout.splitlines()[0]
    assert first.startswith(("RECOGNIZED: ", "NOT RECOGNIZED: ")), quiet.stdout
    assert quiet.returncode == (0 if first.startswith("RECOGNIZED: ") else 1)
    assert quiet.stderr == ""
    # kerascnn's own errors still reach stderr
    missing = _cli(*argv[:1], "--gallery", setup["root"] / "missing.db", *argv[3:])
    assert missing.returncode == 2 and missing.stderr.startswith("kerascnn identify: error: ")
    assert len(missing.stderr.strip().splitlines()) == 1
    verbose = _cli(*argv, "--verbose")
    assert verbose.returncode == quiet.returncode and verbose.stdout == quiet.stdout
    # TensorFlow 2.x on Linux logs at start-up (absl's pre-initialisation notice, oneDNN, CUDA)
    assert "absl::InitializeLog" in verbose.stderr or "oneDNN" in verbose.stderr or "cuda" in verbose.stderr.lower()


def test_parked_stderr_is_swallowed_and_replayed_when_the_import_fails(capfd):
    from kerascnn.cli.quiet import _stderr_parked

    with _stderr_parked():
        os.write(2, b"framework noise\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(ImportError, match="broken"):
        with _stderr_parked():
            os.write(2, b"why the import failed\n")
            raise ImportError("broken")
    assert capfd.readouterr().err == "why the import failed\n"
