"""Scheduler: cron (5 fields, IANA time zone, via croniter) or fixed-interval schedules that
submit jobs, exactly one per fire.

    sched = Scheduler(store, queue, clock)
    s = sched.add("nightly", job_type="train", config={...}, cron="0 3 * * 1", tz="Europe/Berlin")
    sched.tick()          # the actor calls this every few seconds; creates the due jobs

Fire times are computed in the schedule's zone (so 03:00 stays 03:00 across DST) and stored as
UTC epoch seconds. A job is keyed by (schedule id, fire time) with a unique index, so two ticks
racing over the same fire create one job. A fire found late by more than `grace_s` (the
control plane was down, say) is a misfire: `run_once` (the default) runs one job for the missed
fires of the last `misfire_window_s` (default 24 h: a nightly retrain still happens after a
night's outage, a month-old fire does not), `skip` drops them.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import case, delete, insert, select, update

from tengine.control.jobs import JOB_TYPES, JobQueue
from tengine.control.registry import check_name
from tengine.control.store import Store, recall, remember, schedules
from tengine.errors import AlreadyExists, Invalid, NotFound
from tengine.extras import require

S = schedules.c
MISFIRE_WINDOW_S = 24 * 3600.0
MAX_FIRES_PER_TICK = 10_000  # a schedule left off for years does not stall the tick


def _croniter():
    """croniter, imported where a cron schedule needs it: the job queue and the registry work
    without it (a core install), and a missing one is an error naming the extra."""
    return require("croniter", "ray", "a cron schedule").croniter


@dataclass(frozen=True)
class Schedule:
    id: str
    name: str
    cron: str | None
    tz: str
    interval_s: float | None
    job_type: str
    config: dict[str, Any]
    resources: dict[str, Any]
    priority: int
    misfire: str
    grace_s: float
    enabled: bool
    created: float
    last_fire: float
    misfire_window_s: float = MISFIRE_WINDOW_S
    next_fire: float | None = None


class Scheduler:
    def __init__(self, store: Store, queue: JobQueue, clock=time.time):
        self.store, self.queue, self.clock = store, queue, clock

    def add(self, name: str, *, job_type: str, config: dict[str, Any] | None = None,
            cron: str | None = None, tz: str = "UTC", interval_s: float | None = None,
            resources: dict[str, Any] | None = None, priority: int = 5, misfire: str = "run_once",
            grace_s: float = 60.0, misfire_window_s: float = MISFIRE_WINDOW_S,
            idempotency_key: str | None = None) -> Schedule:
        check_name(name, "schedule name")
        if (cron is None) == (interval_s is None):
            raise Invalid("give exactly one of cron ('0 3 * * 1') or interval_s (seconds)")
        if cron is not None and (len(cron.split()) != 5 or not _croniter().is_valid(cron)):
            raise Invalid(f"cron {cron!r} is not a valid 5-field expression "
                          "(minute hour day-of-month month day-of-week), e.g. '0 3 * * 1'")
        if interval_s is not None and interval_s <= 0:
            raise Invalid(f"interval_s {interval_s!r} must be > 0")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise Invalid(f"time zone {tz!r} is not an IANA name such as 'Europe/Berlin' or 'UTC'") from None
        if job_type not in JOB_TYPES:
            raise Invalid(f"job type '{job_type}' unknown; valid: {', '.join(JOB_TYPES)}")
        if misfire not in ("skip", "run_once"):
            raise Invalid(f"misfire {misfire!r} must be 'skip' or 'run_once'")
        if not 1 <= priority <= 10:
            raise Invalid(f"priority {priority!r} must be from 1 to 10")
        if not grace_s >= 0 or not misfire_window_s >= grace_s:
            raise Invalid(f"grace_s {grace_s!r} must be ≥ 0 and misfire_window_s "
                          f"{misfire_window_s!r} ≥ grace_s")
        now = self.clock()
        sid = f"sched-{uuid.uuid4().hex[:12]}"
        with self.store.transaction() as db:
            if recall(db, idempotency_key, "schedules.add") is not None:
                return self.get(name)
            if db.execute(select(S.id).where(S.name == name)).first():
                raise AlreadyExists(f"schedule '{name}' already exists; remove it first")
            db.execute(insert(schedules).values(
                id=sid, name=name, cron=cron, tz=tz, interval_s=interval_s, job_type=job_type,
                config=json.dumps(config or {}), resources=json.dumps(resources or {}),
                priority=priority, misfire=misfire, grace_s=grace_s, enabled=1, created=now,
                last_fire=now, misfire_window_s=misfire_window_s))
            remember(db, idempotency_key, "schedules.add", {"id": sid})
        return self.get(name)

    def set_enabled(self, name: str, enabled: bool) -> Schedule:
        s = self.get(name)
        with self.store.transaction() as db:
            # re-enabling starts from now: what was missed while disabled is not a misfire
            db.execute(update(schedules).where(S.id == s.id).values(
                enabled=int(enabled),
                last_fire=self.clock() if enabled and not s.enabled else s.last_fire))
        return self.get(name)

    def remove(self, name: str) -> None:
        s = self.get(name)
        with self.store.transaction() as db:
            db.execute(delete(schedules).where(S.id == s.id))

    def get(self, name: str) -> Schedule:
        rows = self.store.read(select(schedules).where(S.name == name))
        if not rows:
            raise NotFound(f"schedule '{name}' does not exist")
        return self._schedule(rows[0])

    def list(self) -> list[Schedule]:
        return [self._schedule(r) for r in self.store.read(select(schedules).order_by(S.name))]

    def _enabled(self) -> list[Schedule]:
        """For the tick (every few seconds): without computing each `next_fire` it never reads."""
        rows = self.store.read(select(schedules).where(S.enabled == 1).order_by(S.name))
        return [self._schedule(r, with_next=False) for r in rows]

    def tick(self) -> list[str]:
        """Submit the jobs of every due fire; returns their ids."""
        now, created = self.clock(), []
        for s in self._enabled():
            fires = self._fires(s, s.last_fire, now)
            if not fires:
                continue
            on_time = [f for f in fires if now - f <= s.grace_s]
            missed = [f for f in fires if s.grace_s < now - f <= s.misfire_window_s]
            run = ([missed[-1]] if missed and s.misfire == "run_once" else []) + on_time
            for fire in run:
                job = self.queue.submit(s.job_type, s.config, resources=s.resources,
                                        priority=s.priority, schedule_id=s.id, fire_time=fire)
                created.append(job.id)
            with self.store.transaction() as db:  # monotonic: a racing tick never moves it back
                db.execute(update(schedules).where(S.id == s.id).values(
                    last_fire=case((S.last_fire < fires[-1], fires[-1]), else_=S.last_fire)))
        return created

    # --- helpers -----------------------------------------------------------------------------
    def _fires(self, s: Schedule, after: float, until: float) -> list[float]:
        """Fire times in (after, until], UTC epoch seconds."""
        out: list[float] = []
        if s.interval_s is not None:
            k = int((after - s.created) // s.interval_s) + 1
            while (t := s.created + k * s.interval_s) <= until and len(out) < MAX_FIRES_PER_TICK:
                out.append(t)
                k += 1
            return out
        it = _croniter()(s.cron, datetime.fromtimestamp(after, ZoneInfo(s.tz)))
        while len(out) < MAX_FIRES_PER_TICK:
            t = it.get_next(datetime).timestamp()
            if t > until:
                break
            out.append(t)
        return out

    def next_fire(self, s: Schedule) -> float | None:
        if not s.enabled:
            return None
        if s.interval_s is not None:
            return s.created + (int((s.last_fire - s.created) // s.interval_s) + 1) * s.interval_s
        it = _croniter()(s.cron, datetime.fromtimestamp(s.last_fire, ZoneInfo(s.tz)))
        return it.get_next(datetime).timestamp()

    def _schedule(self, row, with_next: bool = True) -> Schedule:
        data = dict(row)
        data["config"], data["resources"] = json.loads(data["config"]), json.loads(data["resources"])
        data["enabled"] = bool(data["enabled"])
        if data["misfire_window_s"] is None:  # a schedule from before the window existed
            data["misfire_window_s"] = MISFIRE_WINDOW_S
        s = Schedule(**data)
        return Schedule(**{**data, "next_fire": self.next_fire(s)}) if with_next else s
