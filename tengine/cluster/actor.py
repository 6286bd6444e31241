"""The control plane as one detached, named Ray actor shared by every node of a cluster.

    handle = get_or_start("postgresql://tengine@db-host/tengine")   # or None: the head's default

name `tengine-control`, namespace `tengine`, `lifetime="detached"` (outlives the driver that
started it), `max_restarts=-1`: when its process dies Ray starts a new one, whose `__init__`
rebuilds everything from the store, so no state lives only in memory. The actor is pinned to
the head node (the head's own resource, `node:__internal_head__`), so a restart never lands on
another node, where a SQLite path would open a different, empty file. Its store is the one it
was started with; without one, the head's default: `TENGINE_CONTROL_STORE` as set for the head's
Ray (`ray start --head` inherits the environment), else `~/.tengine/control/tengine.db` on the
head. A client that asks for another store than the running actor's gets an error naming both. A daemon thread runs
the tick loop (expire leases, fire schedules) so nothing has to poll from outside. In-flight
calls are not retried across a restart (`max_task_retries=0`): a caller sees the error and may
retry idempotent requests itself. On start the actor makes sure its job runners run (the
dispatcher, `dispatcher.py`); they are detached actors of their own, so they outlive it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import ray

from tengine.cluster.dispatcher import ensure_runners, find_runners
from tengine.control.plane import ControlPlane
from tengine.control.store import redact_uri
from tengine.errors import Conflict, Invalid

NAME, NAMESPACE = "tengine-control", "tengine"
DEFAULT_RUNNERS = 2
HEAD_RESOURCE = "node:__internal_head__"  # every head node has 1 of it; no other node has any
STORE_ENV = "TENGINE_CONTROL_STORE"
log = logging.getLogger("tengine")


def head_default_store() -> str:
    """The store of a control actor started without one (evaluated on the head)."""
    return os.environ.get(STORE_ENV) or f"sqlite:///{Path.home() / '.tengine' / 'control' / 'tengine.db'}"


def check_cluster_store(uri: str | None) -> None:
    """A store URI the cluster's actor can open the same way after any restart."""
    if uri is not None and uri.startswith("sqlite://") and not uri.startswith("sqlite:///"):
        raise Invalid(f"store {uri!r} is a relative path, which the control actor would resolve "
                      "in its own directory on the head node: give an absolute one "
                      "(sqlite:///abs/path/tengine.db) or a postgresql:// URI")


# Calls run in a pool of threads (the tick loop is another): many runners heartbeating and
# clients submitting are served side by side; the store orders the writes.
CONCURRENCY = 8


@ray.remote(num_cpus=0, max_concurrency=CONCURRENCY)
class ControlActor:
    def __init__(self, store_uri: str | None, tick_s: float = 2.0, runners: int = DEFAULT_RUNNERS,
                 allowed_imports: tuple[str, ...] = (), artifact_root: str | None = None):
        self.plane = ControlPlane(store_uri or head_default_store(), allowed_imports=allowed_imports,
                                  artifact_root=artifact_root)
        self.tick_s, self.runners = tick_s, runners
        ensure_runners(runners, NAME, allowed_imports=self.plane.allowed_imports)
        threading.Thread(target=self._loop, daemon=True, name="tengine-tick").start()

    def call(self, component: str, method: str, args: tuple, kwargs: dict) -> Any:
        return self.plane.call(component, method, *args, **kwargs)

    def status(self) -> dict[str, Any]:
        return {**self.plane.status(), "pid": os.getpid(), "runners": self.runners,
                "node_id": ray.get_runtime_context().get_node_id()}

    def _loop(self) -> None:
        while True:
            try:
                self.plane.tick()
            except Exception:  # noqa: BLE001 — one bad tick must not stop the loop
                log.exception("control-plane tick failed")
            time.sleep(self.tick_s)


def get_or_start(store_uri: str | None = None, tick_s: float = 2.0, runners: int = DEFAULT_RUNNERS,
                 allowed_imports: tuple[str, ...] = (), artifact_root: str | None = None,
                 timeout_s: float = 120.0):
    """The cluster's control actor, started on the head on first use (with `runners` job
    runners). `store_uri` None: whatever store the running actor has (or the head's default);
    a different one than the running actor's is an error naming both."""
    check_cluster_store(store_uri)
    actor = ControlActor.options(
        name=NAME, namespace=NAMESPACE, lifetime="detached", max_restarts=-1, max_task_retries=0,
        get_if_exists=True, resources={HEAD_RESOURCE: 0.001},
    ).remote(store_uri, tick_s, runners, tuple(allowed_imports), artifact_root)
    if store_uri is not None:
        running = ray.get(actor.status.remote(), timeout=timeout_s)["store"]
        if running != redact_uri(store_uri):
            raise Conflict(f"the cluster's control plane runs on the store {running}, not "
                           f"{redact_uri(store_uri)} as asked: leave out --store to use it, or "
                           "stop it first (`tengine control stop`; its store keeps everything)")
    return actor


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
