"""The control plane as one detached, named Ray actor shared by every node of a cluster.

    handle = get_or_start("sqlite:////mnt/shared/runs/control/tengine.db")

name `tengine-control`, namespace `tengine`, `lifetime="detached"` (outlives the driver that
started it), `max_restarts=-1`: when its process dies Ray starts a new one, whose `__init__`
rebuilds everything from the store, so no state lives only in memory. A daemon thread runs
the tick loop (expire leases, fire schedules) so nothing has to poll from outside. In-flight
calls are not retried across a restart (`max_task_retries=0`): a caller sees the error and may
retry idempotent requests itself. On start the actor makes sure its job runners run (the
dispatcher, `dispatcher.py`); they are detached actors of their own, so they outlive it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

from tengine.cluster.dispatcher import ensure_runners, find_runners
from tengine.control.plane import ControlPlane

NAME, NAMESPACE = "tengine-control", "tengine"
DEFAULT_RUNNERS = 2
log = logging.getLogger("tengine")


@ray.remote(num_cpus=0)
class ControlActor:
    def __init__(self, store_uri: str, tick_s: float = 2.0, runners: int = DEFAULT_RUNNERS):
        self.plane = ControlPlane(store_uri)
        self.tick_s, self.runners = tick_s, runners
        ensure_runners(runners, NAME)
        threading.Thread(target=self._loop, daemon=True, name="tengine-tick").start()

    def call(self, component: str, method: str, args: tuple, kwargs: dict) -> Any:
        return self.plane.call(component, method, *args, **kwargs)

    def status(self) -> dict[str, Any]:
        import os

        return {**self.plane.status(), "pid": os.getpid(), "runners": self.runners}

    def _loop(self) -> None:
        while True:
            try:
                self.plane.tick()
            except Exception:  # noqa: BLE001 — one bad tick must not stop the loop
                log.exception("control-plane tick failed")
            time.sleep(self.tick_s)


def get_or_start(store_uri: str, tick_s: float = 2.0, runners: int = DEFAULT_RUNNERS):
    """The cluster's control actor, started on first use (with `runners` job runners)."""
    return ControlActor.options(name=NAME, namespace=NAMESPACE, lifetime="detached",
                                max_restarts=-1, max_task_retries=0,
                                get_if_exists=True).remote(store_uri, tick_s, runners)


def stop() -> int:
    """Kill the control actor and its runners for good (their store keeps everything); a
    running job's work dies with its runner. Returns how many actors were stopped."""
    actors = [a for a in (find(), *find_runners()) if a is not None]
    for actor in actors:
        ray.kill(actor, no_restart=True)
    return len(actors)


def find():
    """The running actor, or None."""
    try:
        return ray.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:
        return None
