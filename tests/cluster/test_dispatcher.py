"""The dispatcher on a local `ray start --head` cluster: jobs run exactly once (on PostgreSQL) while
the control actor is killed again and again; a second driver's `tengine jobs submit … --register` trains on 2
workers and registers the model; cancelling a running train job stops its Ray workers."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import ray
from ray.util.state import list_actors

from tengine import connect
from tengine.cluster.actor import find, stop
from tengine.cluster.client import join_cluster
from tengine.files import sha256_file
from tests.backends.test_distributed import _sets
from tests.cluster.conftest import cluster_env
from tests.conftest import REPO

TRAIN = ["training.max_steps=20", "checkpoint.every_n_steps=10", "data.markov.num_tokens=40000",
         "training.log_every_n_steps=1"]


def _until(fn, timeout: float, what: str, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if result := fn():
                return result
        except ray.exceptions.RayActorError:  # the control actor is restarting
            pass
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g} s")


@pytest.fixture
def driver(ray_head, tmp_path, monkeypatch):
    """This test process as a driver of the cluster; the control plane stopped afterwards."""
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # join_cluster sets it; undone afterwards
    assert not ray.is_initialized(), "an earlier test left Ray running in this process"
    join_cluster(ray_head.address)
    try:
        yield f"sqlite:///{tmp_path}/control/tengine.db"
    finally:
        try:
            stop()
        finally:
            ray.shutdown()


def _alive(class_name: str) -> list:
    return list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])


def test_200_jobs_each_run_once_while_the_control_actor_is_killed_5_times(driver, ray_head, tmp_path,
                                                                         postgres):
    """On PostgreSQL, the store for a cluster: 4 runners, the actor killed 5 times meanwhile."""
    client = connect(ray_head.address, postgres.new_database(), runners=4)
    record = tmp_path / "ran.txt"
    jobs = [client.jobs.submit("sleep", {"seconds": 0.1, "append_to": str(record)}) for _ in range(200)]
    done = lambda: len(client.jobs.list(state="SUCCEEDED"))  # noqa: E731
    pids, at_kill = {client.status()["pid"]}, []
    for _ in range(5):
        floor = done()
        _until(lambda f=floor: done() >= f + 5, 60, "jobs progress between kills")
        at_kill.append(done())
        ray.kill(find(), no_restart=False)  # Ray restarts it; its runners keep their jobs
        pids.add(_until(lambda: (pid := client.status()["pid"]) not in pids and pid, 60, "restart"))
    assert len(pids) == 6 and at_kill[-1] < 200, at_kill  # 5 restarts, while jobs were queued
    try:
        _until(lambda: done() == 200, 180, "all 200 jobs SUCCEEDED", every=0.5)
    except AssertionError:
        stuck = [j for j in client.jobs.list() if j.state != "SUCCEEDED"]
        raise AssertionError(f"{len(stuck)} jobs not SUCCEEDED, e.g. " + "; ".join(
            f"{j.id} {j.state} {client.jobs.events(j.id)[-2:]}" for j in stuck[:3])) from None
    ran = record.read_text().split()
    assert len(ran) == 200 and sorted(ran) == sorted(j.id for j in jobs)  # each exactly once


def test_second_driver_submits_a_train_job_that_registers_its_model(ray_head, tmp_path):
    store = f"sqlite:///{tmp_path}/control/tengine.db"
    where = ["--address", ray_head.address, "--store", store]
    tengine = [sys.executable, "-m", "tengine"]
    env = cluster_env()
    try:
        sub = subprocess.run([*tengine, "jobs", "submit", "configs/quickstart.yaml", "--workers", "2",
                              "--register", "mymodel", *_sets([*TRAIN, f"logging.root={tmp_path}/runs"]),
                              *where, "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=120)
        assert sub.returncode == 0, sub.stderr[-2000:]
        job_id = json.loads(sub.stdout)["id"]
        wait = subprocess.run([*tengine, "jobs", "wait", job_id, "--timeout", "240", *where, "--json"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        job = json.loads(wait.stdout)
        assert wait.returncode == 0 and job["state"] == "SUCCEEDED", (job, wait.stderr[-2000:])
        show = subprocess.run([*tengine, "registry", "show", "mymodel", "1", *where, "--json"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        model = json.loads(show.stdout)
    finally:
        subprocess.run([*tengine, "control", "stop", "--address", ray_head.address], cwd=REPO,
                       env=env, capture_output=True, timeout=60)
    summary = json.loads((tmp_path / "runs" / f"quickstart-{job_id}" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 20
    assert model["job_id"] == job_id and model["source_run"] == job["result"]["run_dir"]
    assert model["sha256"] == sha256_file(f"{model['artifact_uri']}/manifest.json")
    assert model["artifact_uri"].startswith(f"{tmp_path}/control/artifacts/mymodel/")
    assert model["size"] > 0 and model["source_uri"].endswith("step_00000020") and model["step"] == 20


def test_cancelling_a_running_train_job_stops_its_workers(driver, ray_head, tmp_path):
    client = connect(ray_head.address, driver)
    long_run = [*TRAIN, "training.max_steps=5000", f"logging.root={tmp_path}/runs"]
    from tengine.cli_control import _job_config

    job = client.jobs.submit("train", _job_config(str(REPO / "configs/quickstart.yaml"), long_run, 2),
                             resources={"workers": 2}, max_retries=2)
    metrics = tmp_path / "runs" / f"quickstart-{job.id}" / "metrics.jsonl"
    _until(lambda: metrics.exists() and metrics.read_text().count('"train"') >= 3, 180,
           "training started")
    assert len(_alive("RayTrainWorker")) == 2
    t0 = time.time()
    assert client.jobs.cancel(job.id, "test").state == "CANCELLED"
    _until(lambda: not _alive("RayTrainWorker") and not _alive("TrainController"), 30,
           "the job's Ray workers gone")
    gone_s = time.time() - t0
    time.sleep(3)  # a retry would have been leased by now
    after = client.jobs.get(job.id)
    assert (after.state, after.attempts) == ("CANCELLED", 1), gone_s
    assert any("work stopped" in line for line in client.jobs.logs(job.id))
