"""`tengine control|jobs|schedule|registry ...`: the control plane from the command line.

    tengine control start|status|stop [--address auto]
    tengine jobs submit configs/quickstart.yaml [--set k=v] [--workers 2] [--register NAME] [--priority 7]
    tengine jobs list|show|logs|wait|cancel|retry ...
    tengine jobs work [--once]                 # run queued jobs in this process (no Ray needed)
    tengine schedule add NAME --type train --config CFG (--cron "0 3 * * 1" --tz Europe/Berlin | --every 3600)
    tengine schedule list|enable|disable|rm ...
    tengine registry list|show|bundles|alias|promote|compare|lineage|retire|rm ...
    tengine jobs submit export --model NAME:REF [--formats safetensors,onnx]   # a bundle, attached

Without `--address` (and no RAY_ADDRESS) the control plane runs in this process on the store
`--store` (default `sqlite:///<abs runs>/control/tengine.db`); with one it is the cluster's
detached actor on the head node, whose job runners (`control start --runners N`, default 2) run
the queued jobs, on the store it was started with (`--store`, else the head's
TENGINE_CONTROL_STORE or ~/.tengine/control/tengine.db there). Jobs may import only `tengine.`
modules unless the operator allows more (`control start --allow-import PREFIX`).
Tables for people, `--json` for scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def _client(args: argparse.Namespace):
    from tengine.cluster.client import connect
    from tengine.extras import check

    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:  # the cluster's actor; without an address the plane runs here, no Ray
        check("ray", "ray", f"--address {address} (the cluster's control plane)",
              otherwise="leave out --address and RAY_ADDRESS: the control plane in this process")
    return connect(args.address, args.store, runners=getattr(args, "runners", None),
                   allowed_imports=tuple(getattr(args, "allow_import", None) or ()))


def _job_config(path: str, overrides: list[str], workers: int | None = None) -> dict[str, Any]:
    """A train job's config: the file resolved now (presets, --set), with its run root made
    absolute, since the job may run in another directory or on another node."""
    from tengine.config import load_config

    if workers is not None:
        overrides = [*overrides, f"distributed.workers={workers}"]
    cfg = load_config(path, overrides).model_dump(mode="json")
    cfg["logging"]["root"] = str(Path(cfg["logging"]["root"]).resolve())
    return {"config": cfg, "config_path": path}


def _sweep_job_config(path: str, overrides: list[str]) -> dict[str, Any]:
    """A sweep job: the sweep file, validated now (a bad one exits 2 here, not in the runner),
    with its root made absolute, since the runner may work in another directory."""
    from tengine.sweep.spec import load_sweep

    plan = load_sweep(path, overrides)
    return {"sweep_file": str(Path(path).resolve()),
            "overrides": [*overrides, f"root={plan.sweep_dir.parent}"]}


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def _table(rows: list[dict], columns: list[str], upper: bool = True) -> str:
    """`upper=False`: headers as given (run ids)."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join((c.upper() if upper else c).ljust(w)
                       for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def _out(args: argparse.Namespace, value: Any, columns: list[str] | None = None,
         shape=lambda r: r) -> int:
    plain = _plain(value)
    if args.json:
        print(json.dumps(plain, indent=2))
    elif columns is not None:
        print(_table([shape(r) for r in plain], columns))
    else:
        print("\n".join(f"{k}: {v}" for k, v in (shape(plain)).items()))
    return 0


# --- control ---------------------------------------------------------------------------------
def control_start(args):
    return _out(args, _client(args).status())


def control_stop(args):
    from tengine.extras import check

    check("ray", "ray", "tengine control stop (the cluster's control actor)")
    from tengine.cluster.actor import stop
    from tengine.cluster.client import join_cluster

    join_cluster(args.address or "auto")
    if not stop():
        print("no control actor is running")
        return 0
    print("stopped the control actor and its job runners (the store keeps every job, schedule "
          "and model; a job that was running goes back to the queue when its lease expires)")
    return 0


# --- jobs --------------------------------------------------------------------------------------
JOB_COLUMNS = ["id", "type", "state", "priority", "attempts", "created", "error"]


def _config_ref(config: dict) -> str:
    """A job's or schedule's config, in one cell: its file, else its keys."""
    return config.get("config_path") or ", ".join(sorted(config)) or "-"


def _job_row(j: dict) -> dict:
    return {**j, "config": _config_ref(j["config"]), "created": _when(j["created"]),
            "updated": _when(j["updated"]), "error": (j.get("error") or "")[:40]}


def jobs_submit(args):
    config: dict[str, Any] = {}
    job_type = args.type
    if args.target and Path(args.target).is_file() and job_type == "sweep":
        config = _sweep_job_config(args.target, args.overrides)
    elif args.target and Path(args.target).is_file():
        config = _job_config(args.target, args.overrides, args.workers)
        job_type = job_type or "train"
    elif args.target:
        job_type = args.target
    if args.register:
        config["register"] = args.register
    if job_type == "retrain":
        if not args.register:
            raise SystemExit("tengine: error: a retrain job needs --register NAME (the model "
                             "whose new version it trains)")
        config.update(parent_alias=args.parent_alias, init_from_parent=args.init_from_parent)
    elif args.init_from_parent:
        raise SystemExit("tengine: error: --init-from-parent is for --type retrain jobs")
    if (job_type or "train") == "evaluate":
        config.update(_evaluate_target(args))
    if job_type == "export":
        config.update(_export_target(args))
    resources = {"workers": args.workers or 0, "gpus_per_worker": args.gpus_per_worker or 0}
    job = _client(args).jobs.submit(job_type or "train", config, resources=resources,
                                    priority=args.priority, max_retries=args.max_retries,
                                    idempotency_key=args.key)
    if args.json:
        return _out(args, job)
    print(f"submitted {job.id} ({job.type}, {job.state})")
    where = "" if args.address is None else f" --address {args.address}"
    print(f"follow it: tengine jobs show {job.id}{where}  |  tengine jobs wait {job.id}{where}")
    if args.address is None and not os.environ.get("RAY_ADDRESS"):
        print("no Ray address: the job waits until `tengine jobs work` runs it in a process here")
    return 0


def _evaluate_target(args) -> dict[str, Any]:
    """What an evaluate job evaluates: a registered model version (checked now) or a checkpoint."""
    from tengine.errors import Invalid

    if args.model:
        return _model_target(args)
    if args.checkpoint:
        path = Path(args.checkpoint).resolve()
        if not (path / "manifest.json").is_file():
            raise Invalid(f"--checkpoint '{args.checkpoint}' is not a tengine checkpoint (no "
                          "manifest.json); give a <run dir>/checkpoints/step_XXXXXXXX directory")
        return {"checkpoint": str(path)}
    raise Invalid("an evaluate job needs --model NAME[:VERSION|ALIAS] or --checkpoint PATH")


def _export_target(args) -> dict[str, Any]:
    """What an export job exports: a registered model version (checked now), its formats."""
    from tengine.errors import Invalid

    if not args.model:
        raise Invalid("an export job needs --model NAME[:VERSION|ALIAS] (a registered model)")
    formats = [f.strip() for f in (args.formats or "").split(",") if f.strip()]
    return {**_model_target(args), **({"formats": formats} if formats else {})}


def _model_target(args) -> dict[str, Any]:
    """--model NAME[:REF] of a job, the version checked to exist now (else exit 2)."""
    name, _, ref = args.model.partition(":")
    _client(args).registry.get(name, _ref(ref or "latest"))
    return {"model": name, "ref": _ref(ref or "latest")}


def jobs_wait(args):
    """Block until the job ends; exit 0 when it SUCCEEDED, 1 when it did not, 124 on --timeout."""
    from tengine.control.jobs import TERMINAL

    client = _client(args)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    job = client.jobs.get(args.id)  # an unknown id: exit 2 at once
    while job.state not in TERMINAL:
        if deadline and time.monotonic() > deadline:
            print(f"{job.id} is still {job.state} after {args.timeout:g} s", file=sys.stderr)
            return 124
        time.sleep(args.poll)
        try:
            job = client.jobs.get(args.id)
        except client.transient:  # the control actor is restarting: ask again
            continue
    if args.json:
        _out(args, job)
    else:
        print(f"{job.id} {job.state}" + (f": {job.error}" if job.error and job.state != "SUCCEEDED" else ""))
    return 0 if job.state == "SUCCEEDED" else 1


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def jobs_work(args):
    """Run queued jobs in this process until interrupted (or, with --once, until none is ready)."""
    import socket
    import threading

    from tengine.control.runner import JobRunner

    client = _client(args)
    address = None
    if client.where != "in-process":
        import ray

        address = ray.get_runtime_context().gcs_address
    runner = JobRunner(client, f"work-{socket.gethostname()}:{os.getpid()}", address=address,
                       allowed_imports=tuple(args.allow_import or ()))
    print(f"{runner.name} runs jobs from the {client.where} control plane; Ctrl-C to stop",
          file=sys.stderr)
    # Ctrl-C, or SIGTERM (a service manager stopping us), stops the work and gives the job back
    # to the queue (JobRunner.run_one)
    signal.signal(signal.SIGTERM, _interrupted)
    stop = threading.Event()
    if client.tick is not None:  # an in-process plane: this process runs its tick (schedules,
        client.tick()           # leases, retraining triggers), as the actor does on a cluster
        threading.Thread(target=_ticking, args=(client.tick, stop), daemon=True,
                         name="tengine-tick").start()
    try:
        if args.once:
            while runner.run_one():
                pass
        else:
            runner.run(stop)
    finally:
        stop.set()
    return 0


def _ticking(tick, stop, every_s: float = 2.0) -> None:
    while not stop.wait(every_s):
        try:
            tick()
        except Exception:  # noqa: BLE001 — one bad round must not end the loop
            logging.getLogger("tengine").exception("control-plane tick failed")


def jobs_list(args):
    return _out(args, _client(args).jobs.list(state=args.state, type=args.type), JOB_COLUMNS, _job_row)


def jobs_show(args):
    client = _client(args)
    job = _plain(client.jobs.get(args.id))
    if args.json:
        return _out(args, {**job, "events": client.jobs.events(args.id)})
    _out(args, job, shape=_job_row)
    for e in client.jobs.events(args.id):
        print(f"  {_when(e['ts'])}  {e['from_state'] or '-'} → {e['to_state']}  {e['reason']}")
    return 0


def jobs_logs(args):
    lines = _client(args).jobs.logs(args.id)
    print(json.dumps(lines) if args.json else "\n".join(lines))
    return 0


def jobs_cancel(args):
    return _out(args, _client(args).jobs.cancel(args.id, args.reason), shape=_job_row)


def jobs_retry(args):
    return _out(args, _client(args).jobs.retry(args.id), shape=_job_row)


# --- schedules ---------------------------------------------------------------------------------
SCHEDULE_COLUMNS = ["name", "job_type", "when", "tz", "enabled", "misfire", "next_fire"]


def _schedule_row(s: dict) -> dict:
    when = s["cron"] or f"every {s['interval_s']:g} s"
    return {**s, "when": when, "config": _config_ref(s["config"]), "next_fire": _when(s["next_fire"]),
            "created": _when(s["created"]), "last_fire": _when(s["last_fire"])}


def schedule_add(args):
    config = _job_config(args.config, args.overrides) if args.config else {}
    s = _client(args).schedules.add(args.name, job_type=args.type, config=config, cron=args.cron,
                                    tz=args.tz, interval_s=args.every, misfire=args.misfire,
                                    misfire_window_s=args.misfire_window, priority=args.priority,
                                    idempotency_key=args.key)
    return _out(args, s, shape=_schedule_row)


def schedule_list(args):
    return _out(args, _client(args).schedules.list(), SCHEDULE_COLUMNS, _schedule_row)


def schedule_enable(args, enabled: bool = True):
    return _out(args, _client(args).schedules.set_enabled(args.name, enabled), shape=_schedule_row)


def schedule_disable(args):
    return schedule_enable(args, enabled=False)


def schedule_rm(args):
    _client(args).schedules.remove(args.name)
    print(f"removed schedule {args.name}")
    return 0


# --- registry ----------------------------------------------------------------------------------
MODEL_COLUMNS = ["name", "version", "status", "aliases", "size", "sha256", "source_run", "created"]


def _model_row(v: dict) -> dict:
    return {**v, "aliases": ",".join(v["aliases"]) or "-", "sha256": v["sha256"][:12],
            "created": _when(v["created"])}


def _ref(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def registry_promotions(args) -> int:
    rows = _client(args).registry.promotions(args.name)
    return _out(args, rows, ["ts", "alias", "candidate", "baseline", "metric",
                             "candidate_value", "baseline_value", "decision", "reason"],
                shape=lambda r: {**r, "ts": _when(r["ts"]),
                                 "candidate": f"v{r['candidate']}",
                                 "baseline": f"v{r['baseline']}" if r["baseline"] else "-"})


def registry_pack(args):
    """Pack a checkpoint into a registry artifact (what registering a model copies); prints
    the registration's fields as JSON. Run by job runners, which import no torch themselves."""
    from tengine.engine.artifact import pack

    info = pack(Path(args.checkpoint), args.into, Path(args.run_dir) if args.run_dir else None)
    print(json.dumps(info))
    return 0


def registry_list(args):
    versions = _client(args).registry.list_models(args.name, status=args.status, alias=args.alias)
    return _out(args, versions, MODEL_COLUMNS, _model_row)


def registry_show(args):
    return _out(args, _client(args).registry.get(args.name, _ref(args.ref)), shape=_model_row)


def _alias_move(args) -> dict[str, Any]:
    """--expected-version N (or 'none': the alias must not exist yet) and --key, as given."""
    extra: dict[str, Any] = {"by": args.by, "reason": args.reason, "idempotency_key": args.key}
    if args.expected_version is not None:
        expected = args.expected_version.lower()
        if expected != "none" and not expected.isdigit():
            raise SystemExit(f"tengine: error: --expected-version {args.expected_version!r}: "
                             "give a version number, or 'none' (the alias must not exist yet)")
        extra["expected_version"] = None if expected == "none" else int(expected)
    return extra


def registry_alias(args):
    v = _client(args).registry.set_alias(args.name, args.alias, int(args.version), **_alias_move(args))
    return _out(args, v, shape=_model_row)


def registry_promote(args):
    v = _client(args).registry.promote_model(args.name, int(args.version), args.alias,
                                             **_alias_move(args))
    return _out(args, v, shape=_model_row)


def registry_bundles(args):
    rows = _client(args).registry.list_bundles(args.name, _ref(args.ref) if args.ref else None)
    return _out(args, rows, ["name", "version", "formats", "uri", "created"],
                lambda b: {**b, "formats": ",".join(b["formats"]), "created": _when(b["created"])})


def registry_compare(args):
    return _out(args, _client(args).registry.compare_models(args.name, _ref(args.a), _ref(args.b)))


def registry_lineage(args):
    return _out(args, _client(args).registry.get_model_lineage(args.name, _ref(args.ref)),
                MODEL_COLUMNS, _model_row)


def registry_retire(args):
    return _out(args, _client(args).registry.retire_model(args.name, int(args.version)), shape=_model_row)


def registry_rm(args):
    _client(args).registry.delete_model(args.name, int(args.version))
    print(f"deleted {args.name} v{args.version}")
    return 0


# --- parser ------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster of the control actor (default: RAY_ADDRESS, "
                   "else the control plane runs in this process)")
    p.add_argument("--store", help="store URI: sqlite:///abs/path.db or postgresql://user@host/db "
                   "(default here: sqlite:///<abs runs>/control/tengine.db; with --address: the "
                   "running control plane's store)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def command(parent, name: str, func, text: str, *positionals: str) -> argparse.ArgumentParser:
    """A control-plane subcommand: its positionals, --address/--store/--json, its function."""
    p = parent.add_parser(name, help=text)
    for pos in positionals:
        p.add_argument(pos)
    _common(p)
    p.set_defaults(func=func)
    return p


def add_commands(sub) -> None:
    def group(name: str, text: str):
        return sub.add_parser(name, help=text).add_subparsers(dest="action", required=True)

    cmd = command

    control = group("control", "the control plane's actor")
    p = cmd(control, "start", control_start, "start (or find) the control actor and show its status")
    p.add_argument("--runners", type=int, help="job runners the actor starts (default 2): "
                   "how many jobs run at once")
    allow = dict(action="append", metavar="PREFIX", help="a module prefix (e.g. 'mycompany.') "
                 "that jobs' configs may import models, losses and data sources from, beyond "
                 "'tengine.' (control.allowed_imports; repeatable)")
    p.add_argument("--allow-import", **allow)
    root = dict(metavar="DIR", help="registry.artifact_root: where registered models are copied "
                "(a directory every node sees; default for a SQLite store: artifacts/ beside it)")
    p.add_argument("--artifact-root", **root)
    cmd(control, "status", control_start, "show the control plane's status")
    cmd(control, "stop", control_stop, "stop the control actor (the store keeps its state)")

    jobs = group("jobs", "the job queue")
    p = cmd(jobs, "submit", jobs_submit, "submit a job (a config file → a train job)")
    p.add_argument("target", nargs="?", help="a config YAML (train job), a sweep YAML with "
                   "--type sweep, or a job type")
    p.add_argument("--type", help="job type (train, sweep, export, evaluate, retrain, sleep)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int)
    p.add_argument("--gpus-per-worker", type=float)
    p.add_argument("--register", metavar="NAME", help="register the trained model (a sweep: "
                   "its best trial's) under NAME")
    p.add_argument("--model", metavar="NAME[:REF]", help="evaluate and export jobs: a "
                   "registered model (REF: version, alias or latest, the default)")
    p.add_argument("--formats", metavar="A,B", help="export jobs: formats of the bundle "
                   "(default: the model's export.formats)")
    p.add_argument("--checkpoint", metavar="PATH", help="evaluate jobs: a checkpoint directory")
    p.add_argument("--init-from-parent", action="store_true", help="retrain jobs: start from "
                   "the parent version's weights (its registry artifact) instead of from scratch")
    p.add_argument("--parent-alias", default="production", help="retrain jobs: the alias whose "
                   "version is the parent (default production; else the latest version)")
    p.add_argument("--priority", type=int, default=5, help="1–10, higher first (default 5)")
    p.add_argument("--max-retries", type=int, default=0)
    p.add_argument("--key", help="idempotency key: a second submit with it returns the same job")
    p = cmd(jobs, "list", jobs_list, "list jobs")
    p.add_argument("--state")
    p.add_argument("--type")
    cmd(jobs, "show", jobs_show, "a job with its transitions", "id")
    cmd(jobs, "logs", jobs_logs, "a job's log lines", "id")
    p = cmd(jobs, "wait", jobs_wait, "wait for a job to end (exit 0 if it SUCCEEDED, 1 if not, "
            "124 on --timeout)", "id")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this long")
    p.add_argument("--poll", type=float, default=2.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p = cmd(jobs, "work", jobs_work, "run queued jobs in this process (no Ray needed)")
    p.add_argument("--once", action="store_true", help="stop when no job is ready")
    p.add_argument("--allow-import", **allow)
    p.add_argument("--artifact-root", **root)
    cmd(jobs, "cancel", jobs_cancel, "cancel a job", "id").add_argument("--reason", default="cancelled by request")
    cmd(jobs, "retry", jobs_retry, "queue a failed or cancelled job again", "id")

    sched = group("schedule", "cron and interval schedules")
    p = cmd(sched, "add", schedule_add, "add a schedule", "name")
    p.add_argument("--type", default="train")
    p.add_argument("--config", help="config YAML of the jobs it submits")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cron", help="5-field cron, e.g. '0 3 * * 1'")
    p.add_argument("--tz", default="UTC", help="IANA time zone of --cron (default UTC)")
    p.add_argument("--every", type=float, metavar="SECONDS", help="fixed interval instead of --cron")
    p.add_argument("--misfire", default="run_once", choices=["skip", "run_once"],
                   help="fires missed by more than a minute (the control plane was down): run "
                   "once for those of the last --misfire-window (default), or skip them")
    p.add_argument("--misfire-window", type=float, default=24 * 3600.0, metavar="SECONDS",
                   help="how far back run_once catches up (default 86400: one day)")
    p.add_argument("--key", help="idempotency key: a second add with it changes nothing")
    p.add_argument("--priority", type=int, default=5)
    cmd(sched, "list", schedule_list, "list schedules with their next fire")
    cmd(sched, "enable", schedule_enable, "enable a schedule", "name")
    cmd(sched, "disable", schedule_disable, "disable a schedule", "name")
    cmd(sched, "rm", schedule_rm, "remove a schedule", "name")

    reg = group("registry", "the model registry")
    p = cmd(reg, "list", registry_list, "list model versions")
    p.add_argument("name", nargs="?")
    p.add_argument("--status", default="active", help="active, retired (default active)")
    p.add_argument("--alias")
    cmd(reg, "show", registry_show, "one version (by number, alias or 'latest')", "name", "ref")
    for name, func, text in (("alias", registry_alias, "point an alias at a version"),
                             ("promote", registry_promote, "move an alias (default production)")):
        p = cmd(reg, name, func, text, "name", *(("alias", "version") if name == "alias" else ("version",)))
        if name == "promote":
            p.add_argument("--alias", default="production")
        p.add_argument("--by", help="who moves it (audit trail)")
        p.add_argument("--reason", help="why (audit trail)")
        p.add_argument("--expected-version", metavar="N", help="move it only if it points at "
                       "version N now ('none': only if it does not exist yet), else exit with a "
                       "conflict: a compare-and-set for promotions that may race")
        p.add_argument("--key", help="idempotency key: a repeated request changes nothing")
    p = cmd(reg, "bundles", registry_bundles, "export bundles attached to a model (or one "
            "version)", "name")
    p.add_argument("ref", nargs="?", help="a version, alias or latest (default: every version)")
    cmd(reg, "compare", registry_compare, "metric deltas between two versions", "name", "a", "b")
    cmd(reg, "promotions", registry_promotions, "promotion decisions (a retrain's new version "
        "against the alias's, both numbers, why)", "name")
    cmd(reg, "lineage", registry_lineage, "a version and its ancestors", "name", "ref")
    cmd(reg, "retire", registry_retire, "retire a version", "name", "version")
    cmd(reg, "rm", registry_rm, "delete a version (refused while an alias points at it)", "name", "version")
    p = reg.add_parser("pack", help="pack a checkpoint into a registry artifact directory "
                       "(consolidated safetensors, config, tokenizer, manifest); prints JSON")
    p.add_argument("checkpoint")
    p.add_argument("--into", required=True, help="the model's directory under the artifact root")
    p.add_argument("--run-dir", help="where its config.yaml and tokenizer are (default: the "
                   "checkpoint's run dir, two levels up)")
    p.set_defaults(func=registry_pack)
