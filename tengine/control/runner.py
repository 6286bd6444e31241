"""JobRunner: claims jobs from the control plane and runs them, one at a time.

    runner = JobRunner(client, "runner-0", address=None)
    runner.run(stop_event)          # claim → start → execute (heartbeating) → complete | fail

On a cluster the dispatcher (`tengine/cluster/dispatcher.py`) hosts a few runners in detached
Ray actors; without Ray, `tengine jobs work` runs one in the calling process. The runner only
talks to the control plane through its client, so it survives the control actor dying: a call
that fails on the way (`client.transient`) is repeated until the actor is back, and the queue
makes every repeated call harmless (see `jobs.py`); executors get the same repeating client
for their registry calls. A job's work starts only after `start` was acknowledged, and its lease
is renewed every `heartbeat_s`, which also carries the job's new log lines. A refused heartbeat
(the job was cancelled, or its lease expired) stops the work at once, and the runner reports
nothing more. A runner that has not reached the control plane for half the lease TTL stops the
work itself, so it is gone before the lease can expire and another runner take the job.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tengine.control.executors import EXECUTORS, Cancelled, JobContext, Preempted
from tengine.errors import Conflict, TengineError

log = logging.getLogger("tengine")


class JobRunner:
    def __init__(self, client: Any, name: str, *, address: str | None = None, ttl_s: float = 30.0,
                 heartbeat_s: float = 1.0, poll_s: float = 0.5,
                 allowed_imports: tuple[str, ...] = ()):
        from tengine.control.safety import allowed_imports as allowed

        self.client, self.name, self.address = client, name, address
        self.allowed_imports = allowed(allowed_imports)  # what the jobs' processes may import
        self.ttl_s, self.heartbeat_s, self.poll_s = ttl_s, heartbeat_s, poll_s
        self.transient: tuple[type[BaseException], ...] = getattr(client, "transient", ())
        self.current: str | None = None  # the job being run, for status

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                ran = self.run_one()
            except Exception:  # noqa: BLE001 — the loop outlives any one job or outage
                log.exception("runner %s: unexpected error; going on", self.name)
                ran = False
            if not ran:
                stop.wait(self.poll_s)

    def run_one(self) -> bool:
        """Claim and run one job; False when none was ready. Interrupted (Ctrl-C, SIGTERM in
        `tengine jobs work`) once it holds a job, it stops the work and gives the job back."""
        job = self._call(self.client.jobs.claim, self.name, self.ttl_s)
        if job is None:
            return False
        try:
            try:
                job = self._call(self.client.jobs.start, job.id, self.name)
            except Conflict:  # the lease ran out before the start (e.g. a long outage)
                return True
            self._run(job)
        except KeyboardInterrupt:
            self._report(self.client.jobs.release, job.id, self.name, "the runner was interrupted")
            raise
        return True

    def _run(self, job) -> None:
        self.current = job.id
        ctx = JobContext(job, _Repeating(self._call, self.client), _LogBuffer(), self.address,
                         allowed_imports=self.allowed_imports)
        finished = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(ctx, finished), daemon=True,
                                name=f"heartbeat-{job.id}")
        try:
            beat.start()
            self._execute(ctx)
        finally:
            finished.set()
            if beat.is_alive():
                beat.join()
            if lines := ctx.log.take():
                try:
                    self._call(self.client.jobs.log, job.id, *lines)
                except self.transient:
                    log.warning("runner %s: %d log lines of %s lost", self.name, len(lines), job.id)
            self.current = None

    def _execute(self, ctx: JobContext) -> None:
        job = ctx.job
        if job.type not in EXECUTORS:
            self._fail(ctx, f"job type '{job.type}' has no executor in this version (runnable: "
                            f"{', '.join(EXECUTORS.names())})")
            return
        try:
            result = EXECUTORS.get(job.type)(ctx)
        except Cancelled:
            ctx.log("work stopped: the job was cancelled or its lease expired")
            return
        except Preempted as err:  # a checkpoint was written: the next attempt resumes from it
            ctx.log(f"preempted: {err}; the job goes back to the queue")
            self._report(self.client.jobs.release, job.id, self.name, f"preempted: {err}")
            return
        except Exception as err:  # noqa: BLE001 — any failure of the work fails the attempt
            if not ctx.cancelled.is_set():  # else it broke because we stopped it
                self._fail(ctx, str(err) if isinstance(err, TengineError)
                           else f"{type(err).__name__}: {err}")
            return
        self._report(self.client.jobs.complete, job.id, self.name, result)

    def _fail(self, ctx: JobContext, message: str) -> None:
        ctx.log(f"failed: {message}")
        self._report(self.client.jobs.fail, ctx.job.id, self.name, message)

    def _report(self, fn: Callable, *args: Any) -> None:
        try:
            self._call(fn, *args)
        except Conflict as err:  # cancelled or expired meanwhile: the control plane decided
            log.warning("runner %s: %s", self.name, err)

    def _heartbeat(self, ctx: JobContext, finished: threading.Event) -> None:
        last_contact = time.monotonic()
        while not finished.wait(self.heartbeat_s):
            lines = ctx.log.take()
            try:
                self.client.jobs.heartbeat(ctx.job.id, self.name, self.ttl_s, lines)
                last_contact = time.monotonic()
                continue
            except Conflict as err:
                log.warning("runner %s: stopping %s: %s", self.name, ctx.job.id, err)
                ctx.cancelled.set()
                return
            except Exception as err:  # noqa: BLE001 — transient or not, the lease still runs
                ctx.log.put_back(lines)
                if not isinstance(err, self.transient):
                    log.warning("runner %s: heartbeat of %s failed: %s", self.name, ctx.job.id, err)
            silent = time.monotonic() - last_contact
            if silent > self.ttl_s / 2:  # fence: stop before the lease can expire
                log.warning("runner %s: no contact with the control plane for %.0f s: stopping %s",
                            self.name, silent, ctx.job.id)
                ctx.log(f"stopped: no contact with the control plane for {silent:.0f} s")
                ctx.cancelled.set()
                return

    def _call(self, fn: Callable, *args: Any) -> Any:
        """`fn(*args)`, repeated while the control plane is unreachable (for up to twice the
        lease TTL)."""
        deadline = time.monotonic() + 2 * self.ttl_s
        delay = 0.1
        while True:
            try:
                return fn(*args)
            except self.transient:
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(1.0, delay * 2)


class _LogBuffer:
    """A job's log lines, waiting for the next heartbeat to carry them."""

    def __init__(self):
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, *lines: str) -> None:
        with self.lock:
            self.lines.extend(lines)

    def take(self) -> list[str]:
        with self.lock:
            lines, self.lines = self.lines, []
        return lines

    def put_back(self, lines: list[str]) -> None:
        with self.lock:
            self.lines[:0] = lines


class _Repeating:
    """The runner's client for executors: every call repeated while the control plane is
    unreachable (a registration whose reply was lost is idempotent per job)."""

    COMPONENTS = ("jobs", "schedules", "registry")

    def __init__(self, call: Callable[..., Any], target: Any):
        self._call, self._target = call, target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name in self.COMPONENTS:
            return _Repeating(self._call, attr)
        return lambda *args, **kwargs: self._call(functools.partial(attr, *args, **kwargs))
