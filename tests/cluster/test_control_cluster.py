"""The control plane on a two-node Ray cluster (a head and a second node, both on this machine):
the actor stays on the head through restarts with its whole state, and a client asking for
another store is told which one the cluster has. (200 jobs on PostgreSQL with the actor killed
5 times: test_dispatcher.py.)"""

from __future__ import annotations

import subprocess
import time

import pytest
import ray

from tengine import connect
from tengine.errors import Conflict, Invalid
from tests.cluster.conftest import BIN, Head, cluster_env, free_port

SHA = "cd" * 32


@pytest.fixture(scope="module")
def two_nodes():
    """`ray start --head` plus a second `ray start` node joining it; both stopped at the end."""
    gcs = free_port()
    env = cluster_env()
    try:  # the head makes a token (Ray 2.60); the node joining it must send it
        for extra, auth in ((["--head", f"--port={gcs}", "--include-dashboard=false"], {}),
                            ([f"--address=127.0.0.1:{gcs}"], {"RAY_AUTH_MODE": "token"})):
            out = subprocess.run([str(BIN / "ray"), "start", *extra, "--num-cpus=1",
                                  "--disable-usage-stats"], env={**env, **auth},
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr[-2000:]
        yield Head(f"127.0.0.1:{gcs}", "")
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True,
                       timeout=120)


@pytest.fixture
def cluster(two_nodes, monkeypatch):
    """This process as a driver of the two-node cluster; the control actors stopped after."""
    from tengine.cluster.actor import stop
    from tengine.cluster.client import join_cluster

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # join_cluster sets it; undone afterwards

    join_cluster(two_nodes.address)
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2
    head = next(n["NodeID"] for n in alive if "node:__internal_head__" in n["Resources"])
    try:
        yield two_nodes, head
    finally:
        try:
            stop()
        finally:
            ray.shutdown()


def _wait(fn, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        try:
            if result := fn():
                return result
        except Exception:  # noqa: BLE001 — the actor is restarting
            if time.time() > deadline:
                raise
        if time.time() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        time.sleep(0.2)


def _kill_and_wait(client, pids: set[int]) -> dict:
    from tengine.cluster.actor import find

    ray.kill(find(), no_restart=False)
    status = _wait(lambda: (s := client.status())["pid"] not in pids and s, what="a restart")
    pids.add(status["pid"])
    return status


def _state(client) -> tuple:
    jobs = [(j.id, j.state, j.config) for j in client.jobs.list()]
    schedules = [(s.name, s.interval_s, s.created) for s in client.schedules.list()]
    versions = [(v.name, v.version, v.artifact_uri, v.aliases) for v in client.registry.list_models()]
    return jobs, schedules, versions, client.registry.alias_history("m")


def test_the_actor_comes_back_on_the_head_with_every_job_schedule_version_and_alias(cluster, tmp_path):
    head, head_node = cluster
    store = f"sqlite:///{tmp_path}/control/tengine.db"
    client = connect(head.address, store_uri=store, runners=0)  # no runners: the jobs stay queued
    for artifact in ("/runs/a", "/runs/b"):
        client.registry.register("m", artifact_uri=artifact, sha256=SHA, size=10)
    client.registry.promote_model("m", 2, by="ci")
    for i in range(3):
        client.jobs.submit("train", {"i": i}, priority=3 + i)
    client.schedules.add("hourly", job_type="train", interval_s=3600.0)
    before, pids = _state(client), {client.status()["pid"]}
    assert client.status()["node_id"] == head_node
    for _ in range(3):
        status = _kill_and_wait(client, pids)
        assert status["node_id"] == head_node, "the control actor restarted off the head node"
        assert _state(client) == before
    assert status["identity"] == client.status()["identity"] and status["store"] == store
    # a client that asks for another store is told which one the cluster has
    with pytest.raises(Conflict, match=f"runs on the store {store}, not sqlite:///elsewhere.db"):
        connect(head.address, store_uri="sqlite:///elsewhere.db")
    with pytest.raises(Invalid, match="relative path"):
        connect(head.address, store_uri="sqlite://runs/control/tengine.db")
    assert connect(head.address).status()["store"] == store  # no --store: the cluster's


def test_a_triggers_cooldown_holds_across_a_control_actor_kill(cluster, tmp_path):
    head, _ = cluster
    store = f"sqlite:///{tmp_path}/control/tengine.db"
    client = connect(head.address, store_uri=store, runners=0)
    client.registry.register("m", artifact_uri="/runs/a", sha256=SHA, size=10)
    client.registry.promote_model("m", 1, by="ci")
    client.triggers.add("m-drift", model="m", spec={"drift": {"threshold": 0.2}},
                        job={"config": {"name": "m"}}, cooldown_s=3600.0)
    report = {"status": "alert", "examples": 500, "reference_examples": 1000,
              "features": [{"feature": "bigrams", "statistic": "js_distance", "value": 0.3,
                            "status": "alert"}]}
    [first] = client.triggers.submit_report("m", "drift", report)["fired"]
    client.jobs.cancel(first, reason="done")  # not in flight: only the cooldown holds it back
    _kill_and_wait(client, {client.status()["pid"]})
    assert not any(e["fired"] for e in client.triggers.evaluate())  # the restarted actor's
    time.sleep(2.5)  # and a tick or two of its own loop
    assert [j.id for j in client.jobs.list() if j.type == "retrain"] == [first]
    # the cooldown ends (its start moved back an hour, in the store): the actor's own tick
    # fires it once more, and only once (the new job is in flight)
    from sqlalchemy import update

    from tengine.control import open_store
    from tengine.control.store import triggers

    shared = open_store(store)
    with shared.transaction() as db:
        db.execute(update(triggers).values(last_fired=triggers.c.last_fired - 3601.0))
    shared.close()
    retrains = _wait(lambda: (r := [j for j in client.jobs.list() if j.type == "retrain"])
                     and len(r) == 2 and r, timeout=30, what="the firing after the cooldown")
    time.sleep(2.5)
    assert len([j for j in client.jobs.list() if j.type == "retrain"]) == 2
    assert [f["job_id"] for f in client.triggers.firings("m-drift")] == [first] + [
        j.id for j in retrains if j.id != first]
