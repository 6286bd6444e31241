"""The experiment DB: every run, its params, metrics and artifacts, in the control plane's store.

    db = ExperimentDB(open_store("sqlite:///abs/runs/control/tengine.db"))
    run_id = db.log_run("qs", params=cfg.model_dump(mode="json"), tags=["baseline"])
    db.log_metrics(run_id, {"train_loss": 2.1, "train_lr": 3e-3}, step=10)
    db.update_run_status(run_id, "completed", summary={...})
    db.list_runs(status="completed", sort="val_loss")     # best first
    db.compare_runs([a, b])                                # differing params, metrics, env diff
    db.get_best_run("val_loss", sweep="lr-sweep")

The `db` tracker (tengine/tracking/db.py) records a training run through these calls on rank 0,
`tengine runs list|show|compare|best` reads them, and the control plane serves them as its `runs`
component. A run is named by its id (`<name>-<8 hex>`), by its name (the newest run of that
name) or by a unique prefix of its id.

One value per step: a metric logged again for a step it already has (a resumed run repeating
steps 51–55 after its checkpoint at 50) marks the earlier row `superseded` in the same
transaction, and `supersede_after(run_id, step)` marks everything logged past a resumed run's
checkpoint at once (steps it will not log again go too). Reads return current rows unless asked.
Superseded rows are kept: what a run once reported is never rewritten.

Params are the resolved config flattened to dotted keys (`optim.lr`), with secret-looking values
masked before they are stored. Metric rows are the store's high-rate bookkeeping
(`transaction(durable=False)`: a crash may lose the last fraction of a second of them, never
corrupt the store); a run's record, status and artifacts are durable writes. No torch here.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, tuple_, update

from tengine.control.registry import check_name
from tengine.control.store import Store, redact_uri, run_artifacts, run_metrics, runs
from tengine.envdiff import env_diff
from tengine.errors import Invalid, NotFound
from tengine.files import config_hash as hash_of
from tengine.redact import redact_tree

R, M = runs.c, run_metrics.c
STATUSES = ("running", "completed", "early_stopped", "halted", "preempted", "interrupted",
            "stopped", "failed")
# metrics where higher is better (by the key's last `_` part, or a rate `*_per_s`); others: lower
HIGHER_IS_BETTER = ("accuracy", "acc", "f1", "auc", "mfu")
# a statement's bound parameters stay under SQLite's limit (32766; older builds 999)
CHUNK = 400


def mode_of(key: str) -> str:
    """`max` for an accuracy-like metric (`val_accuracy`, `train_tokens_per_s`), else `min`."""
    higher = key.endswith("_per_s") or key.rsplit("_", 1)[-1] in HIGHER_IS_BETTER
    return "max" if higher else "min"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"optim": {"lr": 3e-4}}` → `{"optim.lr": 3e-4}` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    status: str
    params: dict[str, Any]
    config_hash: str | None = None
    run_dir: str | None = None
    sweep: str | None = None
    job_id: str | None = None
    tags: tuple[str, ...] = ()
    env: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    starts: int = 1
    created: float = 0.0
    updated: float = 0.0
    ended: float | None = None
    # per metric key asked for: {"best", "last", "last_step", "count"} (list_runs, get_best_run)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tags": list(self.tags)}


def _run(row: Any, metrics: dict | None = None) -> Run:
    loads = lambda text: None if text is None else json.loads(text)  # noqa: E731
    return Run(id=row["id"], name=row["name"], status=row["status"], params=loads(row["params"]),
               config_hash=row["config_hash"], run_dir=row["run_dir"], sweep=row["sweep"],
               job_id=row["job_id"], tags=tuple(loads(row["tags"])), env=loads(row["env"]),
               summary=loads(row["summary"]), starts=row["starts"], created=row["created"],
               updated=row["updated"], ended=row["ended"], metrics=metrics or {})


def _value(key: str, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"metric '{key}': {value!r} is not a number")
    return None if math.isnan(value) else float(value)  # NULL: NaN (SQLite stores no NaN)


class ExperimentDB:
    def __init__(self, store: Store, clock=time.time):
        self.store, self.clock = store, clock

    # --- writing -----------------------------------------------------------------------------
    def log_run(self, name: str, params: dict[str, Any] | None = None, *, run_id: str | None = None,
                run_dir: str | None = None, tags: list[str] | tuple[str, ...] = (),
                sweep: str | None = None, job_id: str | None = None,
                env: dict[str, Any] | None = None, config_hash: str | None = None,
                status: str = "running") -> str:
        """Record a run (a new id unless `run_id` is given); logging an existing `run_id` again
        is its next start (a resume): status, params and env are updated, `starts` counts it."""
        check_name(name, "run name")
        self._check_status(status)
        params = params or {}
        config_hash = config_hash or hash_of(params)
        fields = {"status": status, "run_dir": run_dir, "sweep": sweep, "job_id": job_id,
                  "tags": json.dumps(sorted(set(map(str, tags)))),
                  "params": json.dumps(flatten(redact_tree(params)), default=str),
                  "config_hash": config_hash,
                  "env": None if env is None else json.dumps(redact_tree(env), default=str),
                  "updated": self.clock(), "ended": None}
        with self.store.transaction() as db:
            if run_id is not None and db.execute(select(R.id).where(R.id == run_id)).first():
                db.execute(update(runs).where(R.id == run_id).values(**fields,
                                                                     starts=R.starts + 1))
                return run_id
            run_id = run_id or f"{name}-{uuid.uuid4().hex[:8]}"
            db.execute(insert(runs).values(id=run_id, name=name, starts=1,
                                           created=fields["updated"], **fields))
        return run_id

    def log_metric(self, run_id: str, key: str, value: float, step: int) -> None:
        self.log_metrics(run_id, {key: value}, step)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self.log_metric_rows(run_id, [(step, key, value) for key, value in metrics.items()])

    def log_metric_rows(self, run_id: str, rows: list[tuple[int, str, float]]) -> int:
        """Many `(step, key, value)` rows in one transaction (what the tracker sends at each
        flush). A row for a (key, step) the run already has supersedes the earlier one."""
        now = self.clock()
        values = []
        for step, key, value in rows:
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise Invalid(f"metric '{key}': step {step!r} must be a non-negative integer")
            if not isinstance(key, str) or not 0 < len(key) <= 128:
                raise Invalid(f"metric key {key!r} must be a string of 1-128 characters")
            values.append({"run_id": run_id, "key": key, "step": step, "value": _value(key, value),
                           "ts": now, "superseded": 0})
        if not values:
            return 0
        # a (key, step) twice in one batch: the later row counts (kept, like the earlier rows)
        last = {(v["key"], v["step"]): i for i, v in enumerate(values)}
        for i, v in enumerate(values):
            v["superseded"] = int(last[(v["key"], v["step"])] != i)
        pairs = sorted(last)
        with self.store.transaction(durable=False) as db:
            self._require(db, run_id)
            for i in range(0, len(pairs), CHUNK):
                db.execute(update(run_metrics).where(
                    M.run_id == run_id, M.superseded == 0,
                    tuple_(M.key, M.step).in_(pairs[i:i + CHUNK])).values(superseded=1))
            db.execute(insert(run_metrics), values)
        return len(values)

    def supersede_after(self, run_id: str, step: int) -> int:
        """Mark every current metric and artifact of the run past `step` superseded (a resume
        from the checkpoint at `step`: what came after it is being redone). Returns how many
        metric rows."""
        A = run_artifacts.c
        with self.store.transaction() as db:
            self._require(db, run_id)
            db.execute(update(run_artifacts).where(A.run_id == run_id, A.superseded == 0,
                                                   A.step > step).values(superseded=1))
            return db.execute(update(run_metrics).where(
                M.run_id == run_id, M.superseded == 0, M.step > step).values(superseded=1)).rowcount

    def move_run(self, run_id: str, run_dir: str) -> bool:
        """The run's files were moved to `run_dir` (a fresh start in its run dir set them
        aside): its record and its artifacts' URIs follow them, and a run still `running`
        (its process died) is `interrupted`. False: no such run."""
        A, now = run_artifacts.c, self.clock()
        with self.store.transaction() as db:
            row = db.execute(select(R.run_dir, R.status).where(R.id == run_id)).first()
            if row is None:
                return False
            values: dict[str, Any] = {"run_dir": run_dir, "updated": now}
            if row.status == "running":
                values.update(status="interrupted", ended=now)
            db.execute(update(runs).where(R.id == run_id).values(**values))
            old = row.run_dir
            for art in db.execute(select(A.id, A.uri).where(A.run_id == run_id)).all() if old else ():
                if art.uri == old or art.uri.startswith(old + "/"):
                    db.execute(update(run_artifacts).where(A.id == art.id).values(
                        uri=run_dir + art.uri[len(old):]))
        return True

    def log_artifact(self, run_id: str, kind: str, uri: str, *, sha256: str | None = None,
                     step: int | None = None, meta: dict[str, Any] | None = None) -> int:
        """A file or directory the run produced (`checkpoint`, `bundle`, ...)."""
        if not kind or not uri:
            raise Invalid("log_artifact needs a kind (checkpoint, bundle, ...) and a uri")
        with self.store.transaction() as db:
            self._require(db, run_id)
            return db.execute(insert(run_artifacts).values(
                run_id=run_id, kind=kind, uri=uri, sha256=sha256, step=step,
                meta=json.dumps(redact_tree(meta or {}), default=str), created=self.clock(),
                superseded=0).returning(run_artifacts.c.id)).scalar_one()

    def update_run_status(self, run_id: str, status: str,
                          summary: dict[str, Any] | None = None) -> None:
        self._check_status(status)
        values: dict[str, Any] = {"status": status, "updated": self.clock(),
                                  "ended": None if status == "running" else self.clock()}
        if summary is not None:
            values["summary"] = json.dumps(redact_tree(summary), default=str)
        with self.store.transaction() as db:
            self._require(db, run_id)
            db.execute(update(runs).where(R.id == run_id).values(**values))

    # --- reading -----------------------------------------------------------------------------
    def get_run(self, ref: str) -> Run:
        """By id, by name (the newest run of that name) or by a unique prefix of its id."""
        return _run(self._row(ref))

    def get_metrics(self, ref: str, key: str | None = None,
                    include_superseded: bool = False) -> list[dict[str, Any]]:
        """The run's metric rows by key, then step: `{step, key, value, ts, superseded}`."""
        run_id = self._row(ref)["id"]
        query = select(M.step, M.key, M.value, M.ts, M.superseded).where(M.run_id == run_id)
        if key is not None:
            query = query.where(M.key == key)
        if not include_superseded:
            query = query.where(M.superseded == 0)
        rows = self.store.read(query.order_by(M.key, M.step, M.id))
        return [{**r, "value": math.nan if r["value"] is None else r["value"],
                 "superseded": bool(r["superseded"])} for r in rows]

    def get_artifacts(self, ref: str, kind: str | None = None,
                      include_superseded: bool = False) -> list[dict[str, Any]]:
        A = run_artifacts.c
        query = select(run_artifacts).where(A.run_id == self._row(ref)["id"])
        if kind is not None:
            query = query.where(A.kind == kind)
        if not include_superseded:
            query = query.where(A.superseded == 0)
        rows = self.store.read(query.order_by(A.id))
        return [{**r, "meta": json.loads(r["meta"]), "superseded": bool(r["superseded"])}
                for r in rows]

    def list_runs(self, *, status: str | None = None, tag: str | None = None,
                  sweep: str | None = None, name: str | None = None, sort: str | None = None,
                  mode: str | None = None, limit: int | None = None,
                  metrics: tuple[str, ...] = ()) -> list[Run]:
        """Runs, newest first; `sort=KEY`: by each run's best value of that metric (`mode`:
        min/max, default by its name), runs without it last. Each run carries `metrics` for
        `sort` and `metrics` keys: best, last, last_step, count."""
        query = select(runs)
        for column, wanted in ((R.status, status), (R.sweep, sweep), (R.name, name)):
            if wanted is not None:
                query = query.where(column == wanted)
        rows = self.store.read(query.order_by(R.created.desc(), R.id))
        if tag is not None:
            rows = [r for r in rows if tag in json.loads(r["tags"])]
        keys = tuple(dict.fromkeys(([sort] if sort else []) + list(metrics)))
        modes = {sort: self._check_mode(mode, sort)} if sort else {}
        stats = self._stats([r["id"] for r in rows], keys, modes)
        out = [_run(r, stats.get(r["id"], {})) for r in rows]
        if sort:
            mode = modes[sort]
            sign = 1.0 if mode == "min" else -1.0
            has = [r for r in out if r.metrics.get(sort, {}).get("best") is not None]
            out = sorted(has, key=lambda r: sign * r.metrics[sort]["best"]) + \
                [r for r in out if r not in has]
        return out[:limit] if limit else out

    def get_runs_for_sweep(self, sweep: str) -> list[Run]:
        return self.list_runs(sweep=sweep)

    def get_best_run(self, metric: str, mode: str | None = None, *, sweep: str | None = None,
                     status: str | None = None, tag: str | None = None) -> Run | None:
        """The run with the best value of `metric` (None: no run has logged it)."""
        ranked = self.list_runs(sort=metric, mode=mode, sweep=sweep, status=status, tag=tag)
        return ranked[0] if ranked and ranked[0].metrics.get(metric, {}).get("best") is not None \
            else None

    def compare_runs(self, refs: list[str]) -> dict[str, Any]:
        """Two or more runs side by side: the params that differ (value per run, in order),
        each metric's best and last value per run, and the environment diff of each run from
        the first."""
        if len(refs) < 2:
            raise Invalid(f"compare_runs needs two or more runs, got {len(refs)}")
        found = [self.get_run(ref) for ref in refs]
        ids = [r.id for r in found]
        keys = sorted({k for r in found for k in r.params})
        params = {k: [r.params.get(k) for r in found] for k in keys
                  if any(r.params.get(k) != found[0].params.get(k) for r in found)}
        names = self.store.read(select(M.key).distinct().where(M.run_id.in_(ids),
                                                               M.superseded == 0))
        stats = self._stats(ids, tuple(sorted(n["key"] for n in names)))
        metrics = {k: {"mode": mode_of(k),
                       **{part: [stats.get(i, {}).get(k, {}).get(part) for i in ids]
                          for part in ("best", "last", "last_step")}}
                   for k in sorted({k for s in stats.values() for k in s})}
        return {"runs": [{"id": r.id, "name": r.name, "status": r.status, "sweep": r.sweep,
                          "steps": (r.summary or {}).get("steps"), "config_hash": r.config_hash}
                         for r in found],
                "params": params, "metrics": metrics,
                "env": {r.id: env_diff(found[0].env or {}, r.env or {}) for r in found[1:]}}

    # --- helpers -----------------------------------------------------------------------------
    def _stats(self, ids: list[str], keys: tuple[str, ...],
               modes: dict[str, str] | None = None) -> dict[str, dict[str, dict]]:
        """{run: {key: best/last/last_step/count}} over current rows, in two grouped queries;
        best by `modes[key]`, else by the key's name."""
        out: dict[str, dict[str, dict]] = {}
        step = CHUNK // 2  # the "last" query binds 3 parameters per run
        for i in range(0, len(ids), step):
            chunk = ids[i:i + step]
            for key in keys:
                where = and_(M.run_id.in_(chunk), M.key == key, M.superseded == 0)
                mode = (modes or {}).get(key) or mode_of(key)
                best = func.max(M.value) if mode == "max" else func.min(M.value)
                groups = self.store.read(select(M.run_id, best.label("best"),
                                                func.max(M.step).label("last_step"),
                                                func.count().label("count")).where(where)
                                         .group_by(M.run_id))
                if not groups:
                    continue
                lasts = {(r["run_id"], r["step"]): r["value"] for r in self.store.read(
                    select(M.run_id, M.step, M.value).where(where, or_(*[
                        and_(M.run_id == g["run_id"], M.step == g["last_step"]) for g in groups])))}
                for g in groups:
                    out.setdefault(g["run_id"], {})[key] = {
                        "best": g["best"], "last": lasts.get((g["run_id"], g["last_step"])),
                        "last_step": g["last_step"], "count": g["count"]}
        return out

    def _row(self, ref: str) -> Any:
        if not isinstance(ref, str) or not ref:
            raise Invalid(f"run {ref!r}: give a run id, a run name or an id prefix")
        for query in (select(runs).where(R.id == ref),
                      select(runs).where(R.name == ref).order_by(R.created.desc()).limit(1)):
            if rows := self.store.read(query):
                return rows[0]
        # (not LIKE: case-insensitive on SQLite, not on PostgreSQL)
        rows = self.store.read(select(runs).where(func.substr(R.id, 1, len(ref)) == ref).limit(6))
        if len(rows) == 1:
            return rows[0]
        if rows:
            raise Invalid(f"run '{ref}' is ambiguous: it starts {len(rows)}"
                          f"{'+' if len(rows) > 5 else ''} run ids "
                          f"({', '.join(r['id'] for r in rows[:5])}); give more of the id")
        raise NotFound(f"no run '{ref}' in the experiment DB {redact_uri(self.store.uri)} "
                       "(by id, name or id prefix); `tengine runs list` shows its runs")

    @staticmethod
    def _require(db, run_id: str) -> None:
        if db.execute(select(R.id).where(R.id == run_id)).first() is None:
            raise NotFound(f"no run '{run_id}' in the experiment DB: log_run() it first")

    @staticmethod
    def _check_status(status: str) -> None:
        if status not in STATUSES:
            raise Invalid(f"run status {status!r} is not one of {', '.join(STATUSES)}")

    @staticmethod
    def _check_mode(mode: str | None, key: str) -> str:
        mode = mode or mode_of(key)
        if mode not in ("min", "max"):
            raise Invalid(f"mode {mode!r}: use min or max")
        return mode
