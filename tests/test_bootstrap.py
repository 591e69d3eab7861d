"""The cluster bootstrap behind `deblur eval --ci`, and the weight-selection rule built on it."""

import numpy as np
import pytest

from deblur_cli.eval import selection as sw
from deblur_cli.eval.bootstrap import cluster_of, interval, mean_interval, resampled_means


@pytest.mark.parametrize(
    ("name", "cluster"),
    [
        ("GOPR0384_11_00/000001.png", "GOPR0384_11_00"),  # GoPro layout: the scene
        ("baboon_linear.png", "baboon"),
        ("baboon_shake.png", "baboon"),
        ("squirrel_cls_halfshake.png", "squirrel_cls"),
        ("IMG_0001.png", "IMG_0001.png"),  # anything else: its own cluster
        ("linear.png", "linear.png"),
    ],
)
def test_cluster_of(name, cluster):
    assert cluster_of(name) == cluster


def test_constant_values_give_a_point():
    samples = resampled_means([{f"p{i}_linear.png": 1.5 for i in range(7)}], n=500)
    assert samples.shape == (500, 1) and np.allclose(samples, 1.5)


def test_resampled_mean_is_centred_on_the_sample_mean():
    rng = np.random.default_rng(3)
    values = {f"p{i}.png": float(v) for i, v in enumerate(rng.normal(0.7, 0.4, 40))}
    samples = resampled_means([values], n=20_000, seed=1)[:, 0]
    assert samples.mean() == pytest.approx(np.mean(list(values.values())), abs=0.005)
    # The bootstrap's spread is the standard error of the mean (sd / sqrt(n), ddof 0).
    assert samples.std() == pytest.approx(np.std(list(values.values())) / np.sqrt(40), rel=0.05)


def test_clusters_widen_the_interval_when_their_pairs_agree():
    # Two pairs per photograph with the same gain: 12 independent values, not 24. Treating the
    # pairs as independent would shrink the interval by about sqrt(2).
    rng = np.random.default_rng(0)
    per_photo = rng.normal(0.5, 0.5, 12)
    values = {f"p{i}_{k}.png": float(g) for i, g in enumerate(per_photo) for k in ("linear", "shake")}
    lo_c, hi_c = mean_interval(values, seed=2)
    lo_i, hi_i = mean_interval(values, cluster=lambda n: n, seed=2)
    assert (hi_c - lo_c) / (hi_i - lo_i) == pytest.approx(np.sqrt(2), rel=0.1)


def test_sets_share_their_resamples():
    a = {f"p{i}_linear.png": float(i) for i in range(9)}
    b = {f"p{i}_shake.png": float(i) for i in range(9)}
    samples = resampled_means([a, b], n=300)
    # Same photographs drawn for both sets: identical means, not two independent draws.
    assert np.array_equal(samples[:, 0], samples[:, 1]) and samples[:, 0].std() > 0


def test_same_seed_same_figures():
    values = {f"p{i}.png": float(np.sin(i)) for i in range(20)}
    assert mean_interval(values, seed=4) == mean_interval(values, seed=4)
    assert mean_interval(values, seed=4) != mean_interval(values, seed=5)


def test_interval_percentiles():
    assert interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    assert interval(np.array([np.nan, 1.0, 2.0, 3.0]), 0.5) == pytest.approx((1.5, 2.5))


@pytest.mark.parametrize(
    "bad",
    [{"sets": []}, {"sets": [{}]}, {"sets": [{"a": 1.0}], "n": 0}, {"sets": [{"a_linear.png": float("inf")}]}],
)
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        resampled_means(**bad)


def test_bad_intervals():
    with pytest.raises(ValueError):
        interval(np.array([np.nan]))
    with pytest.raises(ValueError):
        interval(np.arange(3.0), 1.0)


def _gains(per_photo_val, per_photo_near):
    return {
        "val": {f"p{i}_{k}.png": g for i, g in enumerate(per_photo_val) for k in ("linear", "shake")},
        "near": {f"p{i}_{k}.png": g for i, g in enumerate(per_photo_near) for k in ("linear", "shake")},
    }


def test_selection_bootstrap_passes_a_steady_gain_and_not_one_lucky_photograph():
    rng = np.random.default_rng(0)
    base_val, base_near = rng.normal(0.5, 0.5, 19), rng.normal(-0.3, 0.3, 19)
    b = _gains(base_val, base_near)
    steady = _gains(base_val + 0.05 + rng.normal(0, 0.02, 19), base_near + 0.05)
    lucky = _gains(base_val + np.r_[1.9, np.zeros(18)], base_near)  # the same +0.05 mean score, one photograph
    q = 0.05 / 5
    assert np.quantile(sw.score_difference_samples(steady, b, 5000), q) > 0
    # Resamples without photograph 0 give exactly 0: the quantile is 0, and the rule needs > 0.
    assert np.quantile(sw.score_difference_samples(lucky, b, 5000), q) <= 0
    assert sw.score_difference_samples(lucky, b, 5000).mean() == pytest.approx(0.05, abs=0.01)


def _rows(candidates):
    return {n: sw.figures(g, 0.05) for n, g in candidates.items()}


def test_selection_tests_only_the_best_scoring_candidate():
    rng = np.random.default_rng(1)
    base_val, base_near = rng.normal(0.5, 0.5, 19), rng.normal(-0.3, 0.3, 19)
    gains = {
        "bundled (B)": _gains(base_val, base_near),
        "steady": _gains(base_val + 0.06, base_near + 0.06),  # passes alone
        "lucky": _gains(base_val + np.r_[4.0, np.zeros(18)], base_near),  # higher mean, one photograph
        "worse": _gains(base_val - np.r_[1.0, np.zeros(18)], base_near + 1.0),  # a pair below -0.05: not eligible
    }
    c = sw.choose(_rows(gains), gains, bootstrap=4000)
    assert c["eligible"] == {"bundled (B)": True, "steady": True, "lucky": True, "worse": False}
    assert c["k"] == 2 and c["q"] == pytest.approx(0.025)
    assert c["lows"]["steady"] > 0 and c["lows"]["lucky"] <= 0
    assert c["best"] == "bundled (B)"  # "lucky" scores highest and fails; "steady" is not tried
    del gains["lucky"]
    c = sw.choose(_rows(gains), gains, bootstrap=4000)
    assert c["k"] == 1 and c["best"] == "steady"


def test_selection_margin_without_bootstrap_and_ties():
    rows = {
        "bundled (B)": {"G": 0.2, "W": 0, "S": 0.0},
        "a": {"G": 0.38, "W": 0, "S": 0.0},  # +0.09 over B
        "tie": {"G": 0.2, "W": 0, "S": 0.0},
    }
    assert sw.choose(rows, {})["best"] == "bundled (B)"
    rows["b"] = {"G": 0.4, "W": 0, "S": 0.0}  # +0.10 over B
    rows["c"] = {"G": 0.4, "W": 0, "S": 0.0}  # the same score, named later
    assert sw.choose(rows, {})["best"] == "b"
    assert sw.choose({"bundled (B)": rows["bundled (B)"], "tie": rows["tie"]}, {})["best"] == "bundled (B)"
