"""The drift report's picture: each feature's reference and current histograms, overlaid.

    plot_drift(reference_profile, current_profile, report, "drift.png")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHOWN = 30  # token / pair / class bins drawn (the reference's most frequent)


def _shares(counts) -> np.ndarray:
    a = np.asarray(counts, dtype=float)
    return a / a.sum() if a.sum() > 0 else a


def _panels(ref: dict, cur: dict) -> list[tuple[str, str, list[str], np.ndarray, np.ndarray]]:
    """(report feature, title, bin labels, reference shares, current shares) per panel."""
    rf, cf = ref["features"], cur["features"]
    out = []
    for name in ("length", "brightness"):
        if name in rf and name in cf:
            edges = rf[name]["edges"]
            labels = [f"{edges[i]:.3g}" for i in range(len(edges) - 1)]
            out.append((name, name, labels, _shares(rf[name]["counts"]),
                        _shares(cf[name]["counts"])))
    for name in ("tokens", "bigrams"):
        if name in rf and name in cf:
            r = _shares([*rf[name]["counts"], rf[name]["other"]])
            c = _shares([*cf[name]["counts"], cf[name]["other"]])
            labels = [str(i) for i in rf[name]["ids"][:SHOWN]]
            out.append((name, f"{name} (top {len(labels)} of the reference)", labels, r[:SHOWN],
                        c[:SHOWN]))
    if "labels" in rf and "labels" in cf:
        k = max(len(rf["labels"]["counts"]), len(cf["labels"]["counts"]))
        r = np.pad(_shares(rf["labels"]["counts"]), (0, k - len(rf["labels"]["counts"])))
        c = np.pad(_shares(cf["labels"]["counts"]), (0, k - len(cf["labels"]["counts"])))
        out.append(("labels", "labels", [str(i) for i in range(k)][:SHOWN], r[:SHOWN], c[:SHOWN]))
    ro, co = ref.get("outputs"), cur.get("outputs")
    if ro and co:
        ids = [str(i) for i in ro["mean_probs"]["ids"][:SHOWN]]
        out.append(("output_mean_probs", "mean predicted distribution", ids,
                    np.asarray(ro["mean_probs"]["probs"][:SHOWN]),
                    np.asarray(co["mean_probs"]["probs"][:SHOWN])))
        values = ro["entropy"]["values"] + co["entropy"]["values"]
        edges = np.linspace(min(values), max(values) + 1e-9, 21)
        out.append(("output_entropy", "per-example entropy (nats)", [f"{e:.2f}" for e in edges[:-1]],
                    _shares(np.histogram(ro["entropy"]["values"], edges)[0]),
                    _shares(np.histogram(co["entropy"]["values"], edges)[0])))
    return out


def plot_drift(ref: dict, cur: dict, report: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    panels = _panels(ref, cur)
    status = {r["feature"]: r for r in report["features"]}
    fig = Figure(figsize=(9, 2.6 * max(len(panels), 1)), dpi=100)
    axes = fig.subplots(max(len(panels), 1), 1, squeeze=False)[:, 0]
    for ax, (key, title, labels, r, c) in zip(axes, panels, strict=False):
        row = status.get(key)
        x = np.arange(len(labels))
        ax.bar(x - 0.2, r[:len(labels)], width=0.4, label="reference", color="#4c72b0")
        ax.bar(x + 0.2, c[:len(labels)], width=0.4, label="current", color="#dd8452")
        ax.set_xticks(x, labels, rotation=90, fontsize=6)
        note = f" — {row['statistic']} {row['value']} ({row['status']})" if row else ""
        ax.set_title(f"{title}{note}", fontsize=9)
        ax.set_ylabel("share")
        ax.legend(fontsize=7)
    fig.suptitle(f"drift: {report['status']} ({report['examples']} current examples)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
