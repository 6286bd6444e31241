"""The sweep report, read from the sweep directory alone (no Ray, no cluster, no torch).

    report = build_report(Path("runs/sweeps/quickstart_lr"))   # also what `tengine sweep report` prints
    write_report(sweep_dir, report)   # results.csv, results.json, plots/metric.png, best/

Each trial's row comes from its run dir (`trial.json`, `metrics.jsonl`, `summary.json`) and from
`decisions.jsonl`: params, best and last value of the sweep's metric, the step it reached, and
its status — `completed` (the engine's own status), `stopped` (ASHA cut it at a rung),
`running` or `failed`. The best trial is the one with the best `best` value; its `config.yaml`
and the checkpoint with its best value (from the checkpoint manifests, else its newest) are
copied to `best/`.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from tengine.files import config_hash, read_metrics, write_json

TRIALS, DECISIONS = "trials", "decisions.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _better(mode: str):
    return min if mode == "min" else max


def _series(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """(step, value) of the metric, in the order logged (a PBT exploit rewinds the steps)."""
    split = "train" if metric == "train_loss" else "val"
    key = "loss" if metric == "train_loss" else metric
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []:
        rec = json.loads(line)
        if rec.get("split") == split and rec.get(key) is not None:
            out.append((rec["step"], rec[key]))
    return out


def trial_row(run_dir: Path, metric: str, mode: str, decisions: list[dict]) -> dict[str, Any]:
    info = json.loads((run_dir / "trial.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    series = _series(run_dir, metric)
    records = read_metrics(run_dir / "metrics.jsonl")
    mine = [d for d in decisions if d.get("trial") == info["trial_id"]]
    stop = next((d for d in mine if d["action"] == "stop"), None)
    status = "stopped" if stop else summary.get("status") or "running"
    return {
        "trial": info["trial_id"], "params": info["params"], "status": status,
        "best": _better(mode)(v for _, v in series) if series else None,
        "last": series[-1][1] if series else None,
        "step": max((r.get("step", 0) for r in records), default=0),
        "stopped_at": stop["step"] if stop else None,
        "exploits": sum(d["action"] == "exploit" for d in mine),
        "starts": len(read_jsonl(run_dir / "starts.jsonl")),
        "run_dir": str(run_dir),
    }


def build_report(sweep_dir: Path) -> dict[str, Any]:
    sweep_dir = Path(sweep_dir)
    meta_file = sweep_dir / "sweep.json"
    if not meta_file.is_file():
        from tengine.errors import ConfigError

        raise ConfigError(f"'{sweep_dir}' is not a sweep directory (no sweep.json); give "
                          "<sweep root>/<name>, e.g. runs/sweeps/quickstart_lr")
    meta = json.loads(meta_file.read_text())
    metric, mode = meta["metric"], meta["mode"]
    decisions = read_jsonl(sweep_dir / DECISIONS)
    trials_root = sweep_dir / TRIALS
    rows = [trial_row(d, metric, mode, decisions)
            for d in sorted(trials_root.iterdir()) if (d / "trial.json").is_file()] \
        if trials_root.is_dir() else []
    scored = [r for r in rows if r["best"] is not None]
    best = _better(mode)(scored, key=lambda r: r["best"]) if scored else None
    return {"name": meta["name"], "metric": metric, "mode": mode, "num_samples": meta["num_samples"],
            "sweep_dir": str(sweep_dir), "trials": rows, "best": best,
            "counts": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})}}


def best_checkpoint(run_dir: Path, metric: str, mode: str) -> Path | None:
    """The checkpoint of `run_dir` with the best `metric` in its manifest, else its newest."""
    root = run_dir / "checkpoints"
    found = sorted(p.parent for p in root.glob("step_*/manifest.json"))  # step_%08d: sorted by step
    scored = [(json.loads((p / "manifest.json").read_text())["metrics"].get(metric), p) for p in found]
    scored = [(v, p) for v, p in scored if v is not None]
    if scored:
        return _better(mode)(scored, key=lambda vp: vp[0])[1]
    return found[-1] if found else None


def write_report(sweep_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """results.csv, results.json, plots/metric.png and best/ (config.yaml + checkpoint)."""
    sweep_dir = Path(sweep_dir)
    rows, best = report["trials"], report["best"]
    if best is not None:
        best_dir = sweep_dir / "best"
        shutil.rmtree(best_dir, ignore_errors=True)
        best_dir.mkdir(parents=True)
        run_dir = Path(best["run_dir"])
        if (run_dir / "config.yaml").is_file():
            shutil.copy2(run_dir / "config.yaml", best_dir / "config.yaml")
        checkpoint = best_checkpoint(run_dir, report["metric"], report["mode"])
        if checkpoint is not None:
            shutil.copytree(checkpoint, best_dir / checkpoint.name)
            report["best_checkpoint"] = str(best_dir / checkpoint.name)
    write_json(sweep_dir / "results.json", report)
    params = sorted({k for r in rows for k in r["params"]})
    with (sweep_dir / "results.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["trial", *params, f"best_{report['metric']}", f"last_{report['metric']}",
                      "step", "status"])
        for r in rows:
            out.writerow([r["trial"], *(r["params"].get(p) for p in params), r["best"], r["last"],
                          r["step"], r["status"]])
    if rows:
        plot_sweep(sweep_dir, report)
    return report


def plot_sweep(sweep_dir: Path, report: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    best_id = (report["best"] or {}).get("trial")
    for r in report["trials"]:
        pts = _series(Path(r["run_dir"]), report["metric"])
        if not pts:
            continue
        style = {"linestyle": "--", "alpha": 0.6} if r["status"] == "stopped" else {}
        if r["trial"] == best_id:
            style = {"linewidth": 2.5}
        label = f"{r['trial'][-5:]} " + " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in r["params"].items())
        (line,) = ax.plot(*zip(*pts, strict=True), marker=".", label=label, **style)
        if r["status"] == "stopped":
            ax.plot(*pts[-1], marker="x", color=line.get_color(), markersize=9)
    ax.set_xlabel("step")
    ax.set_ylabel(report["metric"])
    ax.set_title(f"sweep {report['name']}: {report['metric']} per trial (dashed ×: stopped)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    out = sweep_dir / "plots" / "metric.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_table(report: dict[str, Any]) -> str:
    metric = report["metric"]
    params = sorted({k for r in report["trials"] for k in r["params"]})
    head = ["trial", *params, f"best {metric}", f"last {metric}", "step", "status"]
    best_id = (report["best"] or {}).get("trial")
    lines = [[("*" if r["trial"] == best_id else " ") + r["trial"],
              *(_short(r["params"].get(p)) for p in params),
              _fmt(r["best"]), _fmt(r["last"]), str(r["step"]),
              r["status"] + (f" @{r['stopped_at']}" if r["stopped_at"] else "")
              + (f" ({r['exploits']} exploits)" if r["exploits"] else "")]
             for r in report["trials"]]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    text = [fmt.format(*head), *(fmt.format(*line) for line in lines)]
    counts = ", ".join(f"{n} {s}" for s, n in report["counts"].items())
    text.append(f"{len(report['trials'])} trials ({counts}); * best")
    return "\n".join(text)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def register_best(registry, report: dict[str, Any], name: str, job_id: str | None = None,
                  pack=None) -> dict[str, Any]:
    """Register the best trial's checkpoint (the copy in `<sweep dir>/best/`) in `registry` (a
    control client's `registry`), tagged with the sweep's name, the trial and its parameters.
    `pack` packs it into the registry's artifact root (default: in this process)."""
    import yaml

    from tengine.control.artifacts import register_checkpoint
    from tengine.errors import TengineError

    best, checkpoint = report["best"], report.get("best_checkpoint")
    if not best or not checkpoint:
        raise TengineError(f"cannot register '{name}': the sweep's best trial wrote no checkpoint")
    if pack is None:
        from tengine.engine.artifact import pack
    cfg = yaml.safe_load((Path(checkpoint).parent / "config.yaml").read_text())
    tags = {"sweep": report["name"], "trial": best["trial"],
            **{f"param.{k}": json.dumps(v) for k, v in best["params"].items()}}
    version = register_checkpoint(registry, name, Path(checkpoint), pack=pack,
                                  run_dir=Path(checkpoint).parent, config_hash=config_hash(cfg),
                                  source_run=best["run_dir"], job_id=job_id, tags=tags)
    return {"name": name, "version": version.version, "sha256": version.sha256}
