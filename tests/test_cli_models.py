"""`kerascnn models` and `kerascnn summary`, run in-process."""

from __future__ import annotations

import json

from kerascnn.cli import main
from kerascnn.models.registry import create_model, list_models


def test_models_table(capsys):
    assert main(["models", "googlenet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "params", "input", "reference"]
    assert len(lines) == 2 and lines[1].split()[:3] == ["googlenet", "6,998,552", "224x224x3"]
    assert "Szegedy et al. 2014" in lines[1]


def test_models_json_matches_the_builders(capsys):
    assert main(["models", "lenet*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models("lenet*")
    for row in rows:
        assert row["params"] == create_model(row["name"]).count_params()
        assert set(row) >= {"input_shape", "min_input_size", "preprocessing", "feature_info", "reference"}


def test_models_without_match_exits_1(capsys):
    assert main(["models", "nosuchnet*"]) == 1
    assert "no model matches 'nosuchnet*'" in capsys.readouterr().err


def test_summary_prints_the_layer_table(capsys):
    assert main(["summary", "googlenet", "--input-shape", "64", "64", "1"]) == 0
    out = capsys.readouterr().out
    # GoogLeNet's parameters do not depend on the input size; one channel saves 7*7*2*64 weights
    assert f"total params: {6_998_552 - 7 * 7 * 2 * 64:,}" in out
    assert "inception_5b_concat" in out and "(None, 2, 2, 1024)" in out
    header = out.splitlines()[0].split()
    assert header == ["layer", "type", "output", "shape", "params", "FLOPs", "RF", "jump"]


def test_summary_unknown_name_lists_close_matches(capsys):
    assert main(["summary", "googlenett"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kerascnn summary: error: Unknown model 'googlenett'")
    assert "Did you mean: googlenet" in err and err.count("\n") == 1


def test_summary_impossible_input_exits_2(capsys):
    assert main(["summary", "inception_v3", "--input-shape", "32", "32", "3"]) == 2
    assert "input 32x32 is too small" in capsys.readouterr().err
