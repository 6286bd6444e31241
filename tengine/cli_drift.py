"""`tengine drift`: is the current data (and the model's behaviour on it) still what the
reference was trained and validated on?

    tengine drift --reference runs/v1 --current configs/new_data.yaml
    tengine drift --reference bundles/v1 --current CFG --set data.path=new/*.txt --json
    tengine drift --reference mymodel:production --current CFG --webhook http://hooks.local/a
    tengine drift --reference mymodel:production --current CFG --submit   # → the model's triggers

Prints a table (feature, statistic, value, bins, PSI, status) and writes, under `--out`
(default `drift/<time>`), `report.json`, `drift.png` (each feature's histograms overlaid) and
`current_profile.json`. A drift rule of the current config's `monitoring.alerts` (on by
default) sends an alert through its sinks when the status is `alert` — once while it persists
over checks (its state is kept in `--alert-state`), and `resolved` when it clears; `--webhook
URL` adds a webhook sink. Exit 0 whatever the status (`--fail-on warn|alert` exits 1 at that status or
worse), 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tengine.cli_control import _common, _table
from tengine.errors import ConfigError
from tengine.files import json_safe

ORDER = ("ok", "warn", "alert")


def _row(r: dict) -> dict:
    value = "-" if r.get("value") is None else f"{r['value']:.4f}"
    extra = []
    if "psi" in r:
        extra.append(f"psi {r['psi']:.4f}")
    if "top_k_overlap" in r:
        extra.append(f"top-{r['overlap_k']} overlap {r['top_k_overlap']:.2f}")
    if "p_value" in r:
        extra.append(f"p {r['p_value']:.2g}")
    if r.get("why"):
        extra.append(r["why"])
    bins = "-"
    if "bins" in r:
        merged = r.get("bins_before_merge", r["bins"])
        bins = f"{r['bins']}" + (f" (of {merged})" if merged != r["bins"] else "")
    return {"feature": r["feature"], "statistic": r["statistic"], "value": value,
            "bins": bins, "also": ", ".join(extra), "status": r["status"]}


def _alerts(args, cfg, report: dict, out: Path, label: str) -> list[dict]:
    from tengine.config.schema import AlertSinkConfig
    from tengine.monitoring.alerts import Alerts
    from tengine.monitoring.sinks import build_sinks

    conf = cfg.monitoring.alerts
    rules = [r for r in conf.rules if r.kind == "drift"]
    if not conf.enabled or not rules:
        return []
    sinks = list(conf.sinks)
    if args.webhook:
        sinks.append(AlertSinkConfig(kind="webhook", url=args.webhook,
                                     secret_env=args.webhook_secret_env))
    alerts = Alerts.from_config(conf.model_copy(update={"rules": rules, "sinks": sinks}),
                                subject=label, sinks=build_sinks(sinks, out))
    # the rules' state between checks, per reference: a drift that persists over many checks
    # is one alert (a repeat after repeat_after_s), and one `resolved` when it clears
    state_file = Path(args.alert_state)
    saved = json.loads(state_file.read_text()) if state_file.is_file() else {}
    alerts.load_state_dict(saved.get(label, {}))
    try:
        return alerts.observe({"kind": "drift", **report})
    finally:
        alerts.close()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_name(f".{state_file.name}.tmp")
        tmp.write_text(json.dumps({**saved, label: alerts.state_dict()}, indent=1))
        tmp.replace(state_file)


def cmd_drift(args: argparse.Namespace) -> int:
    from tengine.cli_control import _client
    from tengine.config import load_config
    from tengine.monitoring.check import check, is_model_ref, reference
    from tengine.monitoring.drift import DriftSettings
    from tengine.monitoring.plots import plot_drift

    current_cfg = load_config(args.current, args.overrides)  # a bad config: exit 2 before work
    if args.submit and not args.model and not is_model_ref(args.reference):
        raise ConfigError("drift --submit: name the registered model the report is about with "
                          "--model NAME (or give --reference NAME:ALIAS)")
    out = Path(args.out or Path("drift") / time.strftime("%Y%m%d-%H%M%S"))
    clients: list = []  # one control-plane client, made when first needed (one store, one join)

    def client():
        if not clients:
            clients.append(_client(args))
        return clients[0]

    with reference(args.reference, client) as ref:
        settings = DriftSettings.from_config(current_cfg.monitoring.drift)
        result = check(ref, current_cfg, settings, outputs=not args.no_outputs)
        label = ref.label
    report = {**result.report, "reference": label, "current": args.current,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out.mkdir(parents=True, exist_ok=True)
    png = plot_drift(result.reference, result.current, report, out / "drift.png")
    (out / "current_profile.json").write_text(json.dumps(result.current, indent=1))
    report["files"] = {"report": str(out / "report.json"), "png": str(png)}
    events = _alerts(args, current_cfg, report, out, label)
    report["alerts"] = [{k: e[k] for k in ("id", "rule", "state")} for e in events]
    if args.submit:  # the control plane records it and evaluates the model's triggers now
        model = args.model or (args.reference.partition(":")[0] if ref.kind == "registry" else None)
        report["submitted"] = client().triggers.submit_report(model, "drift", report)
    (out / "report.json").write_text(json.dumps(json_safe(report), indent=1))
    if args.json:
        print(json.dumps(json_safe(report), indent=2))
    else:
        print(f"drift: {report['status'].upper()} — {label} vs {args.current} "
              f"({report['examples']} current examples, {report['reference_examples']} reference)")
        print(_table([_row(r) for r in report["features"]],
                     ["feature", "statistic", "value", "bins", "also", "status"]))
        print(f"thresholds: warn {settings.warn}, alert {settings.alert} (JS distance base 2; "
              f"PSI ε {settings.psi_eps}; entropy: KS at α {settings.alpha})")
        if events:
            print(f"alerts sent: {', '.join(e['rule'] + ' ' + e['state'] for e in events)}")
        if args.submit:
            fired = report["submitted"]["fired"]
            print(f"submitted to the control plane for model {model}: report "
                  f"{report['submitted']['report_id']}; "
                  + (f"retrain job(s) {', '.join(fired)}" if fired else "no trigger fired"))
        print(f"report: {out / 'report.json'}\npng: {png}")
    fail = args.fail_on and report["status"] in ORDER and \
        ORDER.index(report["status"]) >= ORDER.index(args.fail_on)
    return 1 if fail else 0


def add_commands(sub) -> None:
    p = sub.add_parser("drift", help="compare current data (and the model's outputs on it) "
                       "with a reference run, bundle or registered model")
    p.add_argument("--reference", required=True, metavar="RUN|BUNDLE|MODEL:ALIAS",
                   help="a run dir, an export bundle, or a registered model version")
    p.add_argument("--current", required=True, metavar="DATA_CONFIG",
                   help="a config whose data section is the current data (its monitoring "
                   "section sets the thresholds and alert sinks)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the current config (repeatable)")
    p.add_argument("--out", metavar="DIR", help="where report.json and drift.png go "
                   "(default: drift/<time>)")
    p.add_argument("--no-outputs", action="store_true", help="data drift only: do not run the "
                   "reference's model")
    p.add_argument("--webhook", metavar="URL", help="also send alerts to this webhook")
    p.add_argument("--webhook-secret-env", metavar="VAR", help="the environment variable "
                   "holding the webhook's HMAC key")
    p.add_argument("--submit", action="store_true", help="hand the report to the control "
                   "plane (--store/--address): it is kept, and the model's retraining triggers "
                   "are evaluated on it at once")
    p.add_argument("--model", metavar="NAME", help="with --submit: the registered model the "
                   "report is about (default: --reference's NAME:ALIAS)")
    p.add_argument("--alert-state", default="drift/alert_state.json", metavar="FILE",
                   help="where the drift rule's state is kept between checks, per reference "
                   "(default drift/alert_state.json): a drift that persists is one alert")
    p.add_argument("--fail-on", choices=("warn", "alert"), help="exit 1 at this status or worse")
    _common(p)
    p.set_defaults(func=cmd_drift)
