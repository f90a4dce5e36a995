"""kerascnn.evaluation against slow obvious references and scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerascnn.errors import DatasetError
from kerascnn.evaluation import (
    VerificationReport, accuracy, best_threshold, eer, evaluate_pairs, kfold_accuracy, pair_distances,
    plot_distance_histograms, plot_roc, roc_auc, roc_curve, tar_at_far,
)


def random_pairs(seed, n=400, ties=False, separable=False):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.5
    d = np.where(same, rng.normal(0.8, 0.3, n), rng.normal(1.3, 0.3, n))
    if separable:
        d = np.where(same, rng.uniform(0.1, 0.6, n), rng.uniform(0.9, 1.4, n))
    if ties:
        d = np.round(d, 1)
    return d, same


CASES = {"random": {}, "ties": {"ties": True}, "separable": {"separable": True}}


# --- slow references ---------------------------------------------------------------------------
def ref_rates(d, same, t):
    """(far, tar) when accepting distance <= t."""
    return np.mean(d[~same] <= t), np.mean(d[same] <= t)


def ref_thresholds(d):
    return np.r_[-np.inf, np.unique(d)]


def ref_auc(d, same):
    """Mann-Whitney: P(genuine distance < impostor distance) + 1/2 P(tie)."""
    g, i = d[same], d[~same]
    wins = sum(np.sum(x < i) + 0.5 * np.sum(x == i) for x in g)
    return wins / (g.size * i.size)


def ref_best_accuracy(d, same):
    return max(np.mean((d <= t) == same) for t in ref_thresholds(d))


# --- tests -------------------------------------------------------------------------------------
def test_pair_distances_match_loops():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    np.testing.assert_allclose(pair_distances(a, b), [np.linalg.norm(x - y) for x, y in zip(a, b)])
    np.testing.assert_allclose(pair_distances(a, b, "squared_euclidean"), [np.sum((x - y) ** 2) for x, y in zip(a, b)])
    np.testing.assert_allclose(
        pair_distances(a, b, "cosine"), [1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)]
    )
    with pytest.raises(ValueError, match="metric must be one of 'euclidean', 'squared_euclidean', 'cosine', got 'l1'"):
        pair_distances(a, b, "l1")
    with pytest.raises(DatasetError, match=r"same shape, got \(6, 4\) and \(5, 4\)"):
        pair_distances(a, b[:5])


@pytest.mark.parametrize("case", CASES)
def test_roc_curve_matches_threshold_sweep(case):
    d, same = random_pairs(1, **CASES[case])
    far, tar, thresholds = roc_curve(d, same)
    assert thresholds[0] == -np.inf and (far[0], tar[0], far[-1], tar[-1]) == (0, 0, 1, 1)
    np.testing.assert_array_equal(thresholds, ref_thresholds(d))
    for f, t, th in zip(far, tar, thresholds):
        assert (f, t) == pytest.approx(ref_rates(d, same, th))
    # similarities give the same curve with the sign-flipped thresholds
    far_s, tar_s, th_s = roc_curve(-d, same, similarity=True)
    np.testing.assert_array_equal(far_s, far)
    np.testing.assert_array_equal(th_s, -thresholds)


@pytest.mark.parametrize("case", CASES)
def test_auc_eer_tar_against_references(case):
    d, same = random_pairs(2, **CASES[case])
    assert roc_auc(d, same) == pytest.approx(ref_auc(d, same), abs=1e-12)
    rates = np.array([ref_rates(d, same, t) for t in ref_thresholds(d)])
    minmax = np.min(np.maximum(rates[:, 0], 1 - rates[:, 1]))
    e = eer(d, same)
    assert minmax - max(1 / same.sum(), 1 / (~same).sum()) - 1e-12 <= e <= minmax + 1e-12
    for target, got in tar_at_far(d, same, (1e-2, 0.1, 0.5)).items():
        assert got == pytest.approx(max(t for f, t in rates if f <= target))
    if case == "separable":
        assert roc_auc(d, same) == 1.0 and e == 0.0 and tar_at_far(d, same, 1e-3) == {1e-3: 1.0}


@pytest.mark.parametrize("case", CASES)
def test_against_sklearn(case):
    metrics = pytest.importorskip("sklearn.metrics")
    d, same = random_pairs(3, **CASES[case])
    assert roc_auc(d, same) == pytest.approx(metrics.roc_auc_score(same, -d), abs=1e-12)
    fpr, tpr, _ = metrics.roc_curve(same, -d, drop_intermediate=False)
    far, tar, _ = roc_curve(d, same)
    np.testing.assert_allclose(far, fpr)
    np.testing.assert_allclose(tar, tpr)


def test_eer_of_known_distributions():
    # genuine uniform on [0, 1], impostor uniform on [0.5, 1.5]: FAR = FRR = 0.25 at t = 0.75
    rng = np.random.default_rng(4)
    d = np.r_[rng.uniform(0, 1, 20000), rng.uniform(0.5, 1.5, 20000)]
    same = np.r_[np.ones(20000, bool), np.zeros(20000, bool)]
    assert eer(d, same) == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("case", CASES)
def test_best_threshold_reaches_the_best_accuracy(case):
    d, same = random_pairs(5, **CASES[case])
    t = best_threshold(d, same)
    assert accuracy(d, same, t) == pytest.approx(ref_best_accuracy(d, same))
    assert not np.any(d == t)  # halfway between values, never on one
    far_t = best_threshold(d, same, target_far=0.05)
    f, tr = ref_rates(d, same, far_t)
    assert f <= 0.05 and tr == pytest.approx(tar_at_far(d, same, 0.05)[0.05])
    ts = best_threshold(-d, same, similarity=True)
    assert ts == pytest.approx(-t) and accuracy(-d, same, ts, similarity=True) == accuracy(d, same, t)


@pytest.mark.parametrize("case", CASES)
def test_kfold_chooses_thresholds_on_the_other_folds(case):
    d, same = random_pairs(6, n=300, **CASES[case])
    result = kfold_accuracy(d, same, folds=10)
    fold = np.repeat(np.arange(10), 30)
    for k in range(10):
        train, test = fold != k, fold == k
        assert accuracy(d[train], same[train], result.thresholds[k]) == pytest.approx(ref_best_accuracy(d[train], same[train]))
        assert result.accuracies[k] == pytest.approx(np.mean((d[test] <= result.thresholds[k]) == same[test]))
    assert result.mean == pytest.approx(np.mean(result.accuracies))
    assert result.std == pytest.approx(np.std(result.accuracies))
    by_ids = kfold_accuracy(d, same, folds=fold)
    assert by_ids.accuracies == result.accuracies
    if case == "separable":
        assert result.mean == 1.0 and result.std == 0.0


def test_evaluate_pairs_report_and_json():
    d, same = random_pairs(7)
    report = evaluate_pairs(d, same, folds=5)
    assert isinstance(report, VerificationReport)
    assert report.accuracy == kfold_accuracy(d, same, 5).mean
    assert report.auc == roc_auc(d, same) and report.eer == eer(d, same)
    assert report.threshold == best_threshold(d, same)
    assert (report.num_genuine, report.num_impostor) == (int(same.sum()), int((~same).sum()))
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data["tar_at_far"]) == {"0.01", "0.001"} and "far" not in data
    assert data["tar_at_far"]["0.01"] == report.tar_at_far[0.01]


def test_plots_write_png(tmp_path):
    d, same = random_pairs(8)
    report = evaluate_pairs(d, same)
    for path in (
        plot_roc(report, tmp_path / "roc.png"),
        plot_roc(roc_curve(d, same)[:2], tmp_path / "roc2.png", label="model"),
        plot_distance_histograms(d, same, report.threshold, tmp_path / "hist.png"),
    ):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_pairs_raise_dataset_error():
    with pytest.raises(DatasetError, match="need both genuine and impostor pairs, got 3 genuine and 0 impostor"):
        roc_auc([0.1, 0.2, 0.3], [True, True, True])
    with pytest.raises(DatasetError, match="one label per pair: 3 values but 2 labels"):
        eer([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(DatasetError, match="distances must be finite; 1 are NaN or infinite"):
        kfold_accuracy([0.1, np.nan, 0.3, 0.4], [True, False, True, False], folds=2)
    with pytest.raises(DatasetError, match=r"folds must be between 2 and the number of pairs \(4\), got 5"):
        kfold_accuracy([0.1, 0.2, 0.3, 0.4], [True, False, True, False], folds=5)
    with pytest.raises(DatasetError, match="one fold id per pair: 4 pairs but 3 fold ids"):
        kfold_accuracy([0.1, 0.2, 0.3, 0.4], [True, False, True, False], folds=[0, 1, 1])


def test_pair_labels_as_scikit_learn_checks_them():
    """{-1, 1} labels as sklearn (1 positive), {0, 1, 2} refused as sklearn does; a single class
    refused on purpose (sklearn warns and returns NaN; kerascnn raises, as no metric has a value)."""
    metrics = pytest.importorskip("sklearn.metrics")
    from sklearn.exceptions import UndefinedMetricWarning

    d, same = random_pairs(5)
    signed = np.where(same, 1, -1)
    fpr, tpr, _ = metrics.roc_curve(signed, -d, drop_intermediate=False)
    far, tar, _ = roc_curve(d, signed)
    np.testing.assert_allclose(far, fpr)
    np.testing.assert_allclose(tar, tpr)
    assert roc_auc(d, signed) == pytest.approx(metrics.roc_auc_score(signed, -d), abs=1e-12)
    assert roc_auc(d, same.astype(float)) == roc_auc(d, same)
    three = np.arange(d.size) % 3
    with pytest.raises(ValueError, match="multiclass"):
        metrics.roc_curve(three, -d)
    with pytest.raises(DatasetError, match=r"pair labels must be two classes, .*\{-1, 1\} .*got the values \[0, 1, 2\]"):
        roc_curve(d, three)
    with pytest.raises(DatasetError, match=r"got the values \['no', 'yes'\]"):
        roc_auc(d[:4], ["yes", "no", "yes", "no"])
    with pytest.warns(UndefinedMetricWarning, match="Only one class"):
        assert np.isnan(metrics.roc_auc_score(np.ones(4), d[:4]))
    for one_class in (np.ones(4), -np.ones(4), np.zeros(4, bool)):
        with pytest.raises(DatasetError, match="need both genuine and impostor pairs"):
            roc_auc(d[:4], one_class)
