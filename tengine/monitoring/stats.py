"""The drift statistics, on histograms over the same bins (counts or probabilities).

    js_distance([10, 5, 0], [8, 6, 1])       # Jensen–Shannon distance, base 2: in [0, 1]
    psi([10, 5, 0], [8, 6, 1], eps=1e-4)     # population stability index (natural log)
    topk_overlap(ref_top_ids, cur_top_ids, k=50)  # shared share of the k most frequent tokens
    entropy_test(ref_entropies, cur_entropies)  # two-sample Kolmogorov–Smirnov (scipy)

Every function states what it computed (`describe`) so a report can say the statistic, base,
bins and ε it used. No torch: the control plane compares profiles without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PSI_EPS = 1e-4  # PSI's floor for an empty bin: ln(p/0) is infinite, so every share is ≥ ε


def _probabilities(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(counts, dtype=np.float64)
    if p.ndim != 1 or (p < 0).any():
        raise ValueError("a histogram is a 1-D array of non-negative counts")
    total = p.sum()
    if total <= 0:
        raise ValueError("a histogram with no mass has no distribution")
    return p / total


def _same_bins(p: np.ndarray, q: np.ndarray) -> None:
    if p.shape != q.shape:
        raise ValueError(f"histograms over different bins ({len(p)} vs {len(q)})")


def js_distance(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """sqrt(JSD(p, q)) with base-2 logs: 0 for the same distribution, 1 for disjoint support
    (what `scipy.spatial.distance.jensenshannon(p, q, base=2)` returns)."""
    p, q = _probabilities(p), _probabilities(q)
    _same_bins(p, q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0  # 0·log(0/m) = 0; m > 0 wherever a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    jsd = max((kl(p) + kl(q)) / 2, 0.0)  # rounding can dip below 0 for equal inputs
    return float(min(np.sqrt(jsd), 1.0))


def psi(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray,
        eps: float = PSI_EPS) -> float:
    """Σ (q − p)·ln(q / p) over the bins, each share floored at `eps` (not renormalised):
    the symmetric KL divergence, in nats. Rules of thumb: < 0.1 stable, > 0.25 shifted."""
    p, q = _probabilities(p), _probabilities(q)
    _same_bins(p, q)
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def topk_overlap(reference_top: Sequence[int], current_top: Sequence[int], k: int) -> float:
    """|the reference's k most frequent ids ∩ the current's| / k, from each side's ids ranked
    by count (most frequent first; ids with no count left out, so k is capped by the shorter
    list)."""
    k = min(k, len(reference_top), len(current_top))
    if k <= 0:
        return 0.0
    return len(set(reference_top[:k]) & set(current_top[:k])) / k


def entropy_test(reference: Sequence[float] | np.ndarray,
                 current: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov test on per-example entropies: (statistic D, p-value)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(reference, dtype=np.float64),
                      np.asarray(current, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)
