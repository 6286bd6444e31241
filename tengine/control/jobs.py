"""Job queue: an explicit state machine with leases, retries with backoff, events and logs.

    PENDING → LEASED → RUNNING → SUCCEEDED | FAILED | CANCELLED
    a failed attempt → PENDING again after 2^attempt s (capped) until max_retries run out

A runner `claim`s the best ready job (priority 1–10, higher first, FIFO within) and holds it by
a lease it renews with `heartbeat`; a job whose lease expired (its runner died) goes back to
PENDING, and the old runner's later heartbeat/complete is refused, so a job never runs twice at
the same time. Every transition is one transaction that also writes an event (UTC epoch seconds,
from, to, reason). `sleep` jobs exist for tests of the dispatcher.

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

from tengine.control.store import SQLiteStore
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
    def __init__(self, store: SQLiteStore, clock=time.time):
        self.store, self.clock = store, clock
        with store.transaction() as db:  # one fire of a schedule makes at most one job
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS jobs_fire ON jobs (schedule_id, fire_time) "
                       "WHERE schedule_id IS NOT NULL")

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
        now = self.clock()
        with self.store.transaction() as db:
            # a second submit with the same key, or of the same schedule fire, is the same job
            if idempotency_key is not None:
                row = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?",
                                 (idempotency_key,)).fetchone()
            elif schedule_id is not None:
                row = db.execute("SELECT * FROM jobs WHERE schedule_id = ? AND fire_time = ?",
                                 (schedule_id, fire_time)).fetchone()
            else:
                row = None
            if row is not None:
                return _job(row)
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            job_id = f"job-{uuid.uuid4().hex[:12]}"
            db.execute(
                "INSERT INTO jobs (id, type, config, resources, priority, max_retries, attempts, "
                "state, idempotency_key, created, updated, not_before, schedule_id, fire_time, seq) "
                "VALUES (?,?,?,?,?,?,0,?,?,?,?,?,?,?,?)",
                (job_id, type, json.dumps(config or {}), json.dumps(resources or {}), priority,
                 max_retries, PENDING, idempotency_key, now, now, now, schedule_id, fire_time, seq))
            self._event(db, job_id, None, PENDING, "submitted", now)
        return self.get(job_id)

    # --- running -----------------------------------------------------------------------------
    def claim(self, runner: str, ttl_s: float = 30.0) -> Job | None:
        """Lease the best ready job to `runner`, or None."""
        now = self.clock()
        if not self.store.read(  # an idle runner's poll: no write transaction when nothing is due
                "SELECT 1 FROM jobs WHERE (state = ? AND not_before <= ?) OR (state = ? AND "
                "lease_owner = ?) OR (state IN (?, ?) AND lease_expires < ?) LIMIT 1",
                (PENDING, now, LEASED, runner, LEASED, RUNNING, now)):
            return None
        with self.store.transaction() as db:
            self._expire(db, now)
            mine = db.execute("SELECT * FROM jobs WHERE state = ? AND lease_owner = ?",
                              (LEASED, runner)).fetchone()
            if mine is not None:  # this runner's earlier claim, whose reply it never got
                db.execute("UPDATE jobs SET lease_expires = ?, updated = ? WHERE id = ?",
                           (now + ttl_s, now, mine["id"]))
                return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (mine["id"],)).fetchone())
            row = db.execute("SELECT * FROM jobs WHERE state = ? AND not_before <= ? "
                             "ORDER BY priority DESC, seq LIMIT 1", (PENDING, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = ?, lease_owner = ?, lease_expires = ?, "
                       "attempts = attempts + 1, updated = ? WHERE id = ?",
                       (LEASED, runner, now + ttl_s, now, row["id"]))
            self._event(db, row["id"], PENDING, LEASED, f"leased to {runner}", now)
        return self.get(row["id"])

    def start(self, job_id: str, runner: str) -> Job:
        return self._move(job_id, RUNNING, f"started by {runner}", runner=runner, done=(RUNNING,))

    def heartbeat(self, job_id: str, runner: str, ttl_s: float = 30.0,
                  lines: list[str] | tuple[str, ...] = ()) -> None:
        """Renew the lease; `lines` are the job's new log lines, kept in the same transaction."""
        now = self.clock()
        with self.store.transaction() as db:
            self._expire(db, now)
            self._owned(db, job_id, runner)
            db.execute("UPDATE jobs SET lease_expires = ?, updated = ? WHERE id = ?",
                       (now + ttl_s, now, job_id))
            db.executemany("INSERT INTO job_logs VALUES (?,?,?)", [(job_id, now, x) for x in lines])

    def complete(self, job_id: str, runner: str, result: dict[str, Any] | None = None) -> Job:
        return self._move(job_id, SUCCEEDED, "succeeded", runner=runner, done=(SUCCEEDED,),
                          sets={"result": json.dumps(result or {})})

    def fail(self, job_id: str, runner: str, error: str) -> Job:
        """A failed attempt: back to PENDING after a backoff while retries remain, else FAILED."""
        now = self.clock()
        with self.store.transaction() as db:
            self._expire(db, now)
            row = self._owned(db, job_id, runner, done=(PENDING, FAILED))
            if row is not None and row["attempts"] <= row["max_retries"]:
                delay = min(MAX_BACKOFF_S, 2.0 ** row["attempts"])
                self._set(db, row, PENDING, f"attempt {row['attempts']} failed: {error}; retry in "
                          f"{delay:g} s", now, {"error": error, "not_before": now + delay})
            elif row is not None:  # (None: a repeated call, the failure is recorded already)
                self._set(db, row, FAILED, f"failed: {error}", now, {"error": error})
        return self.get(job_id)

    def release(self, job_id: str, runner: str, reason: str) -> Job:
        """The runner gives the job back unfinished (it is stopping, or the run was preempted
        and will resume): PENDING again at once. The attempt does not use up a retry."""
        now = self.clock()
        with self.store.transaction() as db:
            self._expire(db, now)
            row = self._owned(db, job_id, runner, done=(PENDING,))
            if row is not None:
                self._set(db, row, PENDING, f"released by {runner}: {reason}", now,
                          {"not_before": now, "attempts": max(0, row["attempts"] - 1)})
        return self.get(job_id)

    def cancel(self, job_id: str, reason: str = "cancelled") -> Job:
        return self._move(job_id, CANCELLED, reason)

    def retry(self, job_id: str) -> Job:
        return self._move(job_id, PENDING, "retried by request", sets={"not_before": self.clock()})

    # --- reading -----------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        rows = self.store.read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound(f"job '{job_id}' does not exist")
        return _job(rows[0])

    def list(self, state: str | None = None, type: str | None = None) -> list[Job]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        for column, value in (("state", state), ("type", type)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        return [_job(r) for r in self.store.read(sql + " ORDER BY seq", tuple(args))]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        self.get(job_id)
        return [dict(r) for r in self.store.read(
            "SELECT ts, from_state, to_state, reason FROM job_events WHERE job_id = ? "
            "ORDER BY rowid", (job_id,))]

    def log(self, job_id: str, *lines: str) -> None:
        now = self.clock()
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise NotFound(f"job '{job_id}' does not exist")
            db.executemany("INSERT INTO job_logs VALUES (?,?,?)",
                           [(job_id, now, line) for line in lines])

    def logs(self, job_id: str) -> list[str]:
        self.get(job_id)
        return [r[0] for r in self.store.read(
            "SELECT line FROM job_logs WHERE job_id = ? ORDER BY rowid", (job_id,))]

    def expire_leases(self) -> int:
        with self.store.transaction() as db:
            return self._expire(db, self.clock())

    # --- helpers -----------------------------------------------------------------------------
    def _move(self, job_id: str, to: str, reason: str, *, runner: str | None = None,
              done: tuple[str, ...] = (), sets: dict[str, Any] | None = None) -> Job:
        now = self.clock()
        with self.store.transaction() as db:
            self._expire(db, now)
            row = self._owned(db, job_id, runner, done) if runner else self._row(db, job_id)
            if row is not None:
                self._set(db, row, to, reason, now, sets or {})
        return self.get(job_id)

    def _set(self, db, row, to: str, reason: str, now: float, sets: dict[str, Any]) -> None:
        if to not in ALLOWED[row["state"]]:
            raise Conflict(f"job {row['id']} is {row['state']}; it cannot become {to}")
        values = {"state": to, "updated": now, **sets}
        if to in TERMINAL or to == PENDING:
            values.update(lease_expires=None)  # lease_owner stays: who ran it last
        columns = ", ".join(f"{k} = ?" for k in values)
        db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*values.values(), row["id"]))
        self._event(db, row["id"], row["state"], to, reason, now)

    @staticmethod
    def _row(db, job_id: str):
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
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
        rows = db.execute("SELECT * FROM jobs WHERE state IN (?, ?) AND lease_expires < ?",
                          (LEASED, RUNNING, now)).fetchall()
        for row in rows:
            self._set(db, row, PENDING, f"lease of {row['lease_owner']} expired", now,
                      {"not_before": now})
        return len(rows)

    @staticmethod
    def _event(db, job_id: str, frm: str | None, to: str, reason: str, now: float) -> None:
        db.execute("INSERT INTO job_events VALUES (?,?,?,?,?)", (job_id, now, frm, to, reason))
