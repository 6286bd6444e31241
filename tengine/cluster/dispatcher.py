"""The dispatcher: a few job runners in detached Ray actors, started by the control actor.

    ensure_runners(2)        # tengine-runner-0, tengine-runner-1 (namespace tengine)

Each `RunnerActor` hosts one `JobRunner` (tengine/control/runner.py) that claims jobs from the
control actor and runs them, so the number of runners is the number of jobs that run at once.
Runners are detached and not owned by the control actor: killing the control actor (or Ray
restarting it) leaves running jobs running, and their runners repeat their calls until it is
back. A runner needs no CPU of its own (`num_cpus=0`); the work it starts asks Ray for the
job's resources (a train job's workers). A runner that dies is restarted by Ray under a new
name-and-pid, and the job it held goes back to the queue when its lease expires.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import ray

NAMESPACE = "tengine"
PREFIX = "tengine-runner-"


@ray.remote(num_cpus=0)
class RunnerActor:
    def __init__(self, index: int, control_name: str, ttl_s: float, heartbeat_s: float,
                 allowed_imports: tuple[str, ...] = ()):
        from tengine.cluster.client import actor_client
        from tengine.control.runner import JobRunner

        client = actor_client(ray.get_actor(control_name, namespace=NAMESPACE), "runner")
        name = f"{PREFIX}{index}@{socket.gethostname()}:{os.getpid()}"
        self.runner = JobRunner(client, name, address=ray.get_runtime_context().gcs_address,
                                ttl_s=ttl_s, heartbeat_s=heartbeat_s,
                                allowed_imports=allowed_imports)
        # runs until Ray kills the actor (`tengine control stop`)
        threading.Thread(target=self.runner.run, args=(threading.Event(),), daemon=True,
                         name="tengine-runner").start()

    def status(self) -> dict[str, Any]:
        return {"runner": self.runner.name, "job": self.runner.current}


def ensure_runners(count: int, control_name: str, ttl_s: float = 30.0, heartbeat_s: float = 1.0,
                   allowed_imports: tuple[str, ...] = ()) -> list:
    """Start the runners that are not running (by name: idempotent, safe to race). Their job
    processes may import only `allowed_imports` (the control plane's allow-list)."""
    return [RunnerActor.options(name=f"{PREFIX}{i}", namespace=NAMESPACE, lifetime="detached",
                                max_restarts=-1, max_task_retries=0, get_if_exists=True)
            .remote(i, control_name, ttl_s, heartbeat_s, tuple(allowed_imports))
            for i in range(count)]


def find_runners() -> list:
    """The runner actors of this cluster."""
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a["namespace"] == NAMESPACE and a["name"].startswith(PREFIX))
    return [ray.get_actor(n, namespace=NAMESPACE) for n in names]
