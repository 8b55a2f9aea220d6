"""Bootstrap intervals and rate intervals: known answers on hand-made scores."""

import numpy as np
import pytest
from scipy.stats import norm

from dfattn.evaluate import bootstrap_metrics, paired_bootstrap, rate_interval


def _gaussian(n: int, d: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n, int), np.ones(n, int)]
    z = np.r_[rng.normal(0, 1, n), rng.normal(d, 1, n)]
    return y, 1 / (1 + np.exp(-z))


def test_perfect_separation_has_a_degenerate_interval():
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    s = np.r_[np.linspace(0.0, 0.4, 20), np.linspace(0.6, 1.0, 20)]
    table = bootstrap_metrics(y, s, n_boot=200)
    assert tuple(table.loc["auc", ["value", "low", "high"]]) == (1.0, 1.0, 1.0)
    assert tuple(table.loc["eer", ["value", "low", "high"]]) == (0.0, 0.0, 0.0)
    assert table.loc["auc", "n"] == 40 and table.loc["auc", "n_fake"] == 20


def test_the_auc_interval_covers_the_true_auc_and_has_the_expected_width():
    d = 1.0
    true_auc = norm.cdf(d / np.sqrt(2))  # binormal scores, unit variances
    y, s = _gaussian(1000, d)
    table = bootstrap_metrics(y, s, metrics=("auc",), n_boot=400, seed=1)
    low, high = table.loc["auc", ["low", "high"]]
    assert low < true_auc < high
    # Hanley & McNeil (1982) standard error of the AUC, as a check on the width
    a, n = true_auc, 1000
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (n * n))
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.25)
    # a quarter of the data: about twice as wide
    y4, s4 = _gaussian(250, d, seed=2)
    t4 = bootstrap_metrics(y4, s4, metrics=("auc",), n_boot=400, seed=1)
    assert 1.5 < (t4.loc["auc", "high"] - t4.loc["auc", "low"]) / (high - low) < 2.7


def test_bootstrap_is_deterministic_under_its_seed():
    y, s = _gaussian(100, 0.5)
    first = bootstrap_metrics(y, s, n_boot=100, seed=3)
    assert first.equals(bootstrap_metrics(y, s, n_boot=100, seed=3))
    assert not first.equals(bootstrap_metrics(y, s, n_boot=100, seed=4))


def test_paired_differences():
    y, a = _gaussian(300, 1.5)
    same = paired_bootstrap(y, a, a, n_boot=100)
    assert (same[["difference", "low", "high"]] == 0).all().all()
    rng = np.random.default_rng(5)
    b = 1 / (1 + np.exp(-(np.log(a / (1 - a)) + rng.normal(0, 2, a.size))))  # a plus noise: worse
    diff = paired_bootstrap(y, a, b, metrics=("auc", "eer"), n_boot=300)
    assert diff.loc["auc", "low"] > 0 and diff.loc["auc", "p_below_zero"] < 0.025
    assert diff.loc["eer", "high"] < 0  # a's error rate is lower
    assert diff.loc["auc", "difference"] == pytest.approx(diff.loc["auc", "a"] - diff.loc["auc", "b"])
    with pytest.raises(ValueError, match="both real and fake"):
        paired_bootstrap([1, 1], [0.1, 0.2], [0.3, 0.4])


def test_wilson_interval_known_values():
    assert rate_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert rate_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert rate_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(np.isnan(rate_interval(0, 0)))
    with pytest.raises(ValueError):
        rate_interval(11, 10)


def test_rates_by_group_counts_and_intervals():
    """False alarms per group on hand-made decisions: counts, rates and the Wilson interval of
    each group, unknown labels in no group."""
    from dfattn.evaluate import rate_interval, rates_by_group

    flagged = [True, False, False, False, True, True, False, False]
    gender = ["male", "male", "male", "male", "female", "female", "female", None]
    table = rates_by_group(flagged, {"gender": gender})
    assert table.loc[("all", "all"), "n"] == 8 and table.loc[("all", "all"), "flagged"] == 3
    assert table.loc[("gender", "male"), "rate"] == pytest.approx(0.25)
    assert table.loc[("gender", "female"), "rate"] == pytest.approx(2 / 3)
    assert table.loc[("gender", "female"), "n"] == 3  # the unknown one is in no group
    low, high = rate_interval(2, 3)
    assert (table.loc[("gender", "female"), "low"], table.loc[("gender", "female"), "high"]) == pytest.approx((low, high))
    assert low < 2 / 3 < high
    with pytest.raises(ValueError, match="gender"):
        rates_by_group(flagged, {"gender": gender[:5]})


def test_utkface_names():
    from dfattn.data.utkface import utkface_attributes

    assert utkface_attributes("utk/26_1_2_20170116184024662.jpg") == {"age": "20-39", "gender": "female", "race": "Asian"}
    assert utkface_attributes("100_0_0_20170112213500903.jpg") == {"age": "60+", "gender": "male", "race": "White"}
    assert utkface_attributes("9_0_4_x.jpg")["age"] == "0-19"
    assert utkface_attributes("39_1_20170116174525125.jpg") is None  # a field missing


@pytest.mark.parametrize("ties", [False, True])
def test_resampled_metrics_equal_the_metrics_of_each_resampled_array(ties):
    """The vectorised bootstrap (counts of draws, one sort) gives what each metric computes on
    each resampled array, ties included, whatever the block size."""
    from dfattn.evaluate import BOOTSTRAP_METRICS, _metric, _resampled_metrics, _resamples

    rng = np.random.default_rng(1)
    y = (rng.random(240) < 0.4).astype(int)
    s = (rng.random(240) + 0.4 * y) / 1.4
    if ties:
        s = np.round(s, 1)  # a handful of distinct scores, most images tied
    metrics = (*BOOTSTRAP_METRICS, "tpr_at_fpr_10")
    loop = np.array([[_metric(m, y[i], s[i]) for m in metrics] for i in _resamples(y, 60, 7)])
    for block in (240, 240 * 7, 10**7):  # one resample a block, 7, all
        np.testing.assert_allclose(_resampled_metrics(y, s, metrics, 60, 7, block=block), loop, rtol=0,
                                   atol=1e-12)
    with pytest.raises(ValueError, match="unknown metric 'acc'"):
        _resampled_metrics(y, s, ("acc",), 5, 0)
