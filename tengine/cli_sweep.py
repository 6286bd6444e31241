"""`tengine sweep`: hyperparameter sweeps with Ray Tune (see docs/sweeps.md).

    tengine sweep configs/sweeps/quickstart_lr.yaml            # on a Ray started here
    tengine sweep SWEEP.yaml --address auto                     # on a running cluster
    tengine sweep SWEEP.yaml --dry-run                          # the trials and the resource plan
    tengine sweep SWEEP.yaml                                    # again after a crash: resumes
    tengine sweep SWEEP.yaml --register mymodel                 # best trial → registry version
    tengine sweep report runs/sweeps/NAME [--json]              # no cluster needed

A bad sweep file exits 2 before any trial starts, one line per problem.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.target == "report":
        return _report(args)
    from tengine.sweep.spec import load_sweep

    plan = load_sweep(args.target, args.overrides)
    if args.store:
        from tengine.control.store import redact_uri
        from tengine.errors import ConfigError

        if redact_uri(args.store) != args.store:  # each trial's config.yaml would hold it
            raise ConfigError(f"--store '{redact_uri(args.store)}' has a password; leave it out "
                              "and set PGPASSWORD or ~/.pgpass")
    plan.store = args.store  # the trials' experiment DB: the store the best is registered in
    from tengine.extras import check

    check("ray", "ray", "tengine sweep (Ray Tune)",
          otherwise="tengine.sweep.run_grid_sweep from Python, which needs no Ray")
    from tengine.cluster.tune import dry_run, run_sweep

    if args.dry_run:
        print(dry_run(plan, args.address))
        return 0
    report = run_sweep(plan, args.address)
    if args.register:
        from tengine.cluster.client import connect
        from tengine.sweep.report import register_best

        report["model"] = register_best(connect(args.address, args.store).registry, report,
                                        args.register)
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    return 1 if report.get("errors") else 0


def _report(args: argparse.Namespace) -> int:
    from tengine.errors import ConfigError
    from tengine.sweep.report import build_report

    if not args.dir:
        raise ConfigError("tengine sweep report DIR: give the sweep directory, e.g. runs/sweeps/NAME")
    report = build_report(Path(args.dir))
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    return 0


def _print_report(report: dict[str, Any]) -> None:
    from tengine.sweep.report import format_table

    print(format_table(report))
    best = report.get("best")
    if best:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"best: {best['trial']} ({params}) {report['metric']} {best['best']:.4f}")
    for line in report.get("errors", []):
        print(f"failed trial: {line}")
    where = report["sweep_dir"]
    print(f"results: {where}/results.csv, {where}/results.json, {where}/plots/metric.png, {where}/best/")
    if report.get("model"):
        m = report["model"]
        print(f"registered {m['name']} v{m['version']} (sha256 {m['sha256'][:12]}…)")


def add_commands(sub) -> None:
    p = sub.add_parser("sweep", help="hyperparameter sweep with Ray Tune (or `sweep report DIR`)")
    p.add_argument("target", help="a sweep YAML, or `report`")
    p.add_argument("dir", nargs="?", help="with `report`: the sweep directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the sweep file, e.g. --set num_samples=4")
    p.add_argument("--address", metavar="auto|ADDR",
                   help="Ray cluster to join (default: RAY_ADDRESS, else start Ray here)")
    p.add_argument("--dry-run", action="store_true", help="print the trials and the resource "
                   "plan; run nothing")
    p.add_argument("--register", metavar="NAME", help="register the best trial's checkpoint")
    p.add_argument("--store", help="store URI of the experiment DB the trials are recorded in "
                   "and of the registry for --register (default "
                   "sqlite:///<abs runs>/control/tengine.db)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    p.set_defaults(func=cmd_sweep)
