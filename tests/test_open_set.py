"""Open-set (1:N) calibration and operating points, on embeddings synthesised in NumPy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kerascnn.errors import DatasetError, FaceModelError
from kerascnn.face.model import load_open_set_calibration, save_calibration, save_open_set_calibration
from kerascnn.face.decision import calibrate_open_set, open_set_threshold


def synthetic(people=60, images=(1, 6), dim=32, noise=0.9, seed=0):
    """Unit embeddings: each person a random centre, each image the centre plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    counts = rng.integers(images[0], images[1] + 1, size=people)
    labels = np.repeat([f"p{i:03d}" for i in range(people)], counts)
    x = np.repeat(centres, counts, axis=0) + noise * rng.normal(size=(counts.sum(), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def reference(embeddings, labels, sizes, fpirs, enroll, draws, seed):
    """Slow restatement: the same random draws (sizes in turn), loops over searches and
    identities, and the threshold found by scanning every non-mated score."""
    rng = np.random.default_rng(seed)
    return {n: reference_size(embeddings, labels, n, fpirs, enroll, draws, rng) for n in sizes}


def reference_size(embeddings, labels, n, fpirs, enroll, draws, rng):
    people = sorted(set(labels))
    rows = {p: [i for i, l in enumerate(labels) if l == p] for p in people}
    mateable = [k for k, p in enumerate(people) if len(rows[p]) > enroll]
    mated, non_mated = [], []
    for _ in range(draws):
        chosen = rng.choice(np.array(mateable), size=n, replace=False)
        gallery, probes = {}, []
        for k in chosen:
            order = rng.permutation(np.array(rows[people[k]]))
            gallery[people[k]] = order[:enroll]
            probes += [(i, people[k]) for i in order[enroll:]]

        def search(i):
            best = max(gallery, key=lambda name: max(float(embeddings[i] @ embeddings[t]) for t in gallery[name]))
            return best, max(float(embeddings[i] @ embeddings[t]) for t in gallery[best])

        mated += [(search(i)[0] == truth, search(i)[1]) for i, truth in probes]
        non_mated += [search(i)[1] for i, l in enumerate(labels) if l not in gallery]
    out = {}
    for f in fpirs:
        # the lowest non-mated score s such that at most f * M searches score strictly above it
        s = min(v for v in non_mated if sum(w > v for w in non_mated) <= f * len(non_mated))
        out[f] = (s, sum(ok and score > s for ok, score in mated) / len(mated), sum(w > s for w in non_mated) / len(non_mated))
    return out


@pytest.mark.parametrize("enroll", [1, 2])
def test_calibration_matches_a_slow_reference(enroll):
    emb, labels = synthetic(people=40, seed=enroll)
    got = calibrate_open_set(emb, labels, gallery_sizes=[5, 20], fpirs=(0.1, 0.02), enroll_per_person=enroll, draws=3, seed=7)
    want = reference(emb, labels, [5, 20], (0.1, 0.02), enroll, 3, 7)
    for point in got["operating_points"]:
        s, dir_, fpir = want[point["gallery_size"]][point["fpir"]]
        assert s - 1e-6 < point["threshold"] <= s + 2e-6  # just above s (float32 dot products differ by ulps)
        assert point["dir"] == pytest.approx(dir_)
        assert point["fpir_measured"] == pytest.approx(fpir) and fpir <= point["fpir"]
    assert any(0 < p["dir"] < 1 for p in got["operating_points"])  # a case where the threshold matters


def test_threshold_rises_with_the_gallery_size_and_separated_people_are_all_found(tmp_path):
    emb, labels = synthetic(people=400, images=(2, 4), noise=0.9)
    result = calibrate_open_set(emb, labels, fpirs=(0.1, 0.01), draws=2, plot_path=tmp_path / "dir.png")
    sizes = sorted({p["gallery_size"] for p in result["operating_points"]})
    assert sizes == [10, 100]  # 1000 does not fit 400 people
    t = {(p["gallery_size"], p["fpir"]): p["threshold"] for p in result["operating_points"]}
    assert t[(100, 0.1)] > t[(10, 0.1)] and t[(100, 0.01)] > t[(10, 0.01)]
    assert (tmp_path / "dir.png").stat().st_size > 1000 and result["plot_png"].endswith("dir.png")
    easy = calibrate_open_set(*synthetic(people=50, noise=0.05), gallery_sizes=[10], fpirs=(0.01,), draws=2)
    assert easy["operating_points"][0]["dir"] == 1.0 and easy["operating_points"][0]["rank1"] == 1.0


def test_euclidean_thresholds_are_the_cosine_ones_converted():
    emb, labels = synthetic(people=40)
    cos = calibrate_open_set(emb, labels, gallery_sizes=[10], fpirs=(0.1,), metric="cosine")
    euc = calibrate_open_set(emb, labels, gallery_sizes=[10], fpirs=(0.1,), metric="euclidean")
    s, d = cos["operating_points"][0]["threshold"], euc["operating_points"][0]["threshold"]
    assert d == pytest.approx(math.sqrt(2 - 2 * s), abs=1e-5)
    assert euc["operating_points"][0]["dir"] == cos["operating_points"][0]["dir"]


def test_repeated_fpirs_give_one_operating_point_each():
    emb, labels = synthetic()
    result = calibrate_open_set(emb, labels, gallery_sizes=[5, 10], fpirs=(0.5, 0.1, 0.5), draws=1)
    assert [(p["gallery_size"], p["fpir"]) for p in result["operating_points"]] == [
        (5, 0.5), (5, 0.1), (10, 0.5), (10, 0.1)]


def test_bad_input_messages():
    emb, labels = synthetic(people=30)
    with pytest.raises(DatasetError, match="at least 2 people .* got 1"):
        calibrate_open_set(emb[:5], ["a"] * 5, gallery_sizes=[1])
    with pytest.raises(DatasetError, match="people with at least 2 images .* every one of the 30 people has at most 1"):
        calibrate_open_set(emb[:30], [f"p{i}" for i in range(30)])
    with pytest.raises(DatasetError, match=r"gallery sizes \[500\] cannot be drawn: .* at most"):
        calibrate_open_set(emb, labels, gallery_sizes=[10, 500])
    few = labels[:40]
    with pytest.raises(DatasetError, match=r"no target FPIR can be measured: \d+ non-mated searches, .*needs at least "
                                           r"1/f \(better 10/f; 1000 for 0.001\)"):
        calibrate_open_set(emb[:40], few, gallery_sizes=[5], fpirs=(1e-3,), draws=1)
    with pytest.raises(ValueError, match=r"every FPIR must be in \(0, 1\), got \[0.0\]"):
        calibrate_open_set(emb, labels, fpirs=(0.0,))


def test_unmeasurable_fpir_is_kept_with_the_count_needed():
    emb, labels = synthetic(people=30)
    result = calibrate_open_set(emb, labels, gallery_sizes=[10], fpirs=(0.1, 1e-3), draws=1)
    low = next(p for p in result["operating_points"] if p["fpir"] == 1e-3)
    assert low["threshold"] is None and low["non_mated_needed"] == 1000 and low["non_mated_searches"] < 1000


CAL = {"metric": "cosine", "source": "synthetic", "operating_points": [
    {"gallery_size": 10, "fpir": 0.01, "threshold": 0.5, "dir": 0.9},
    {"gallery_size": 100, "fpir": 0.01, "threshold": 0.6, "dir": 0.8},
    {"gallery_size": 10, "fpir": 0.001, "threshold": None, "dir": None},
]}


def test_open_set_threshold_interpolates_in_log_n_and_says_what_it_used():
    exact = open_set_threshold(CAL, 100, 0.01)
    assert exact.threshold == 0.6 and exact.how == "calibrated at N=100"
    mid = open_set_threshold(CAL, 31, 0.01)  # log10(31) = 1.491: 49.1% of the way from 10 to 100
    assert mid.threshold == pytest.approx(0.5 + 0.1 * math.log10(3.1)) and "interpolated in log N between N=10 and N=100" in mid.how
    low = open_set_threshold(CAL, 3, 0.01)
    assert low.threshold == 0.5 and "below the calibrated range 10..100: using the N=10 operating point" in low.how
    high = open_set_threshold(CAL, 5000, 0.01)
    assert high.threshold == 0.6 and "above the calibrated range 10..100: using the N=100 operating point (the FPIR will exceed 0.01" in high.how
    assert "FPIR 0.01 for a gallery of 5000, cosine threshold 0.6000" in high.describe()
    with pytest.raises(DatasetError, match=r"no 1:N operating point at FPIR 0.001 .*\(calibrated and measured: 0.01\)"):
        open_set_threshold(CAL, 10, 0.001)


def test_open_set_calibration_is_stored_beside_the_one_to_one(tmp_path):
    model = tmp_path / "m.keras"
    save_calibration(model, {"metric": "cosine", "threshold": 0.4})
    assert load_open_set_calibration(model) is None
    save_open_set_calibration(model, CAL)
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["calibration"]["threshold"] == 0.4 and card["open_set_calibration"] == CAL
    assert load_open_set_calibration(model) == CAL
    with pytest.raises(FaceModelError, match="needs operating_points"):
        save_open_set_calibration(model, {"metric": "cosine"})
