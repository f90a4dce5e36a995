"""verify (1:1), identify (1:N) and calibrate, against slow obvious references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kerascnn.errors import DatasetError, EmptyGalleryError, UnknownIdentityError
from kerascnn.face.decision import calibrate, decide_identity, identify, pair_scores, verify


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def people():
    rng = np.random.default_rng(0)
    return {name: _unit(rng.normal(size=(k, 8))).astype(np.float32) for name, k in [("ann", 3), ("bob", 1), ("cy", 2)]}


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _dist(a, b):
    a, b = [x / math.sqrt(sum(v * v for v in a)) for x in a], [x / math.sqrt(sum(v * v for v in b)) for x in b]
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def test_verify_best_and_mean_templates_both_metrics(people):
    rng = np.random.default_rng(1)
    probe = people["ann"][1] + 0.3 * rng.normal(size=8)
    best_cos = max(_cos(t, probe) for t in people["ann"])
    mean = people["ann"].mean(axis=0)
    result = verify(people, "ann", probe, threshold=best_cos - 1e-4)
    assert result.match and result.score == pytest.approx(best_cos, abs=1e-5) and result.templates == 3
    assert not verify(people, "ann", probe, threshold=best_cos + 1e-4).match
    assert verify(people, "ann", probe, 0.0, reduce="mean").score == pytest.approx(_cos(mean, probe), abs=1e-5)
    best_dist = min(_dist(t, probe) for t in people["ann"])
    result = verify(people, "ann", probe, threshold=best_dist + 1e-4, metric="euclidean")
    assert result.match and result.score == pytest.approx(best_dist, abs=1e-5)
    assert not verify(people, "ann", probe, threshold=best_dist - 1e-4, metric="euclidean").match
    assert result.to_dict()["decision"] == "match"


def test_verify_errors(people):
    with pytest.raises(UnknownIdentityError, match="'zoe' is not enrolled \\(enrolled: ann, bob, cy\\)"):
        verify(people, "zoe", people["ann"][0], 0.5)
    with pytest.raises(EmptyGalleryError, match="'ann' has no templates enrolled"):
        verify({"ann": np.zeros((0, 8))}, "ann", people["ann"][0], 0.5)
    with pytest.raises(ValueError, match="probe has dimension 4, the templates of 'ann' 8"):
        verify(people, "ann", np.ones(4), 0.5)
    with pytest.raises(ValueError, match="one finite embedding"):
        verify(people, "ann", np.full(8, np.nan), 0.5)
    with pytest.raises(ValueError, match="metric must be one of"):
        verify(people, "ann", people["ann"][0], 0.5, metric="manhattan")
    with pytest.raises(ValueError, match="reduce must be one of"):
        verify(people, "ann", people["ann"][0], 0.5, reduce="median")


def test_identify_ranks_by_best_template_and_says_not_recognized(people):
    rng = np.random.default_rng(2)
    probe = people["cy"][1] + 0.2 * rng.normal(size=8)
    expected = sorted(((max(_cos(t, probe) for t in ts), n) for n, ts in people.items()), reverse=True)
    result = identify(people, probe, threshold=expected[0][0] - 1e-4, top_k=2)
    assert result.recognized and result.name == "cy" == expected[0][1]
    assert [c.name for c in result.candidates] == [n for _, n in expected[:2]]
    np.testing.assert_allclose([c.score for c in result.candidates], [s for s, _ in expected[:2]], atol=1e-5)
    missed = identify(people, probe, threshold=expected[0][0] + 1e-4)
    assert not missed.recognized and missed.name is None and missed.to_dict()["decision"] == "not recognized"
    assert len(missed.candidates) == 3
    dist = identify(people, probe, threshold=0.5, metric="euclidean", top_k=1)
    assert dist.candidates[0].score == pytest.approx(min(_dist(t, probe) for t in people["cy"]), abs=1e-5)


class _FakeGallery:
    """What verify/identify use of a gallery: templates(name) and search(queries, k)."""

    def __init__(self, people):
        self.people = people

    def templates(self, name):
        if name not in self.people:
            raise UnknownIdentityError(f"{name!r} is not enrolled")
        return self.people[name]

    def search(self, queries, k=1):
        names = list(self.people)
        sims = np.array([[np.max(self.people[n] @ _unit(q)) for n in names] for q in queries])
        order = np.argsort(-sims, axis=1)[:, :k]
        return np.array(names, dtype=object)[order], np.take_along_axis(sims, order, axis=1)


def test_gallery_and_search_result_give_the_same_decisions(people):
    probe = people["bob"][0]
    gallery = _FakeGallery(people)
    plain = identify(people, probe, 0.9, top_k=3)
    through_gallery = identify(gallery, probe, 0.9, top_k=3)
    through_result = identify(gallery.search(probe[None], k=3), None, 0.9)
    for other in (through_gallery, through_result):
        assert other.name == plain.name == "bob"
        assert [c.name for c in other.candidates] == [c.name for c in plain.candidates]
    assert verify(gallery, "bob", probe, 0.99).match
    with pytest.raises(UnknownIdentityError):
        verify(gallery, "zoe", probe, 0.5)


def test_identify_empty():
    with pytest.raises(EmptyGalleryError, match="nobody is enrolled"):
        identify({}, np.ones(8), 0.5)
    with pytest.raises(EmptyGalleryError, match="the gallery is empty"):
        decide_identity([], [], 0.5)


def _pairs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    same = np.arange(n) % 2 == 0
    left = rng.normal(size=(n, 8))
    right = np.where(same[:, None], left + 0.6 * rng.normal(size=(n, 8)), rng.normal(size=(n, 8)))
    return left.astype(np.float32), right.astype(np.float32), same


def test_calibrate_target_far_and_best_accuracy_against_a_sweep(tmp_path):
    left, right, same = _pairs()
    scores = [_cos(a, b) for a, b in zip(left, right)]
    cal = calibrate(left, right, same, target_far=0.01, roc_path=tmp_path / "roc.png")
    t = cal["threshold"]
    far = np.mean([s >= t for s, y in zip(scores, same) if not y])
    tar = np.mean([s >= t for s, y in zip(scores, same) if y])
    assert far <= 0.01 and cal["far"] == pytest.approx(far) and cal["tar"] == pytest.approx(tar)
    # no threshold with FAR <= 1% accepts more genuine pairs (sweep over every score)
    best_tar = max(np.mean([s >= c for s, y in zip(scores, same) if y]) for c in scores
                   if np.mean([s >= c for s, y in zip(scores, same) if not y]) <= 0.01)
    assert tar == pytest.approx(best_tar)
    assert set(cal["tar_at_far"]) == {"0.01", "0.001"} and 0.5 < cal["auc"] <= 1 and 0 <= cal["eer"] < 0.5
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and cal["roc_png"] == str(tmp_path / "roc.png")
    best = calibrate(left, right, same, target_far=None, metric="euclidean")
    dists = [_dist(a, b) for a, b in zip(left, right)]
    sweep = max(np.mean([(d <= c) == y for d, y in zip(dists, same)]) for c in dists)
    assert best["accuracy_at_threshold"] == pytest.approx(sweep) and best["metric"] == "euclidean"
    assert best["criterion"] == "best accuracy"


def test_calibrate_excludes_failed_pairs_and_checks_shapes():
    left, right, same = _pairs(200)
    left[:5] = np.nan
    cal = calibrate(left, right, same)
    assert cal["excluded_pairs"] == 5 and cal["num_genuine"] + cal["num_impostor"] == 195
    full = calibrate(left[5:], right[5:], same[5:])
    assert cal["threshold"] == full["threshold"]
    with pytest.raises(DatasetError, match=r"got \(200, 8\), \(199, 8\) and 200 labels"):
        calibrate(left, right[1:], same)


def test_pair_scores_match_reference():
    left, right, _ = _pairs(20)
    np.testing.assert_allclose(pair_scores(left, right), [_cos(a, b) for a, b in zip(left, right)], atol=1e-5)
    np.testing.assert_allclose(pair_scores(left, right, "euclidean"),
                               [_dist(a, b) for a, b in zip(left, right)], atol=1e-5)
