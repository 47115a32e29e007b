"""Paired bootstrap on hand-made cases, and on protocol results."""

from __future__ import annotations

import numpy as np
import pytest

from vireid.evaluation.significance import SignificanceError, compare_results, paired_bootstrap


def test_constant_difference_is_significant_with_a_point_interval():
    c = paired_bootstrap([1, 1, 1, 1], [0, 0, 0, 0], resamples=999, seed=0, names=("new", "old"))
    assert (c.difference, c.ci_low, c.ci_high) == (1.0, 1.0, 1.0)
    assert c.p_value == pytest.approx(2 / 1000) and c.significant and "new is better" in c.verdict


def test_hand_computed_bootstrap_distribution():
    # d = (0, 0, 0, 3): the resampled mean is 3K/4 with K ~ Binomial(4, 1/4) copies of the 3.
    # P(K=0) = 0.316 -> 2.5% quantile 0; P(K<=2) = 0.949, P(K<=3) = 0.996 -> 97.5% quantile 2.25;
    # p = 2 * P(mean <= 0) = 0.633.
    c = paired_bootstrap([0, 0, 0, 3], [0, 0, 0, 0], resamples=20000, seed=1)
    assert c.difference == 0.75 and c.ci_low == 0.0 and c.ci_high == 2.25
    assert c.p_value == pytest.approx(2 * 0.75**4, abs=0.02) and not c.significant and "noise" in c.verdict
    again = paired_bootstrap([0, 0, 0, 3], [0, 0, 0, 0], resamples=20000, seed=1)
    assert again.to_dict() == c.to_dict()


def test_units_and_masks():
    a = np.array([[1.0, 3.0], [2.0, 0.0]])
    b = np.zeros((2, 2))
    valid = np.array([[True, True], [True, False]])
    by_query = paired_bootstrap(a, b, valid=valid, unit="query", resamples=50)
    assert by_query.a == pytest.approx((2.0 + 2.0) / 2) and by_query.units == 2
    by_trial = paired_bootstrap(a, b, valid=valid, unit="trial", resamples=50)
    assert by_trial.a == pytest.approx((1.5 + 3.0) / 2) and by_trial.units == 2
    with pytest.raises(SignificanceError, match="unit"):
        paired_bootstrap(a, b, unit="image")
    with pytest.raises(SignificanceError, match="same shape"):
        paired_bootstrap(a, b[:1])


def test_compare_protocol_results_pairs_queries():
    import torch

    from vireid.evaluation import run_protocol
    from test_mixed_gallery import SYSU, _features, _pool

    pool = _pool(SYSU)
    good, noisy = _features(pool), _features(pool) + 3.0 * torch.randn(len(pool), 8, generator=torch.Generator().manual_seed(9))
    ra, rb = (run_protocol("sysu-all-single", f, pool, trials=2) for f in (good, noisy))
    c = compare_results(ra, rb, "mAP", resamples=2000)
    assert c.difference == pytest.approx(ra.mean["mAP"] - rb.mean["mAP"]) and c.ci_low <= c.difference <= c.ci_high
    with pytest.raises(SignificanceError, match="cannot pair"):
        compare_results(ra, run_protocol("sysu-all-mixed", good, pool, trials=2))
