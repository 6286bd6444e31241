"""`tengine triggers`: retraining triggers on the control plane, and promotion decisions.

    tengine triggers add m-weekly --model m --preset balanced --config CONFIG.yaml
    tengine triggers add m-drift --model m --spec trigger.yaml --config CONFIG.yaml --cooldown 6h
    tengine triggers list
    tengine triggers explain m-weekly          # each leaf: value, threshold; the cooldown left
    tengine triggers evaluate [NAME]           # evaluate now (the control plane's tick does too)
    tengine triggers firings m-weekly          # when it fired, why, which job
    tengine registry promotions m              # every promotion decision, with both numbers

A firing submits a `retrain` job: it trains CONFIG, registers the new version under the model,
evaluates it and the `production` version on the same held-out data and moves `production`
only if the new one is better by `--margin` (relative) on `--metric`.
"""

from __future__ import annotations

import argparse
import json
import re

from tengine.cli_control import _client, _job_config, _out, _table, _when, command
from tengine.errors import ConfigError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", value.strip())
    if not m:
        raise ConfigError(f"--cooldown '{value}': give seconds or a number with s, m, h or d "
                          "(e.g. 6h)")
    return float(m.group(1)) * UNITS[m.group(2) or "s"]


def _spec(args) -> dict:
    from tengine.control.triggers import preset

    if bool(args.preset) == bool(args.spec):
        raise ConfigError("triggers add: give --preset conservative|balanced|aggressive or "
                          "--spec FILE (a YAML condition tree)")
    if args.preset:
        return preset(args.preset, args.metric, args.mode)
    import yaml

    try:
        with open(args.spec) as fh:
            return yaml.safe_load(fh)
    except OSError as err:
        raise ConfigError(f"--spec {args.spec}: {err.strerror}") from None


def triggers_add(args) -> int:
    from tengine.control.triggers import PRESETS

    spec = _spec(args)
    cooldown = _seconds(args.cooldown) if args.cooldown else \
        PRESETS.get(args.preset or "", {}).get("cooldown_s", 24 * 3600.0)
    job = {**_job_config(args.config, args.overrides), "parent_alias": args.alias,
           "promote": {"alias": args.alias, "metric": args.metric, "mode": args.mode,
                       "margin": args.margin}}
    if args.init_from_parent:
        job["init_from_parent"] = True
    t = _client(args).triggers.add(args.name, model=args.model, spec=spec, job=job,
                                   cooldown_s=cooldown)
    return _out(args, t, shape=lambda r: {"name": r["name"], "model": r["model"],
                                          "cooldown_s": r["cooldown_s"],
                                          "spec": json.dumps(r["spec"])})


def triggers_list(args) -> int:
    rows = _client(args).triggers.list()
    return _out(args, rows, ["name", "model", "enabled", "fires", "last_fired", "cooldown_s"],
                shape=lambda r: {**r, "last_fired": _when(r["last_fired"])})


def _leaf_rows(verdict: dict) -> list[dict]:
    def num(v):
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    return [{"leaf": leaf["leaf"] + (f" {leaf['metric']}" if leaf.get("metric") else ""),
             "value": num(leaf.get("value")), "threshold": num(leaf.get("threshold")),
             "holds": "yes" if leaf["holds"] else "no", "note": leaf.get("why", "")}
            for leaf in verdict["leaves"]]


def triggers_explain(args) -> int:
    v = _client(args).triggers.explain(args.name)
    if args.json:
        print(json.dumps(v, indent=2))
        return 0
    print(f"trigger {v['trigger']} (model {v['model']}, production "
          f"{'v' + str(v['production']) if v['production'] else 'none'}): "
          f"{'HOLDS' if v['holds'] else 'does not hold'}")
    print(_table(_leaf_rows(v), ["leaf", "value", "threshold", "holds", "note"]))
    left = v["cooldown_left_s"]
    remaining = f"{left:.0f} s left" if left else "none left"
    print(f"cooldown: {remaining}; fired {v['fires']} "
          f"time(s), last {_when(v['last_fired'])}"
          + (f"; retrain in flight: {', '.join(v['in_flight'])}" if v["in_flight"] else ""))
    return 0


def triggers_evaluate(args) -> int:
    results = _client(args).triggers.evaluate(args.name)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        why = ("fired: job " + r["job_id"]) if r.get("fired") else \
            "cooldown" if r.get("holds") and r.get("cooldown_left_s") else \
            "retrain in flight" if r.get("holds") and r.get("in_flight") else "does not hold"
        print(f"{r['trigger']}: {why}")
    return 0


def triggers_firings(args) -> int:
    rows = _client(args).triggers.firings(args.name)
    return _out(args, rows, ["ts", "job_id", "why"], shape=lambda r: {
        **r, "ts": _when(r["ts"]), "why": "; ".join(
            f"{x['leaf']} {x.get('value')} ≥ {x.get('threshold')}"
            for x in r["reason"]["leaves"] if x["holds"])})


def _toggle(enabled: bool):
    def run(args) -> int:
        t = _client(args).triggers.set_enabled(args.name, enabled)
        print(f"trigger {t.name}: {'enabled' if t.enabled else 'disabled'}")
        return 0
    return run


def triggers_rm(args) -> int:
    _client(args).triggers.remove(args.name)
    print(f"removed trigger {args.name}")
    return 0


def add_commands(sub) -> None:
    group = sub.add_parser("triggers", help="retraining triggers (drift, performance, time, "
                           "volume) that submit retrain jobs").add_subparsers(dest="action",
                                                                              required=True)

    def cmd(name: str, func, text: str, *positionals: str) -> argparse.ArgumentParser:
        return command(group, name, func, text, *positionals)

    p = cmd("add", triggers_add, "add a trigger", "name")
    p.add_argument("--model", required=True, help="the registered model it retrains")
    p.add_argument("--preset", choices=("conservative", "balanced", "aggressive"),
                   help="the seed's presets: any of drift 0.2/0.15/0.1, performance "
                   "10/5/3 %%, time 336/168/48 h, volume 30/20/10 %%")
    p.add_argument("--spec", metavar="FILE", help="a YAML condition tree instead (see "
                   "docs/monitoring.md)")
    p.add_argument("--config", required=True, help="the config YAML the retrain trains")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cooldown", metavar="DURATION", help="no second firing within this "
                   "(e.g. 6h; default: the preset's, else 24h)")
    p.add_argument("--alias", default="production", help="the alias compared against and "
                   "moved when better (default production)")
    p.add_argument("--metric", default="val_loss", help="the promotion and performance metric")
    p.add_argument("--mode", default="min", choices=("min", "max"))
    p.add_argument("--margin", type=float, default=0.0, help="relative improvement the new "
                   "version needs to be promoted (default 0: any)")
    p.add_argument("--init-from-parent", action="store_true",
                   help="start the retrain from the production version's weights")
    cmd("list", triggers_list, "list triggers")
    cmd("explain", triggers_explain, "each leaf's value and threshold, the cooldown left", "name")
    p = cmd("evaluate", triggers_evaluate, "evaluate now (all, or one)")
    p.add_argument("name", nargs="?")
    cmd("firings", triggers_firings, "when a trigger fired, why, and its job", "name")
    cmd("enable", _toggle(True), "enable a trigger", "name")
    cmd("disable", _toggle(False), "disable a trigger", "name")
    cmd("rm", triggers_rm, "remove a trigger", "name")
