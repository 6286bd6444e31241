"""Scheduler: cron in a time zone across DST on a fake clock, exactly one job per fire.

Every test runs on both store backends (`store`: SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tengine.control import JobQueue, Scheduler, open_store
from tengine.errors import AlreadyExists, Invalid

BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _setup(start: datetime, store=None):
    clock = Clock(start.timestamp())
    store = store or open_store("memory://")
    queue = JobQueue(store, clock=clock)
    return clock, queue, Scheduler(store, queue, clock=clock), Scheduler(store, queue, clock=clock)


def test_monday_3am_berlin_for_60_days_across_dst_with_racing_ticks(store):
    start = datetime(2026, 10, 1, tzinfo=BERLIN)  # DST ends on Sunday 2026-10-25
    clock, queue, sched, rival = _setup(start, store)
    sched.add("weekly", job_type="sleep", cron="0 3 * * 1", tz="Europe/Berlin")
    end = start + timedelta(days=60)
    while clock.t < end.timestamp():
        clock.t += 3600  # hourly ticks: each lands on the 03:00 fire, before and after DST
        sched.tick()
        rival.tick()  # a second scheduler racing over the same fires
    jobs = queue.list()
    fires = [datetime.fromtimestamp(j.fire_time, BERLIN) for j in jobs]
    mondays = [start.date() + timedelta(days=d) for d in range(61)
               if (start.date() + timedelta(days=d)).weekday() == 0]
    mondays = [d for d in mondays if datetime(d.year, d.month, d.day, 3, tzinfo=BERLIN) <= end]
    assert [f.date() for f in fires] == mondays and len(fires) == 8  # Oct 5 … Nov 23
    assert all((f.hour, f.minute, f.weekday()) == (3, 0, 0) for f in fires)
    offsets = {f.utcoffset() for f in fires}
    assert offsets == {timedelta(hours=2), timedelta(hours=1)}  # both sides of the DST change


def test_misfire_policies_after_downtime(store):
    start = datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))
    clock, queue, sched, _ = _setup(start, store)
    sched.add("skip", job_type="sleep", interval_s=3600, misfire="skip")
    sched.add("catchup", job_type="sleep", interval_s=3600)  # run_once is the default
    clock.t += 5 * 3600 + 30  # down for 5 hours: fires at +1h..+5h, the last one on time
    sched.tick()
    by_schedule = {}
    for j in queue.list():
        by_schedule.setdefault(j.schedule_id, []).append(j.fire_time - start.timestamp())
    skip_id, catchup_id = sched.get("skip").id, sched.get("catchup").id
    assert by_schedule[skip_id] == [5 * 3600]  # only the on-time fire
    assert by_schedule[catchup_id] == [4 * 3600, 5 * 3600]  # one catch-up run + the on-time fire
    assert sched.get("skip").next_fire == start.timestamp() + 6 * 3600


def test_disable_enable_and_remove(store):
    start = datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))
    clock, queue, sched, _ = _setup(start, store)
    sched.add("hourly", job_type="sleep", interval_s=3600)
    sched.set_enabled("hourly", False)
    assert sched.get("hourly").next_fire is None
    clock.t += 3 * 3600
    assert sched.tick() == []
    sched.set_enabled("hourly", True)
    clock.t += 3600 + 1
    assert len(sched.tick()) == 1
    sched.remove("hourly")
    assert sched.list() == []


@pytest.mark.parametrize("kwargs, error, text", [
    ({"cron": "0 3 * *"}, Invalid, "not a valid 5-field"),
    ({"cron": "61 3 * * 1"}, Invalid, "not a valid 5-field"),
    ({"cron": "0 3 * * 1", "tz": "Mars/Olympus"}, Invalid, "IANA"),
    ({}, Invalid, "exactly one of cron"),
    ({"cron": "0 3 * * 1", "interval_s": 60}, Invalid, "exactly one of cron"),
    ({"interval_s": 0}, Invalid, "must be > 0"),
    ({"interval_s": 60, "job_type": "trian"}, Invalid, "job type 'trian' unknown"),
    ({"interval_s": 60, "misfire": "later"}, Invalid, "misfire"),
])
def test_bad_schedules_are_refused(store, kwargs, error, text):
    _, _, sched, _ = _setup(datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")), store)
    with pytest.raises(error, match=text):
        sched.add("bad", **{"job_type": "sleep", **kwargs})
    assert sched.list() == []


def test_names_are_unique_and_safe(store):
    _, _, sched, _ = _setup(datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")), store)
    sched.add("a", job_type="sleep", interval_s=60)
    with pytest.raises(AlreadyExists):
        sched.add("a", job_type="sleep", interval_s=60)
    with pytest.raises(Invalid, match="no path separators"):
        sched.add("../x", job_type="sleep", interval_s=60)


def test_two_ticks_that_read_the_same_due_fire_create_one_job(store):
    start = datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))
    clock, queue, sched, rival = _setup(start, store)
    sched.add("hourly", job_type="sleep", interval_s=3600)
    clock.t += 3600 + 1
    stale = sched._enabled()  # the rival read the schedules before the first tick wrote last_fire
    rival._enabled = lambda: stale
    first, second = sched.tick(), rival.tick()
    assert first == second and len(first) == 1 and len(queue.list()) == 1


def test_a_nightly_fire_missed_by_an_outage_runs_once_within_the_window(store):
    """The control plane was down over the nightly fire: it still runs when it comes back that
    morning (the 24 h default window), but not after an outage of days, where only fires of the
    last window count."""
    start = datetime(2026, 3, 1, 12, tzinfo=ZoneInfo("UTC"))
    clock, queue, sched, _ = _setup(start, store)
    sched.add("nightly", job_type="sleep", cron="0 3 * * *")
    clock.t = datetime(2026, 3, 2, 9, tzinfo=ZoneInfo("UTC")).timestamp()  # back 6 h late
    assert len(sched.tick()) == 1
    assert datetime.fromtimestamp(queue.list()[0].fire_time, ZoneInfo("UTC")).hour == 3
    clock.t = datetime(2026, 3, 6, 9, tzinfo=ZoneInfo("UTC")).timestamp()  # down 4 days
    assert len(sched.tick()) == 1  # one run for the fires of the last 24 h, not four
    fire = datetime.fromtimestamp(queue.list()[-1].fire_time, ZoneInfo("UTC"))
    assert (fire.day, fire.hour) == (6, 3)
    hourly = sched.add("hourly", job_type="sleep", interval_s=3600, misfire_window_s=1800)
    clock.t += 5 * 3600 + 2000  # every missed fire is older than the 30-min window
    assert sched.tick() == [] and sched.get("hourly").next_fire == hourly.created + 6 * 3600


def test_adding_a_schedule_with_an_idempotency_key_twice_makes_one(store):
    _, _, sched, _ = _setup(datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")), store)
    a = sched.add("hourly", job_type="sleep", interval_s=3600, idempotency_key="ci-123")
    b = sched.add("hourly", job_type="sleep", interval_s=3600, idempotency_key="ci-123")
    assert a.id == b.id and len(sched.list()) == 1
