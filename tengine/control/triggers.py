"""Retraining triggers: conditions on what the control plane is told, that submit a `retrain` job.

    trig = Triggers(store, queue, clock)
    trig.add("m-balanced", model="m", spec=preset("balanced"), job={"config": cfg, ...})
    trig.submit_report("m", "drift", report)   # a drift report arrives: m's triggers evaluated
    trig.evaluate()                            # the control plane's tick: every enabled trigger
    trig.explain("m-balanced")                 # each leaf's value, threshold; the cooldown left

A spec is a tree: leaves `drift` (the worst statistic the model's newest drift report since its
production version was registered flagged — warn or alert — ≥ threshold), `performance` (the newest reported metric's
relative change against the production version's own, in the bad direction), `time` (hours
since the production version, or since the trigger last fired, whichever is later), `volume`
(how much the data grew: the newest drift report's current dataset size minus the reference's,
absolute or relative to the reference's), and `all` / `any` over other nodes. `preset(name)` gives the seed's conservative / balanced / aggressive.

Firing is one transaction under the store's write lock, so evaluating 20 times from two
clients at once submits one job: the trigger row is read, the cooldown (`last_fired`, stored:
it survives a restart of the control actor) and the model's in-flight retrains (its triggers'
jobs not yet ended) are checked, and the job, the trigger's new `fires`/`last_fired` and the
firing's record (every leaf's value and threshold) are written together. The job's idempotency
key is (trigger, production version, newest report, firing number): a repeat after a lost
reply is the same job. After downtime a time trigger fires once, not once per missed tick: the
clock starts again at the firing.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from tengine.control.jobs import TERMINAL, JobQueue
from tengine.control.registry import check_name
from tengine.control.store import (
    Store,
    aliases,
    jobs,
    model_versions,
    monitor_reports,
    trigger_firings,
    triggers,
)
from tengine.errors import AlreadyExists, Invalid, NotFound
from tengine.registry import did_you_mean

T, F, R = triggers.c, trigger_firings.c, monitor_reports.c
log = logging.getLogger("tengine")
LEAVES = ("drift", "performance", "time", "volume")
NODES = ("all", "any")
REPORT_KINDS = ("drift", "metrics")
# the seed's presets: any of drift, performance, time, volume
PRESETS = {
    "conservative": {"drift": 0.2, "performance": 0.10, "hours": 336, "volume": 0.30,
                     "cooldown_s": 48 * 3600.0},
    "balanced": {"drift": 0.15, "performance": 0.05, "hours": 168, "volume": 0.20,
                 "cooldown_s": 24 * 3600.0},
    "aggressive": {"drift": 0.1, "performance": 0.03, "hours": 48, "volume": 0.10,
                   "cooldown_s": 6 * 3600.0},
}


def preset(name: str, metric: str = "val_loss", mode: str = "min") -> dict[str, Any]:
    if name not in PRESETS:
        raise Invalid(f"trigger preset '{name}' unknown{did_you_mean(name, list(PRESETS))}; "
                      f"valid: {', '.join(PRESETS)}")
    p = PRESETS[name]
    return {"any": [{"drift": {"threshold": p["drift"]}},
                    {"performance": {"metric": metric, "mode": mode,
                                     "threshold": p["performance"]}},
                    {"time": {"hours": p["hours"]}},
                    {"volume": {"relative": p["volume"]}}]}


def check_spec(spec: Any, where: str = "spec") -> None:
    """A bad tree fails when it is added, naming the node."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise Invalid(f"trigger {where}: each node is one of {{{', '.join(LEAVES + NODES)}: ...}}, "
                      f"got {spec!r}")
    (kind, body), = spec.items()
    if kind in NODES:
        if not isinstance(body, list) or not body:
            raise Invalid(f"trigger {where}.{kind}: a non-empty list of nodes")
        for i, child in enumerate(body):
            check_spec(child, f"{where}.{kind}[{i}]")
        return
    if kind not in LEAVES:
        raise Invalid(f"trigger {where}: '{kind}' is not a leaf or node"
                      f"{did_you_mean(kind, list(LEAVES + NODES))}")
    need = {"drift": ("threshold",), "performance": ("metric", "threshold"), "time": ("hours",),
            "volume": ()}[kind]
    if not isinstance(body, dict) or any(k not in body for k in need):
        raise Invalid(f"trigger {where}.{kind}: needs {', '.join(need) or 'absolute or relative'}")
    if kind == "volume" and ("absolute" in body) == ("relative" in body):
        raise Invalid(f"trigger {where}.volume: give exactly one of absolute or relative")
    for key in ("threshold", "hours", "absolute", "relative"):
        value = body.get(key)
        if key in body and (isinstance(value, bool) or not isinstance(value, (int, float))
                            or not value >= 0):
            raise Invalid(f"trigger {where}.{kind}.{key}: {value!r} is not a number ≥ 0")
    if kind == "performance" and body.get("mode", "min") not in ("min", "max"):
        raise Invalid(f"trigger {where}.performance.mode: min or max")


@dataclass(frozen=True)
class Trigger:
    id: str
    name: str
    model: str
    spec: dict[str, Any]
    job: dict[str, Any]
    cooldown_s: float
    enabled: bool
    fires: int
    last_fired: float | None
    created: float


def _trigger(row) -> Trigger:
    d = dict(row)
    return Trigger(**{**d, "spec": json.loads(d["spec"]), "job": json.loads(d["job"]),
                      "enabled": bool(d["enabled"])})


class Triggers:
    def __init__(self, store: Store, queue: JobQueue, clock=time.time):
        self.store, self.queue, self.clock = store, queue, clock

    # --- definitions -------------------------------------------------------------------------
    def add(self, name: str, *, model: str, spec: dict[str, Any], job: dict[str, Any],
            cooldown_s: float = 24 * 3600.0) -> Trigger:
        """`job`: the retrain job's config (`config`: the resolved train config; `register`
        defaults to `model`; `promote`: the promotion's alias/metric/mode/margin)."""
        check_name(name, "trigger name")
        check_name(model, "model name")
        check_spec(spec)
        if not isinstance(job.get("config"), dict):
            raise Invalid("a trigger's job needs `config`: the resolved config the retrain trains")
        if not cooldown_s >= 0:
            raise Invalid(f"cooldown_s {cooldown_s!r} must be ≥ 0")
        job = {**job, "register": job.get("register") or model}
        if self.queue.validate is not None:  # the control plane's import allow-list, now
            self.queue.validate("retrain", job)
        with self.store.transaction() as db:
            if db.execute(select(T.id).where(T.name == name)).first():
                raise AlreadyExists(f"trigger '{name}' already exists; remove it first")
            db.execute(insert(triggers).values(
                id=f"trig-{uuid.uuid4().hex[:12]}", name=name, model=model,
                spec=json.dumps(spec), job=json.dumps(job), cooldown_s=float(cooldown_s),
                enabled=1, fires=0, last_fired=None, created=self.clock()))
        return self.get(name)

    def get(self, name: str) -> Trigger:
        rows = self.store.read(select(triggers).where(T.name == name))
        if not rows:
            raise NotFound(f"trigger '{name}' does not exist")
        return _trigger(rows[0])

    def list(self, model: str | None = None) -> list[Trigger]:
        q = select(triggers).order_by(T.name)
        return [_trigger(r) for r in self.store.read(q if model is None else q.where(T.model == model))]

    def set_enabled(self, name: str, enabled: bool) -> Trigger:
        self.get(name)
        with self.store.transaction() as db:
            db.execute(update(triggers).where(T.name == name).values(enabled=int(enabled)))
        return self.get(name)

    def remove(self, name: str) -> None:
        t = self.get(name)
        with self.store.transaction() as db:
            db.execute(triggers.delete().where(T.id == t.id))

    def firings(self, name: str) -> list[dict[str, Any]]:
        t = self.get(name)
        rows = self.store.read(select(trigger_firings).where(F.trigger_id == t.id).order_by(F.id))
        return [{**dict(r), "reason": json.loads(r["reason"])} for r in rows]

    # --- what the control plane is told --------------------------------------------------------
    def submit_report(self, model: str, kind: str, report: dict[str, Any],
                      evaluate: bool = True) -> dict[str, Any]:
        """Record a drift (or metrics) report for `model`, then (unless `evaluate` is False)
        evaluate its triggers; returns {report_id, fired: [job ids]}."""
        check_name(model, "model name")
        if kind not in REPORT_KINDS:
            raise Invalid(f"report kind '{kind}' unknown; valid: {', '.join(REPORT_KINDS)}")
        if kind == "metrics" and not isinstance(report.get("metrics"), dict):
            raise Invalid("a metrics report needs `metrics`: {name: value}")
        with self.store.transaction() as db:
            rid = db.execute(insert(monitor_reports).values(
                model=model, kind=kind, status=report.get("status"), body=json.dumps(report),
                ts=self.clock())).inserted_primary_key[0]
        fired = [e["job_id"] for e in self.evaluate(model=model) if e.get("fired")] \
            if evaluate else []
        return {"report_id": rid, "fired": fired}

    def reports(self, model: str, kind: str | None = None, limit: int = 20) -> list[dict]:
        q = select(monitor_reports).where(R.model == model).order_by(R.id.desc()).limit(limit)
        if kind:
            q = q.where(R.kind == kind)
        return [{**dict(r), "body": json.loads(r["body"])} for r in self.store.read(q)]

    # --- evaluation ----------------------------------------------------------------------------
    def explain(self, name: str) -> dict[str, Any]:
        """What an evaluation would see now, without firing."""
        t = self.get(name)
        with self.store.reading() as db:
            return self._judge(db, t, self.clock())

    def evaluate(self, name: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Evaluate the enabled triggers (one, a model's, or all); fire those that hold."""
        q = select(T.name).where(T.enabled == 1).order_by(T.name)
        if name is not None:
            self.get(name)
            q = q.where(T.name == name)
        if model is not None:
            q = q.where(T.model == model)
        return [self._guarded(n) for n in (r["name"] for r in self.store.read(q))]

    def _guarded(self, name: str) -> dict[str, Any]:
        """One trigger's evaluation; its failure (removed meanwhile, a store error) is its own
        result, never the other triggers' or the tick's."""
        try:
            return self._fire_if_due(name)
        except Exception as err:  # noqa: BLE001 — reported in the result and the log
            log.warning("trigger %s: evaluation failed (%s: %s)", name, type(err).__name__, err)
            return {"trigger": name, "fired": False, "error": f"{type(err).__name__}: {err}"}

    def _fire_if_due(self, name: str) -> dict[str, Any]:
        t = self.get(name)  # a read first: the tick takes the write lock only to fire
        with self.store.reading() as db:
            verdict = self._judge(db, t, self.clock())
        if not verdict["holds"] or verdict["cooldown_left_s"] > 0 or verdict["in_flight"]:
            return {**verdict, "fired": False}
        with self.store.transaction() as db:  # judged again under the lock: one firing
            row = db.execute(select(triggers).where(T.name == name)).mappings().first()
            if row is None or not row["enabled"]:
                return {"trigger": name, "fired": False, "why": "removed or disabled"}
            t, now = _trigger(row), self.clock()
            verdict = self._judge(db, t, now)
            if not verdict["holds"] or verdict["cooldown_left_s"] > 0 or verdict["in_flight"]:
                return {**verdict, "fired": False}
            key = (f"trigger:{t.id}:v{verdict['production']}:r{verdict['report_id']}:"
                   f"{t.fires}")
            config = {**t.job, "trigger": {"name": t.name, "fire": t.fires + 1,
                                           "leaves": verdict["leaves"]}}
            if self.queue.validate is not None:  # vetted like every submitted job
                self.queue.validate("retrain", config)
            job = self.queue._submit_in(db, "retrain", config, idempotency_key=key)
            db.execute(update(triggers).where(T.id == t.id).values(fires=t.fires + 1,
                                                                   last_fired=now))
            db.execute(insert(trigger_firings).values(
                trigger_id=t.id, model=t.model, ts=now, job_id=job.id, idempotency_key=key,
                reason=json.dumps({"leaves": verdict["leaves"], "spec": t.spec})))
            return {**verdict, "fired": True, "job_id": job.id}

    def _judge(self, db, t: Trigger, now: float) -> dict[str, Any]:
        ctx = _Context(db, t, now)
        leaves: list[dict[str, Any]] = []
        holds = _holds(t.spec, ctx, leaves)
        cooldown_left = 0.0 if t.last_fired is None else max(0.0, t.cooldown_s - (now - t.last_fired))
        return {"trigger": t.name, "model": t.model, "holds": holds, "leaves": leaves,
                "cooldown_left_s": round(cooldown_left, 3), "in_flight": ctx.in_flight(),
                "production": ctx.production["version"] if ctx.production else None,
                "report_id": ctx.latest("drift", "metrics")["id"] if ctx.latest(
                    "drift", "metrics") else None, "fires": t.fires, "last_fired": t.last_fired}


class _Context:
    """What a trigger's leaves read, inside one transaction (or one read connection)."""

    def __init__(self, db, t: Trigger, now: float):
        self.db, self.t, self.now = db, t, now
        alias = t.job.get("parent_alias", "production")
        row = db.execute(select(model_versions).join(
            aliases, (aliases.c.name == model_versions.c.name)
            & (aliases.c.version == model_versions.c.version)).where(
            aliases.c.name == t.model, aliases.c.alias == alias)).mappings().first()
        self.production = dict(row) if row else None
        self._latest: dict[tuple, Any] = {}

    def since(self) -> float:
        """Reports count from the production version on (older ones judged the data before it)."""
        return self.production["created"] if self.production else 0.0

    def latest(self, *kinds: str) -> dict | None:
        if kinds not in self._latest:
            row = self.db.execute(select(monitor_reports).where(
                R.model == self.t.model, R.kind.in_(kinds), R.ts >= self.since())
                .order_by(R.id.desc()).limit(1)).mappings().first()
            self._latest[kinds] = {**dict(row), "body": json.loads(row["body"])} if row else None
        return self._latest[kinds]

    def in_flight(self) -> list[str]:
        rows = self.db.execute(select(jobs.c.id).select_from(trigger_firings.join(
            jobs, jobs.c.id == F.job_id)).where(F.model == self.t.model,
                                                jobs.c.state.not_in(TERMINAL))).all()
        return [r[0] for r in rows]


def _holds(spec: dict[str, Any], ctx: _Context, leaves: list[dict]) -> bool:
    (kind, body), = spec.items()
    if kind in NODES:
        results = [_holds(child, ctx, leaves) for child in body]  # every leaf, for explain
        return all(results) if kind == "all" else any(results)
    leaf = LEAF_VALUES[kind](body, ctx)
    leaves.append({"leaf": kind, **leaf})
    return bool(leaf["holds"])


def _drift(body: dict, ctx: _Context) -> dict:
    report = ctx.latest("drift")
    threshold = body["threshold"]
    if report is None:
        return {"value": None, "threshold": threshold, "holds": False,
                "why": "no drift report since the production version"}
    r = report["body"]
    if r.get("status") in (None, "insufficient"):
        return {"value": None, "threshold": threshold, "holds": False,
                "report_id": report["id"], "status": r.get("status"),
                "why": "the newest drift report judged nothing (too few examples)"}
    # only what the report itself flagged: a KS D it called ok (p ≥ α) is chance, not drift
    flagged = [f["value"] for f in r.get("features", [])
               if f.get("status") in ("warn", "alert") and f.get("value") is not None]
    value = max(flagged) if flagged else 0.0
    return {"value": value, "threshold": threshold, "holds": bool(flagged) and value >= threshold,
            "report_id": report["id"], "status": r.get("status")}


def _performance(body: dict, ctx: _Context) -> dict:
    metric, threshold, mode = body["metric"], body["threshold"], body.get("mode", "min")
    base = json.loads(ctx.production["metrics"]).get(metric) if ctx.production else None
    report = ctx.latest("metrics")
    current = report["body"]["metrics"].get(metric) if report else None
    if base is None or current is None or base == 0:
        return {"value": None, "threshold": threshold, "holds": False, "metric": metric,
                "why": "no production metric" if base is None else f"no reported {metric}"}
    change = (current - base) / abs(base) if mode == "min" else (base - current) / abs(base)
    return {"value": round(change, 6), "threshold": threshold, "holds": change >= threshold,
            "metric": metric, "current": current, "production": base, "mode": mode}


def _time(body: dict, ctx: _Context) -> dict:
    start = max(ctx.since(), ctx.t.last_fired or 0.0, ctx.t.created)
    hours = (ctx.now - start) / 3600.0
    return {"value": round(hours, 4), "threshold": body["hours"], "holds": hours >= body["hours"],
            "unit": "hours"}


def _volume(body: dict, ctx: _Context) -> dict:
    """How much the data grew: the newest drift report's current examples minus the
    reference's (absolute), or that over the reference's (relative)."""
    report = ctx.latest("drift")
    if report is None:
        return {"value": None, "threshold": body.get("absolute", body.get("relative")),
                "holds": False, "why": "no report of the current data since the production version"}
    body_ = report["body"]  # whole datasets (`size`), else the profiled examples
    cur = body_.get("size", body_.get("examples")) or 0
    ref = body_.get("reference_size", body_.get("reference_examples")) or 0
    if "absolute" in body:
        return {"value": cur - ref, "threshold": body["absolute"],
                "holds": cur - ref >= body["absolute"], "unit": "new examples"}
    growth = (cur - ref) / ref if ref else None
    return {"value": None if growth is None else round(growth, 6), "threshold": body["relative"],
            "holds": growth is not None and growth >= body["relative"],
            "unit": "growth over the reference"}


LEAF_VALUES = {"drift": _drift, "performance": _performance, "time": _time, "volume": _volume}
