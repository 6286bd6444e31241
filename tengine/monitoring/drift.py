"""Compare a current profile with a reference one: per feature a statistic and a status.

    report = compare(reference, current, DriftSettings(warn=0.1, alert=0.2))
    report["status"]                # ok | warn | alert | insufficient
    for row in report["features"]: row["feature"], row["statistic"], row["value"], row["status"]

Histograms (sequence length, tokens, token pairs, labels, brightness, the model's mean predicted
distribution) are compared by the Jensen–Shannon distance (base 2, in [0, 1]); PSI (with its
ε) and, for tokens, the top-k overlap are reported beside it. Per-example entropies are compared
by a two-sample Kolmogorov–Smirnov test. Channel moments by the largest shift of a channel mean,
in reference standard deviations. The status compares each feature's headline value with the
warn / alert thresholds; the report's status is the worst feature's.

Why bins are merged: the JS distance of two samples of one distribution is not 0 — for K bins
and n current samples it is about sqrt((K − 1) / (8 n ln 2)) — so 256 token bins measured on
4,000 tokens would read ~0.1 with no drift at all. Each comparison therefore merges bins (the
reference's rarest first) until every bin expects ≥ `min_per_bin` current samples; the report
says how many bins it used. Below `min_examples` current examples nothing is judged
(`insufficient`): eight rows never raise an alert.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tengine.monitoring import stats

STATUSES = ("ok", "warn", "alert")  # worse to the right; `insufficient` is none of them


@dataclass
class DriftSettings:
    warn: float = 0.1
    alert: float = 0.2
    min_examples: int = 100
    min_per_bin: int = 50
    psi_eps: float = stats.PSI_EPS
    overlap_k: int = 50
    alpha: float = 0.001  # the entropy test's significance level (with its D thresholds)

    @classmethod
    def from_config(cls, conf: Any) -> DriftSettings:
        return cls(**{k: getattr(conf, k) for k in asdict(cls()) if hasattr(conf, k)})


def _status(value: float, s: DriftSettings) -> str:
    return "alert" if value >= s.alert else "warn" if value >= s.warn else "ok"


def merge_bins(ref: np.ndarray, cur: np.ndarray, max_bins: int,
               ordered: bool) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_bins` bins. Ordered bins (a histogram's) merge into runs of neighbours of
    about equal reference mass; unordered ones (categories, tokens) keep the reference's
    `max_bins - 1` largest and merge the rest into one."""
    k = len(ref)
    if k <= max_bins:
        return ref, cur
    if ordered:
        cum = np.cumsum(ref) / max(ref.sum(), 1)
        group = np.minimum((cum * max_bins - 1e-12).astype(int), max_bins - 1)
        group = np.maximum.accumulate(group)
    else:
        order = np.lexsort((np.arange(k), -ref))
        group = np.full(k, max_bins - 1)
        group[order[:max_bins - 1]] = np.arange(max_bins - 1)
    n = int(group.max()) + 1
    return np.bincount(group, ref, n), np.bincount(group, cur, n)


def _histogram_row(name: str, ref: np.ndarray, cur: np.ndarray, ordered: bool,
                   s: DriftSettings, n_current: float, extra: dict | None = None,
                   max_bins: int | None = None) -> dict:
    if ref.sum() <= 0 or cur.sum() <= 0 or n_current < s.min_examples:
        return {"feature": name, "statistic": "js_distance", "value": None,
                "status": "insufficient", "bins": len(ref),
                "why": f"{int(n_current)} current samples (< {s.min_examples})"}
    if len(ref) != len(cur):  # a class the reference never saw: its bin is 0 there
        n = max(len(ref), len(cur))
        ref, cur = np.pad(ref, (0, n - len(ref))), np.pad(cur, (0, n - len(cur)))
    max_bins = max_bins or max(2, int(n_current // s.min_per_bin))
    r, c = merge_bins(ref.astype(float), cur.astype(float), max_bins, ordered)
    keep = (r + c) > 0  # a bin empty on both sides says nothing
    r, c = r[keep], c[keep]
    value = stats.js_distance(r, c) if len(r) > 1 else 0.0
    row = {"feature": name, "statistic": "js_distance", "base": 2, "value": round(value, 6),
           "status": _status(value, s), "bins": int(len(r)), "bins_before_merge": int(len(ref)),
           "psi": round(stats.psi(r, c, s.psi_eps), 6) if len(r) > 1 else 0.0,
           "psi_eps": s.psi_eps, "reference_n": float(ref.sum()), "current_n": float(cur.sum())}
    return {**row, **(extra or {})}


def _tokens_row(name: str, ref: dict, cur: dict, s: DriftSettings) -> dict:
    r = np.array([*ref["counts"], ref["other"], ref["oov"]], float)
    c = np.array([*cur["counts"], cur["other"], cur["oov"]], float)
    k = min(s.overlap_k, len(ref["top"]), len(cur["top"]))
    overlap = stats.topk_overlap(ref["top"], cur["top"], k)
    row = _histogram_row(name, r, c, ordered=False, s=s, n_current=c.sum(),
                         extra={"top_k_overlap": round(overlap, 4), "overlap_k": k,
                                "oov_share": round(cur["oov"] / max(c.sum(), 1), 6)})
    return row


def _moments_row(ref: dict, cur: dict, s: DriftSettings, n_current: int) -> dict:
    if n_current < s.min_examples:
        return {"feature": "channels", "statistic": "max_mean_shift_sd", "value": None,
                "status": "insufficient", "why": f"{n_current} current examples"}
    shift = [abs(c - r) / max(sd, 1e-12) for r, c, sd in
             zip(ref["mean"], cur["mean"], ref["std"], strict=True)]
    value = max(shift)
    return {"feature": "channels", "statistic": "max_mean_shift_sd", "value": round(value, 6),
            "status": _status(value, s), "per_channel": [round(x, 6) for x in shift]}


def _entropy_row(ref: list[float], cur: list[float], s: DriftSettings) -> dict:
    if len(cur) < s.min_examples or len(ref) < 2:
        return {"feature": "output_entropy", "statistic": "ks_2samp", "value": None,
                "status": "insufficient", "why": f"{len(cur)} current examples"}
    d, p = stats.entropy_test(ref, cur)
    status = _status(d, s) if p < s.alpha else "ok"  # D alone moves with chance on few rows
    return {"feature": "output_entropy", "statistic": "ks_2samp", "value": round(d, 6),
            "p_value": p, "alpha": s.alpha, "status": status,
            "reference_mean": round(float(np.mean(ref)), 6),
            "current_mean": round(float(np.mean(cur)), 6),
            "reference_n": len(ref), "current_n": len(cur)}


def compare(reference: dict, current: dict, settings: DriftSettings | None = None) -> dict:
    """The drift report of `current` (a profile built `like=reference`) against `reference`."""
    s = settings or DriftSettings()
    ref_f, cur_f = reference["features"], current["features"]
    n = int(current["examples"])
    rows: list[dict] = []
    for name in ("length", "labels", "brightness"):
        if name in ref_f and name in cur_f:
            rows.append(_histogram_row(name, np.asarray(ref_f[name]["counts"], float),
                                       np.asarray(cur_f[name]["counts"], float),
                                       ordered=name != "labels", s=s, n_current=n))
    for name in ("tokens", "bigrams"):
        if name in ref_f and name in cur_f:
            rows.append(_tokens_row(name, ref_f[name], cur_f[name], s))
    if "channels" in ref_f and "channels" in cur_f:
        rows.append(_moments_row(ref_f["channels"], cur_f["channels"], s, n))
    ro, co = reference.get("outputs"), current.get("outputs")
    if ro and co:
        rm, cm = ro["mean_probs"], co["mean_probs"]
        # a mean of probability vectors over every position, not a sample of counts: its
        # bins are not merged
        rows.append(_histogram_row("output_mean_probs", np.array([*rm["probs"], rm["other"]]),
                                   np.array([*cm["probs"], cm["other"]]), ordered=False, s=s,
                                   n_current=co["examples"], max_bins=len(rm["probs"]) + 1))
        rows.append(_entropy_row(ro["entropy"]["values"], co["entropy"]["values"], s))
    if n < s.min_examples:  # a few rows can look like anything: judge none of it
        rows = [{"feature": r["feature"], "statistic": r["statistic"], "value": None,
                 "status": "insufficient",
                 "why": f"{n} current examples (< {s.min_examples})"} for r in rows]
    judged = [r["status"] for r in rows if r["status"] != "insufficient"]
    status = "insufficient" if n < s.min_examples or not judged else \
        max(judged, key=STATUSES.index)
    return {"status": status, "examples": n, "reference_examples": reference["examples"],
            # whole datasets (examples are the profiled sample): what data volume compares
            "size": current.get("size", n), "reference_size": reference.get(
                "size", reference["examples"]), "settings": asdict(s), "features": rows}
