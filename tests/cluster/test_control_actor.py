"""The control plane in its detached Ray actor: killed, restarted by Ray, state rebuilt from the
store; errors arrive as the same TengineError; the same client runs in-process without Ray."""

from __future__ import annotations

import time

import pytest
import ray

from tengine import connect
from tengine.errors import Invalid, NotFound

SHA = "cd" * 32


def _wait(fn, timeout: float = 60.0):
    deadline = time.time() + timeout
    while True:
        try:
            result = fn()
            if result:
                return result
        except Exception:  # noqa: BLE001 — the actor is restarting
            if time.time() > deadline:
                raise
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.3)


def test_in_process_client_needs_no_ray(tmp_path):
    client = connect(store_uri=f"sqlite:///{tmp_path}/c.db")
    assert client.where == "in-process"
    assert client.registry.register("m", artifact_uri="/a", sha256=SHA, size=1).version == 1
    with pytest.raises(Invalid, match="did you mean 'register'"):
        client.registry.regster("m")


def test_actor_survives_being_killed_and_rebuilds_from_the_store(tmp_path):
    from tengine.cluster.actor import find, stop

    ray.init(num_cpus=2, include_dashboard=False, namespace="tengine")
    try:
        client = connect("auto", store_uri=f"sqlite:///{tmp_path}/control/tengine.db")
        client.registry.register("m", artifact_uri="/runs/a", sha256=SHA, size=10)
        job = client.jobs.submit("sleep", {"seconds": 0}, idempotency_key="once")
        client.schedules.add("every-second", job_type="sleep", interval_s=1.0)
        pids = {client.status()["pid"]}
        for _ in range(2):
            ray.kill(find(), no_restart=False)
            pids.add(_wait(lambda: client.status()["pid"] not in pids and client.status()["pid"]))
        assert len(pids) == 3  # two restarts, each a new process
        assert client.registry.get("m", 1).artifact_uri == "/runs/a"
        assert client.registry.register("m", artifact_uri="/runs/b", sha256=SHA, size=10).version == 2
        assert client.jobs.submit("sleep", idempotency_key="once").id == job.id
        # the restarted actor's own tick loop keeps firing the schedule
        _wait(lambda: len(client.jobs.list(type="sleep")) >= 3)
        with pytest.raises(NotFound, match="has no version 7"):
            client.registry.get("m", 7)
    finally:
        try:
            stop()
        finally:
            ray.shutdown()
