"""`tengine runs list|show|compare|best`: the experiment DB from the command line.

    tengine runs list [--status completed] [--tag baseline] [--sweep lr-sweep] [--sort val_loss]
    tengine runs show RUN [--metrics train_loss,val_loss] [--superseded]
    tengine runs compare RUN_A RUN_B [RUN_C ...]
    tengine runs best --metric val_loss [--sweep lr-sweep]

A RUN is a run id (`quickstart-1a2b3c4d`), a run name (its newest run) or a unique id prefix.
The store is the control plane's (`--store`, default `sqlite:///<abs runs>/control/tengine.db`,
where the `db` tracker of a run under `runs/` writes; `--address`: the cluster's control
plane). Tables for people, `--json` for scripts.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tengine.cli_control import _client, _common, _table, _when
from tengine.errors import TengineError
from tengine.files import json_safe

# what `runs show` tabulates unless --metrics says otherwise (the ones a run has)
SHOWN = ("train_loss", "val_loss", "val_accuracy", "val_perplexity", "train_lr",
         "train_grad_norm", "train_tokens_per_s")


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _print_json(value: Any) -> int:
    print(json.dumps(json_safe(value), indent=2))
    return 0


def runs_list(args) -> int:
    keys = ("val_loss", "train_loss") if not args.sort else (args.sort,)
    found = _client(args).runs.list_runs(status=args.status, tag=args.tag, sweep=args.sweep,
                                          name=args.name, sort=args.sort, mode=args.mode,
                                          limit=args.limit, metrics=keys)
    if args.json:
        return _print_json([r.to_dict() for r in found])
    rows = [{"id": r.id, "status": r.status, "sweep": r.sweep or "-",
             "steps": _num((r.summary or {}).get("steps")), "tags": ",".join(r.tags) or "-",
             **{(f"best {k}" if args.sort else k): _num(
                 r.metrics.get(k, {}).get("best" if args.sort else "last")) for k in keys},
             "started": _when(r.created)} for r in found]
    columns = ["id", "status", "sweep", "steps", *(f"best {k}" if args.sort else k for k in keys),
               "tags", "started"]
    print(_table(rows, columns))
    return 0


def runs_show(args) -> int:
    db = _client(args).runs
    run = db.get_run(args.run)
    rows = db.get_metrics(run.id, include_superseded=args.superseded)
    artifacts = db.get_artifacts(run.id, include_superseded=args.superseded)
    series: dict[str, list] = {}
    for r in rows:
        series.setdefault(r["key"], []).append(
            [r["step"], r["value"]] + ([r["superseded"]] if args.superseded else []))
    if args.json:
        return _print_json({"run": run.to_dict(), "metrics": series, "artifacts": artifacts})
    summary = run.summary or {}
    for label, value in (("id", run.id), ("name", run.name), ("status", run.status),
                         ("sweep", run.sweep), ("job", run.job_id), ("tags", ", ".join(run.tags)),
                         ("run dir", run.run_dir), ("config", run.config_hash),
                         ("started", _when(run.created)), ("ended", _when(run.ended)),
                         ("starts", run.starts), ("steps", summary.get("steps")),
                         ("best val_loss", _num(summary.get("best_val_loss")))):
        if value not in (None, ""):
            print(f"{label + ':':15}{value}")
    keys = [k for k in (args.metrics.split(",") if args.metrics else SHOWN) if k in series]
    by_step: dict[tuple[int, bool], dict[str, Any]] = {}
    for key in keys:
        for point in series[key]:
            old = len(point) > 2 and point[2]
            by_step.setdefault((point[0], old), {"step": point[0]})[key] = _num(point[1])
            if args.superseded:
                by_step[(point[0], old)]["superseded"] = "yes" if old else ""
    print()
    print(_table([by_step[k] for k in sorted(by_step)],
                 ["step", *keys, *(["superseded"] if args.superseded else [])]))
    if artifacts:
        print()
        print(_table([{"kind": a["kind"], "step": a["step"], "uri": a["uri"]} for a in artifacts],
                     ["kind", "step", "uri"]))
    return 0


def runs_compare(args) -> int:
    from tengine.envdiff import diff_lines

    result = _client(args).runs.compare_runs(args.runs)
    if args.json:
        return _print_json(result)
    ids = [r["id"] for r in result["runs"]]
    print(_table([{"run": r["id"], "status": r["status"], "steps": _num(r["steps"]),
                   "config": (r["config_hash"] or "-")[:12]} for r in result["runs"]],
                 ["run", "status", "steps", "config"]))
    print()
    params = [{"param": k, **{i: json.dumps(v) if not isinstance(v, str) else v
                              for i, v in zip(ids, values, strict=True)}}
              for k, values in result["params"].items()]
    print(_table(params, ["param", *ids], upper=False) if params else "params: the same")
    print()
    metrics = [{"metric": f"{k} ({m['mode']})",
                **{f"best {i}": _num(v) for i, v in zip(ids, m["best"], strict=True)},
                **{f"last {i}": _num(v) for i, v in zip(ids, m["last"], strict=True)}}
               for k, m in result["metrics"].items()
               if not k.endswith(("_epoch", "_skipped_steps"))]  # (--json has them)
    print(_table(metrics, ["metric", *(f"best {i}" for i in ids), *(f"last {i}" for i in ids)],
                 upper=False))
    for other, diff in result["env"].items():
        print(f"\nenvironment, {ids[0]} vs {other}:")
        print("\n".join("  " + line for line in diff_lines(diff, ids[0], other)))
    return 0


def runs_best(args) -> int:
    run = _client(args).runs.get_best_run(args.metric, args.mode, sweep=args.sweep,
                                          status=args.status, tag=args.tag)
    if run is None:
        raise TengineError(f"no run{' of sweep ' + args.sweep if args.sweep else ''} has logged "
                           f"'{args.metric}'; `tengine runs show RUN` lists a run's metrics")
    if args.json:
        return _print_json(run.to_dict())
    stats = run.metrics[args.metric]
    print(f"{run.id}  best {args.metric} {_num(stats['best'])} (last {_num(stats['last'])} "
          f"at step {stats['last_step']})  {run.run_dir or ''}".rstrip())
    return 0


def add_commands(sub) -> None:
    group = sub.add_parser("runs", help="the experiment DB: list, show, compare runs") \
        .add_subparsers(dest="action", required=True)

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--status", help="only runs with this status (completed, failed, ...)")
        p.add_argument("--tag", help="only runs with this tag (logging.tags)")
        p.add_argument("--sweep", help="only the trials of this sweep")
        p.add_argument("--mode", choices=("min", "max"), help="whether lower or higher is "
                       "better (default: max for accuracy-like metrics and rates, else min)")

    p = group.add_parser("list", help="runs, newest first (or best first with --sort)")
    filters(p)
    p.add_argument("--name", help="only runs of this name")
    p.add_argument("--sort", metavar="METRIC", help="best first by this metric (val_loss, ...)")
    p.add_argument("--limit", type=int, help="at most this many runs")
    _common(p)
    p.set_defaults(func=runs_list)

    p = group.add_parser("show", help="a run: its record, metrics by step and artifacts")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--metrics", metavar="K1,K2", help="the metric columns (default: losses, "
                   "accuracy, lr, grad norm, throughput, those the run has)")
    p.add_argument("--superseded", action="store_true", help="also the values a resume replaced")
    _common(p)
    p.set_defaults(func=runs_show)

    p = group.add_parser("compare", help="runs side by side: differing params, best/last "
                         "metrics, environment diff")
    p.add_argument("runs", metavar="RUN", nargs="+")
    _common(p)
    p.set_defaults(func=runs_compare)

    p = group.add_parser("best", help="the run with the best value of a metric")
    filters(p)
    p.add_argument("--metric", required=True, help="val_loss, val_accuracy, train_loss, ...")
    _common(p)
    p.set_defaults(func=runs_best)
