"""The drift statistics equal scipy's on fixed histograms (golden values computed by scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import ks_2samp

from tengine.monitoring import stats

# fixed histograms: counts (not normalised), with empty bins on either side
CASES = [
    ([10, 20, 30, 40], [40, 30, 20, 10]),
    ([5, 0, 3, 2, 0, 9], [1, 4, 0, 2, 7, 1]),
    ([1000, 1, 1, 1], [1, 1, 1, 1000]),
    ([3, 3, 3], [3, 3, 3]),
]


@pytest.mark.parametrize(("p", "q"), CASES)
def test_js_distance_is_scipys_base_2(p, q):
    golden = jensenshannon(np.array(p, float), np.array(q, float), base=2)
    assert stats.js_distance(p, q) == pytest.approx(golden, abs=1e-12)
    assert 0.0 <= stats.js_distance(p, q) <= 1.0


def test_js_distance_bounds():
    assert stats.js_distance([1, 2, 3], [2, 4, 6]) == 0.0  # the same distribution
    assert stats.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint support


@pytest.mark.parametrize(("p", "q"), CASES)
@pytest.mark.parametrize("eps", [1e-4, 1e-2])
def test_psi_is_the_symmetric_kl_of_the_floored_shares(p, q, eps):
    a = np.maximum(np.array(p, float) / sum(p), eps)
    b = np.maximum(np.array(q, float) / sum(q), eps)
    golden = float(np.sum(rel_entr(a, b) + rel_entr(b, a)))  # Σ (a−b)·ln(a/b)
    assert stats.psi(p, q, eps) == pytest.approx(golden, rel=1e-12, abs=1e-15)


def test_topk_overlap_counts_the_shared_most_frequent_ids():
    ref = np.array([50, 40, 30, 20, 10, 0])  # ranked: 0 1 2 3 4 (5 has no count)
    cur = np.array([0, 40, 50, 10, 30, 20])  # ranked: 2 1 4 5 3
    ranked = [[int(i) for i in np.argsort(-h, kind="stable") if h[i] > 0] for h in (ref, cur)]
    golden = {1: 0 / 1, 2: 1 / 2, 3: 2 / 3, 4: 2 / 4, 5: 4 / 5}  # |{…} ∩ {…}| / k by hand
    for k, want in golden.items():
        assert stats.topk_overlap(*ranked, k) == want
    assert stats.topk_overlap(ranked[0], ranked[0], 3) == 1.0
    assert stats.topk_overlap(ranked[0], ranked[1], 50) == 4 / 5  # k capped by the lists


def test_entropy_test_is_scipys_ks_2samp():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0.5, 1, 250)
    d, p = stats.entropy_test(a, b)
    golden = ks_2samp(a, b)
    assert (d, p) == pytest.approx((golden.statistic, golden.pvalue))


def test_bad_histograms_are_refused():
    with pytest.raises(ValueError, match="different bins"):
        stats.js_distance([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="no mass"):
        stats.psi([0, 0], [1, 1])
