"""scripts/evaluate_all_pairs.py: every pair of a fold's people, against obvious references."""

import importlib.util
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_all_pairs.py"
    spec = importlib.util.spec_from_file_location("evaluate_all_pairs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_pairs_report_matches_counting(script):
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    centres = np.eye(3, 8, dtype=np.float32)
    emb = centres[labels] + 0.05 * rng.standard_normal((len(labels), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[4] = np.nan  # an image without a face drops out of every pair
    report = script.all_pairs_report(emb, labels, threshold=0.5)
    kept = [i for i in range(len(labels)) if i != 4]
    pairs = list(combinations(kept, 2))
    genuine = [(i, j) for i, j in pairs if labels[i] == labels[j]]
    assert report["no_face"] == 1 and report["images"] == 9
    assert report["genuine_pairs"] == len(genuine) == 3 + 0 + 6
    assert report["impostor_pairs"] == len(pairs) - len(genuine)
    # well separated clusters: perfect ranking, and the threshold splits them exactly
    assert report["auc"] == pytest.approx(1.0) and report["eer"] == pytest.approx(0.0)
    assert report["tar_at_threshold"] == 1.0 and report["far_at_threshold"] == 0.0
    assert report["balanced_accuracy_at_threshold"] == 1.0
    worse = script.all_pairs_report(emb, labels, threshold=1.01)
    assert worse["tar_at_threshold"] == 0.0 and worse["balanced_accuracy_at_threshold"] == 0.5


def test_fold_images_are_the_folds_people(script, lfw_pairs, lfw_dir):
    from kerascnn.data.lfw import read_pairs

    paths, labels = script.fold_images(lfw_pairs, lfw_dir, [7], max_people=5)
    people = sorted(read_pairs(lfw_pairs, lfw_dir).people_of_fold(6))[:5]
    assert sorted({Path(p).parent.name for p in paths}) == people
    assert all(Path(p).parent.name == people[y] for p, y in zip(paths, labels))
    assert len(paths) == sum(len(list((lfw_dir / n).glob("*.jpg"))) for n in people)


@pytest.mark.slow
def test_cli_scores_the_shipped_model(script, lfw_pairs, lfw_dir, yunet_path, capsys):
    code = script.main(["--pairs", str(lfw_pairs), "--images", str(lfw_dir), "--folds", "7", "--max-people", "6",
                        "--detector-model", str(yunet_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    report = out["models"]["shipped"]
    assert code == 0 and out["folds"] == [7]
    assert report["no_face"] == 0 and report["genuine_pairs"] + report["impostor_pairs"] == (
        report["images"] * (report["images"] - 1) // 2)
    assert 0.0 <= report["far_at_threshold"] <= 1.0 and report["auc"] > 0.5
