"""Job queue: an explicit state machine with leases, retries with backoff, events and logs.

    PENDING → LEASED → RUNNING → SUCCEEDED | FAILED | CANCELLED
    a failed attempt → PENDING again after 2^attempt s (capped) until max_retries run out
    a lost attempt (its lease expired: the runner died) counts the same way

A runner `claim`s the best ready job (priority 1–10, higher first, FIFO within) and holds it by
a lease it renews with `heartbeat`; a job whose lease expired (its runner died: node OOM, a
segfault, a lost host) has used up an attempt like a failure: PENDING again after the backoff
while retries remain, else FAILED with the reason, so a job that kills its runner every time
ends instead of being requeued forever. The old runner's later heartbeat/complete is refused,
so a job never runs twice at the same time. A `release` (the runner stops, the run was
preempted) gives the attempt back. Every transition is one transaction that also writes an event (UTC epoch seconds,
from, to, reason). `sleep` jobs exist for tests of the dispatcher.

Expired leases are dealt with by `claim` (before it picks a job) and by the control plane's
tick (`expire_leases`, every 2 s); until then the owner's own heartbeat may still renew its
lease, which is harmless: nobody else can hold the job before the expiry is processed.

A runner's bookkeeping (claim, start, heartbeat, log, complete, fail, release) commits with
relaxed durability (`Store.transaction(durable=False)`): power loss on the store's host may
lose its last fraction of a second, which the queue turns into an expired lease or a rerun;
submits, cancels and retries are durable.

A runner's calls are idempotent, because the control plane can die after committing a call and
before its reply arrives (the runner then repeats the call): `claim` returns the job already
leased to the caller, and `start`/`complete`/`fail` repeated by the runner that made them return
the job as it is. `lease_owner` therefore keeps the last runner after the lease ends.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, update

from tengine.control.store import Store, job_events, job_logs, jobs
from tengine.errors import Conflict, Invalid, NotFound
from tengine.registry import did_you_mean

JOB_TYPES = ("train", "sweep", "export", "evaluate", "retrain", "sleep")
PENDING, LEASED, RUNNING = "PENDING", "LEASED", "RUNNING"
SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
ALLOWED = {
    PENDING: {LEASED, CANCELLED},
    LEASED: {RUNNING, PENDING, FAILED, CANCELLED},
    RUNNING: {SUCCEEDED, PENDING, FAILED, CANCELLED},
    FAILED: {PENDING},  # retry
    CANCELLED: {PENDING},  # retry
    SUCCEEDED: set(),
}
MAX_BACKOFF_S = 300.0

# The hot statements, built once with bind parameters (`:name`): building a SQLAlchemy
# expression costs more than running it on SQLite, and these run at every heartbeat and claim.
C = jobs.c
BY_ID = select(jobs).where(C.id == bindparam("b_id"))
SET_BY_ID = update(jobs).where(C.id == bindparam("b_id")).returning(*jobs.c)  # SET: the params
# a runner's move from the one state it can come from, checked and done in one statement
MOVE_OWNED = (update(jobs).where(C.id == bindparam("b_id"), C.lease_owner == bindparam("b_runner"),
                                 C.state == bindparam("b_from")).returning(*jobs.c))
_EXPIRED = C.state.in_((LEASED, RUNNING)) & (C.lease_expires < bindparam("now"))
# is anything due? (an expired lease first: then the claim deals with expiry before it picks)
ANY_DUE = (select(C.id, case((_EXPIRED, 1), else_=0).label("expired"))
           .where(((C.state == PENDING) & (C.not_before <= bindparam("now")))
                  | ((C.state == LEASED) & (C.lease_owner == bindparam("runner"))) | _EXPIRED)
           .order_by(case((_EXPIRED, 0), else_=1)).limit(1))
EXPIRED = select(jobs).where(_EXPIRED)
# the runner's own earlier claim (its reply was lost) first, else the best ready job
NEXT = (select(jobs).where(((C.state == LEASED) & (C.lease_owner == bindparam("runner")))
                           | ((C.state == PENDING) & (C.not_before <= bindparam("now"))))
        .order_by(case((C.state == LEASED, 0), else_=1), C.priority.desc(), C.seq).limit(1))
LEASE = (update(jobs).where(C.id == bindparam("b_id"))
         .values(state=LEASED, lease_owner=bindparam("runner"), lease_expires=bindparam("until"),
                 attempts=C.attempts + 1, updated=bindparam("now")).returning(*jobs.c))
# the next sequence number is read by the insert itself (under the write lock: no race)
SUBMIT = insert(jobs).values(seq=select(func.coalesce(func.max(C.seq), 0) + 1).scalar_subquery()
                             ).returning(*jobs.c)
EVENT = insert(job_events)
LOG = insert(job_logs)


@dataclass(frozen=True)
class Job:
    id: str
    type: str
    config: dict[str, Any]
    resources: dict[str, Any]
    priority: int
    max_retries: int
    attempts: int
    state: str
    idempotency_key: str | None
    created: float
    updated: float
    not_before: float
    lease_owner: str | None
    lease_expires: float | None
    result: dict[str, Any] | None
    error: str | None
    schedule_id: str | None = None
    fire_time: float | None = None


def _job(row) -> Job:
    data = dict(row)
    data.pop("seq")
    for key in ("config", "resources", "result"):
        data[key] = json.loads(data[key]) if data[key] is not None else None
    return Job(**data)


class JobQueue:
    """`validate(type, config)`, if given, vets a job before it is queued (the control plane's
    import allow-list); it raises `Invalid` to refuse it."""

    def __init__(self, store: Store, clock=time.time, validate=None):
        self.store, self.clock, self.validate = store, clock, validate

    # --- submitting --------------------------------------------------------------------------
    def submit(self, type: str, config: dict[str, Any] | None = None, *,
               resources: dict[str, Any] | None = None, priority: int = 5, max_retries: int = 0,
               idempotency_key: str | None = None, schedule_id: str | None = None,
               fire_time: float | None = None) -> Job:
        if type not in JOB_TYPES:
            raise Invalid(f"job type '{type}' unknown{did_you_mean(str(type), list(JOB_TYPES))}; "
                          f"valid: {', '.join(JOB_TYPES)}")
        if not isinstance(priority, int) or not 1 <= priority <= 10:
            raise Invalid(f"priority {priority!r} must be an integer from 1 to 10 (higher runs first)")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise Invalid(f"max_retries {max_retries!r} must be an integer ≥ 0")
        if self.validate is not None:
            self.validate(type, config or {})
        with self.store.transaction() as db:
            return self._submit_in(db, type, config, resources=resources, priority=priority,
                                  max_retries=max_retries, idempotency_key=idempotency_key,
                                  schedule_id=schedule_id, fire_time=fire_time)

    def _submit_in(self, db, type: str, config: dict[str, Any] | None = None, *,
                  resources: dict[str, Any] | None = None, priority: int = 5,
                  max_retries: int = 0, idempotency_key: str | None = None,
                  schedule_id: str | None = None, fire_time: float | None = None) -> Job:
        """`submit` inside a caller's transaction `db` (a trigger's firing: the job and the
        firing's record commit together, or neither does); the arguments are checked already.
        Not reachable through `ControlPlane.call` (private): a caller has no transaction there."""
        now = self.clock()
        # a second submit with the same key, or of the same schedule fire, is the same job
        if idempotency_key is not None:
            row = db.execute(select(jobs).where(jobs.c.idempotency_key == idempotency_key))
        elif schedule_id is not None:
            row = db.execute(select(jobs).where(jobs.c.schedule_id == schedule_id,
                                                jobs.c.fire_time == fire_time))
        else:
            row = None
        if row is not None and (row := row.mappings().first()) is not None:
            return _job(row)
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        row = db.execute(SUBMIT, {
            "id": job_id, "type": type, "config": json.dumps(config or {}),
            "resources": json.dumps(resources or {}), "priority": priority,
            "max_retries": max_retries, "attempts": 0, "state": PENDING,
            "idempotency_key": idempotency_key, "created": now, "updated": now,
            "not_before": now, "schedule_id": schedule_id, "fire_time": fire_time,
        }).mappings().one()
        self._event(db, job_id, None, PENDING, "submitted", now)
        return _job(row)

    # --- running -----------------------------------------------------------------------------
    def claim(self, runner: str, ttl_s: float = 30.0) -> Job | None:
        """Lease the best ready job to `runner`, or None."""
        now = self.clock()
        # an idle runner's poll: no write transaction when nothing is due
        due = self.store.read(ANY_DUE, {"now": now, "runner": runner})
        if not due:
            return None
        with self.store.transaction(durable=False) as db:
            if due[0]["expired"]:
                self._expire(db, now)
            row = db.execute(NEXT, {"now": now, "runner": runner}).mappings().first()
            if row is None:
                return None
            if row["state"] == LEASED:  # this runner's earlier claim, whose reply it never got
                return _job(db.execute(SET_BY_ID, {"b_id": row["id"], "lease_expires": now + ttl_s,
                                                   "updated": now}).mappings().one())
            leased = db.execute(LEASE, {"b_id": row["id"], "runner": runner,
                                        "until": now + ttl_s, "now": now}).mappings().one()
            self._event(db, row["id"], PENDING, LEASED, f"leased to {runner}", now)
            return _job(leased)

    def start(self, job_id: str, runner: str) -> Job:
        return self._move(job_id, RUNNING, f"started by {runner}", runner=runner, done=(RUNNING,),
                          durable=False, source=LEASED)

    def heartbeat(self, job_id: str, runner: str, ttl_s: float = 30.0,
                  lines: list[str] | tuple[str, ...] = ()) -> None:
        """Renew the lease; `lines` are the job's new log lines, kept in the same transaction."""
        now = self.clock()
        with self.store.transaction(durable=False) as db:
            self._owned(db, job_id, runner)
            db.execute(SET_BY_ID, {"b_id": job_id, "lease_expires": now + ttl_s, "updated": now})
            self._log(db, job_id, now, lines)

    def complete(self, job_id: str, runner: str, result: dict[str, Any] | None = None) -> Job:
        return self._move(job_id, SUCCEEDED, "succeeded", runner=runner, done=(SUCCEEDED,),
                          sets={"result": json.dumps(result or {})}, durable=False,
                          source=RUNNING)

    def fail(self, job_id: str, runner: str, error: str) -> Job:
        """A failed attempt: back to PENDING after a backoff while retries remain, else FAILED."""
        now = self.clock()
        with self.store.transaction(durable=False) as db:
            row = self._owned(db, job_id, runner, done=(PENDING, FAILED))
            if row is None:  # a repeated call: the failure is recorded already
                return _job(self._row(db, job_id))
            return _job(self._attempt_lost(db, row, f"failed: {error}", error, now))

    def release(self, job_id: str, runner: str, reason: str) -> Job:
        """The runner gives the job back unfinished (it is stopping, or the run was preempted
        and will resume): PENDING again at once. The attempt does not use up a retry."""
        now = self.clock()
        with self.store.transaction(durable=False) as db:
            row = self._owned(db, job_id, runner, done=(PENDING,))
            if row is None:
                return _job(self._row(db, job_id))
            return _job(self._set(db, row, PENDING, f"released by {runner}: {reason}", now,
                                  {"not_before": now, "attempts": max(0, row["attempts"] - 1)}))

    def cancel(self, job_id: str, reason: str = "cancelled") -> Job:
        return self._move(job_id, CANCELLED, reason)

    def retry(self, job_id: str) -> Job:
        return self._move(job_id, PENDING, "retried by request", sets={"not_before": self.clock()})

    # --- reading -----------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        rows = self.store.read(BY_ID, {"b_id": job_id})
        if not rows:
            raise NotFound(f"job '{job_id}' does not exist")
        return _job(rows[0])

    def list(self, state: str | None = None, type: str | None = None) -> list[Job]:
        query = select(jobs).order_by(jobs.c.seq)
        if state is not None:
            query = query.where(jobs.c.state == state)
        if type is not None:
            query = query.where(jobs.c.type == type)
        return [_job(r) for r in self.store.read(query)]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        self.get(job_id)
        e = job_events.c
        return [dict(r) for r in self.store.read(
            select(e.ts, e.from_state, e.to_state, e.reason).where(e.job_id == job_id).order_by(e.id))]

    def log(self, job_id: str, *lines: str) -> None:
        now = self.clock()
        with self.store.transaction(durable=False) as db:
            self._row(db, job_id)
            self._log(db, job_id, now, lines)

    def logs(self, job_id: str) -> list[str]:
        self.get(job_id)
        return [r["line"] for r in self.store.read(
            select(job_logs.c.line).where(job_logs.c.job_id == job_id).order_by(job_logs.c.id))]

    def expire_leases(self) -> int:
        with self.store.transaction(durable=False) as db:
            return self._expire(db, self.clock())

    # --- helpers -----------------------------------------------------------------------------
    def _move(self, job_id: str, to: str, reason: str, *, runner: str | None = None,
              done: tuple[str, ...] = (), sets: dict[str, Any] | None = None,
              durable: bool = True, source: str | None = None) -> Job:
        """`source`: the one state a runner's move comes from, for the one-statement path."""
        now = self.clock()
        with self.store.transaction(durable) as db:
            if runner and source:
                moved = db.execute(MOVE_OWNED, {"b_id": job_id, "b_runner": runner, "b_from": source,
                                                **self._values(to, now, sets or {})}).mappings().first()
                if moved is not None:
                    self._event(db, job_id, source, to, reason, now)
                    return _job(moved)
            # the general path: a repeated call, a lost lease, a job that is not there
            row = self._owned(db, job_id, runner, done) if runner else self._row(db, job_id)
            if row is None:  # a repeated call: nothing to do
                return _job(self._row(db, job_id))
            return _job(self._set(db, row, to, reason, now, sets or {}))

    def _set(self, db, row, to: str, reason: str, now: float, sets: dict[str, Any]):
        """Move `row` to state `to` with an event; returns the updated row."""
        if to not in ALLOWED[row["state"]]:
            raise Conflict(f"job {row['id']} is {row['state']}; it cannot become {to}")
        updated = db.execute(SET_BY_ID, {"b_id": row["id"], **self._values(to, now, sets)}
                             ).mappings().one()
        self._event(db, row["id"], row["state"], to, reason, now)
        return updated

    @staticmethod
    def _values(to: str, now: float, sets: dict[str, Any]) -> dict[str, Any]:
        values = {"state": to, "updated": now, **sets}
        if to in TERMINAL or to == PENDING:
            values.update(lease_expires=None)  # lease_owner stays: who ran it last
        return values

    def _attempt_lost(self, db, row, what: str, error: str, now: float):
        """Attempt `row["attempts"]` ended without a result: retry after a backoff while
        retries remain, else FAILED. `what` says how it ended, for the event."""
        attempt, allowed = row["attempts"], row["max_retries"] + 1
        if attempt <= row["max_retries"]:
            delay = min(MAX_BACKOFF_S, 2.0 ** attempt)
            return self._set(db, row, PENDING, f"attempt {attempt} of {allowed} {what}; retry "
                             f"in {delay:g} s", now, {"error": error, "not_before": now + delay})
        return self._set(db, row, FAILED, f"attempt {attempt} of {allowed} {what}; no retries left "
                      f"(max_retries {row['max_retries']})", now, {"error": error})

    @staticmethod
    def _row(db, job_id: str):
        row = db.execute(BY_ID, {"b_id": job_id}).mappings().first()
        if row is None:
            raise NotFound(f"job '{job_id}' does not exist")
        return row

    def _owned(self, db, job_id: str, runner: str, done: tuple[str, ...] = ()):
        """The row while `runner` holds its lease; None when the row is already in a `done`
        state by this runner's own earlier call (a repeated call); else Conflict."""
        row = self._row(db, job_id)
        if row["state"] in done and row["lease_owner"] == runner:
            return None
        if row["state"] not in (LEASED, RUNNING) or row["lease_owner"] != runner:
            raise Conflict(f"job {job_id} is not leased to {runner} (state {row['state']}, "
                           f"lease {row['lease_owner']}); its lease was lost")
        return row

    def _expire(self, db, now: float) -> int:
        """Leases that ran out: their runner died or lost contact (it stops its own work at
        half the TTL without contact), so the attempt is lost and counts."""
        rows = db.execute(EXPIRED, {"now": now}).mappings().all()
        for row in rows:
            error = (f"the lease of {row['lease_owner']} expired: the runner died (node OOM, a "
                     "crash, a lost host) or lost contact with the control plane")
            self._attempt_lost(db, row, "lost", error, now)
        return len(rows)

    @staticmethod
    def _event(db, job_id: str, frm: str | None, to: str, reason: str, now: float) -> None:
        db.execute(EVENT, {"job_id": job_id, "ts": now, "from_state": frm, "to_state": to,
                           "reason": reason})

    @staticmethod
    def _log(db, job_id: str, now: float, lines) -> None:
        if lines:
            db.execute(LOG, [{"job_id": job_id, "ts": now, "line": x} for x in lines])
