"""Hostile and careless input (issue 14): exit codes, special files, pixel caps, names, imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerascnn.cli import EXIT_ERROR, main
from kerascnn.face.gallery import Gallery

IDENTITY = {"name": "fake", "input_size": [16, 16, 3], "embedding_dim": 4, "weights_sha256": "0" * 64}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's: these tests seed their own generators (no Keras session to reset)."""
    yield


@pytest.fixture
def gallery_path(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path, IDENTITY) as g:
        g.enroll("alice", np.random.default_rng(0).normal(size=(2, 4)))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def python(code: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT, **kwargs)


# --- exit codes -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_bad_top_k_is_refused_by_the_parser_before_tensorflow(value):
    result = python(
        "import sys\nfrom kerascnn.cli import main\n"
        f"try:\n    main(['identify', '--gallery', 'g.db', 'x.jpg', '--top-k', {value!r}])\n"
        "except SystemExit as e:\n    print(e.code, 'tensorflow' in sys.modules)\n")
    assert result.stdout.split() == ["2", "False"], result
    assert "--top-k" in result.stderr


def test_negative_timeout_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["list", "--gallery", "g.db", "--timeout", "-1"])
    assert info.value.code == EXIT_ERROR
    assert "--timeout" in capsys.readouterr().err


def test_unexpected_exception_is_one_line_exit_2(capsys, monkeypatch, gallery_path):
    def boom(*args, **kwargs):
        raise RuntimeError("something\nbroke")
    monkeypatch.setattr(Gallery, "identities", boom)
    code, out, err = run(capsys, "list", "--gallery", gallery_path)
    assert code == EXIT_ERROR
    assert err.strip() == "kerascnn list: error: RuntimeError: something broke"
    code, out, err = run(capsys, "list", "--gallery", gallery_path, "--json")
    assert code == EXIT_ERROR and err == ""
    assert json.loads(out) == {"error": "RuntimeError: something broke", "type": "RuntimeError"}
    code, out, err = run(capsys, "list", "--gallery", gallery_path, "--verbose")
    assert code == EXIT_ERROR and "Traceback" in err and "boom" in err
    assert err.strip().splitlines()[-1] == "kerascnn list: error: RuntimeError: something broke"
    code, out, err = run(capsys, "--verbose", "list", "--gallery", gallery_path)
    assert code == EXIT_ERROR and "Traceback" in err


def test_json_errors_are_json(capsys, tmp_path):
    code, out, err = run(capsys, "list", "--gallery", tmp_path / "missing.db", "--json")
    assert code == EXIT_ERROR
    data = json.loads(out)
    assert data["type"] == "GalleryNotFoundError" and "missing.db" in data["error"]


def test_export_onto_a_directory_is_a_clear_error(capsys, gallery_path, tmp_path):
    (tmp_path / "out.json").mkdir()
    code, out, err = run(capsys, "export", "--gallery", gallery_path, tmp_path / "out.json")
    assert code == EXIT_ERROR
    assert len(err.strip().splitlines()) == 1 and "is a directory" in err, err
