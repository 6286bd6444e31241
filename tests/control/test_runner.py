"""The job runner without Ray: exactly-once under lost replies, failures, cancel, and a real
train job run from the CLI (`tengine jobs submit` + `tengine jobs work`) that registers its model."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tengine import connect
from tengine.cluster.client import ControlClient
from tengine.control.executors import TEST_EXECUTORS_ENV
from tengine.control.runner import JobRunner
from tengine.files import sha256_file
from tests.conftest import REPO, TINY


@pytest.fixture(autouse=True)
def test_executors(monkeypatch):
    """The `sleep` executor exists only with TENGINE_TEST_EXECUTORS=1 (in this process, and in
    the `tengine jobs work` processes these tests start, which inherit it)."""
    monkeypatch.setenv(TEST_EXECUTORS_ENV, "1")


class LostReply(Exception):
    """Stands in for the control actor dying around a call."""


def flaky(client: ControlClient, seed: int, p: float = 0.3) -> ControlClient:
    """A client whose calls fail (transiently) before or after they take effect."""
    rng, lock = random.Random(seed), threading.Lock()

    def call(component, method, args, kwargs):
        with lock:
            roll = rng.random()
        if roll < p / 2:
            raise LostReply("before")
        result = client._call(component, method, args, kwargs)
        if roll < p:
            raise LostReply("after: the call took effect, its reply was lost")
        return result

    return ControlClient(call, client._status, "flaky", transient=(LostReply,))


def test_every_job_runs_exactly_once_although_replies_get_lost(tmp_path):
    client = connect(store_uri=f"sqlite:///{tmp_path}/c.db")
    record = tmp_path / "ran.txt"
    jobs = [client.jobs.submit("sleep", {"append_to": str(record)}) for _ in range(60)]
    stop = threading.Event()
    runners = [JobRunner(flaky(client, seed), f"r{seed}", heartbeat_s=0.05, poll_s=0.01)
               for seed in range(3)]
    threads = [threading.Thread(target=r.run, args=(stop,)) for r in runners]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(client.jobs.list(state="SUCCEEDED")) < len(jobs):
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(client.jobs.list(state="SUCCEEDED")) == len(jobs)
    ran = record.read_text().split()
    assert sorted(ran) == sorted(j.id for j in jobs)  # each once: no job twice, none lost
    assert {client.jobs.get(j.id).attempts for j in jobs} == {1}


def test_failures_retry_then_fail_and_a_job_missing_its_fields_says_so(tmp_path):
    client = connect(store_uri=f"sqlite:///{tmp_path}/c.db")
    runner = JobRunner(client, "r")
    boom = client.jobs.submit("sleep", {"fail": "disk full"}, max_retries=1)
    export = client.jobs.submit("export", {})
    assert runner.run_one() and runner.run_one()
    assert client.jobs.get(boom.id).state == "PENDING"  # retry after a 2 s backoff
    assert client.jobs.get(export.id).error.startswith("an export job needs `model`")
    time.sleep(2.1)
    assert runner.run_one()
    failed = client.jobs.get(boom.id)
    assert (failed.state, failed.attempts, failed.error) == ("FAILED", 2, "disk full")
    assert "failed: disk full" in client.jobs.logs(boom.id)


def test_sleep_runs_only_where_test_executors_are_on(tmp_path, monkeypatch):
    """`sleep` appends to any file a submitter names: without TENGINE_TEST_EXECUTORS=1 in the
    runner's process it is an unknown job type like any other."""
    monkeypatch.delenv(TEST_EXECUTORS_ENV)
    client = connect(store_uri=f"sqlite:///{tmp_path}/c.db")
    record = tmp_path / "ran.txt"
    job = client.jobs.submit("sleep", {"append_to": str(record)}, max_retries=0)
    assert JobRunner(client, "r").run_one()
    failed = client.jobs.get(job.id)
    assert failed.state == "FAILED" and not record.exists()
    assert failed.error.startswith("job type 'sleep' has no executor in this version (runnable: "
                                   "evaluate, export, retrain, sweep, train)")


def test_cancel_stops_the_work_and_is_not_retried(tmp_path):
    client = connect(store_uri=f"sqlite:///{tmp_path}/c.db")
    record = tmp_path / "ran.txt"
    job = client.jobs.submit("sleep", {"seconds": 30, "append_to": str(record)}, max_retries=3)
    runner = JobRunner(client, "r", heartbeat_s=0.1)
    worker = threading.Thread(target=runner.run_one)
    t0 = time.time()
    worker.start()
    while client.jobs.get(job.id).state != "RUNNING":
        time.sleep(0.02)
    client.jobs.cancel(job.id, "not needed")
    worker.join(timeout=10)
    assert not worker.is_alive() and time.time() - t0 < 5
    assert not record.exists()  # the side effect after the sleep never happened
    assert client.jobs.get(job.id).state == "CANCELLED" and runner.run_one() is False
    assert any("work stopped" in line for line in client.jobs.logs(job.id))


def test_a_time_boxed_train_job_goes_back_to_the_queue_and_resumes_until_done(tmp_path):
    """`training.max_time`: each attempt trains ~2 s, checkpoints and exits 75; the runner gives
    the job back without using up a retry (max_retries 0), and the next attempt resumes."""
    client = connect(store_uri=f"sqlite:///{tmp_path}/c.db", allowed_imports=("tests",))
    from tengine.config import load_config

    cfg = load_config(REPO / "configs/quickstart.yaml", [
        *TINY, "training.max_steps=150", "training.max_time=2s", "checkpoint.every_n_steps=0",
        "model.name=tests.engine.helpers:slow_gpt", f"logging.root={tmp_path}/runs"])
    job = client.jobs.submit("train", {"config": cfg.model_dump(mode="json")}, max_retries=0)
    runner = JobRunner(client, "r", heartbeat_s=0.2, allowed_imports=("tests",))
    for _ in range(20):
        if client.jobs.get(job.id).state in ("SUCCEEDED", "FAILED"):
            break
        assert runner.run_one()
    done = client.jobs.get(job.id)
    assert done.state == "SUCCEEDED", (done.error, client.jobs.logs(job.id)[-10:])
    released = [e for e in client.jobs.events(job.id) if "preempted" in e["reason"]]
    assert released and all(e["to_state"] == "PENDING" for e in released)
    assert done.attempts == 1  # the preempted attempts were given back, not spent
    summary = done.result["summary"]
    assert summary["status"] == "completed" and summary["steps"] == 150
    assert summary["resumed_from"] is not None
    # the experiment DB has one run for all the attempts, with its job and one value per step
    from tengine.control.experiments import ExperimentDB
    from tengine.control.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/runs/control/tengine.db")
    recorded = ExperimentDB(store).get_run(cfg.name)
    assert recorded.job_id == job.id and recorded.status == "completed"
    assert recorded.starts == len(released) + 1
    steps = [r["step"] for r in ExperimentDB(store).get_metrics(recorded.id, "train_loss")]
    assert steps == list(range(1, 151))
    store.close()


RUN_ONE = """
import sys
from tengine import connect
from tengine.control.runner import JobRunner
client = connect(store_uri=sys.argv[1], allowed_imports=("tests",))
JobRunner(client, sys.argv[2], ttl_s=2.0, heartbeat_s=0.2, allowed_imports=("tests",)).run_one()
"""


def test_a_job_that_sigkills_its_runner_every_attempt_ends_failed_after_its_retries(tmp_path):
    """A real runner process per attempt; the job's train child SIGKILLs it (as a node's OOM
    killer would). Each lost lease counts: FAILED after max_retries + 1 attempts, and the events
    say why, instead of a job requeued forever."""
    from tengine.config import load_config

    store = f"sqlite:///{tmp_path}/c.db"
    client = connect(store_uri=store, allowed_imports=("tests",))
    cfg = load_config(REPO / "configs/quickstart.yaml", [
        *TINY, "training.max_steps=5", "model.name=tests.control.loud_model:runner_killer",
        f"logging.root={tmp_path}/runs"])
    job = client.jobs.submit("train", {"config": cfg.model_dump(mode="json")}, max_retries=1)
    for attempt in (1, 2):
        runner = subprocess.run([sys.executable, "-c", RUN_ONE, store, f"runner-{attempt}"],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert runner.returncode == -signal.SIGKILL, runner.stderr[-2000:]
        assert client.jobs.get(job.id).state == "RUNNING"  # nobody reported: the runner is dead
        time.sleep(2.1)  # the lease (2 s) runs out
        client.jobs.expire_leases()  # what the control plane's tick does
        if attempt == 1:
            assert client.jobs.get(job.id).state == "PENDING"
            time.sleep(2.0)  # the retry's backoff
    final = client.jobs.get(job.id)
    assert final.state == "FAILED" and final.attempts == 2, final
    assert "the lease of runner-2 expired: the runner died" in final.error
    reasons = [e["reason"] for e in client.jobs.events(job.id) if e["from_state"] == "RUNNING"]
    assert reasons == ["attempt 1 of 2 lost; retry in 2 s",
                       "attempt 2 of 2 lost; no retries left (max_retries 1)"]
    assert client.jobs.claim("runner-3") is None


def _submit_and_work(store: str, cwd, *submit: str):
    """`tengine jobs submit …` (in `cwd`), then `tengine jobs work --once`; the job SUCCEEDED."""
    tengine = [sys.executable, "-m", "tengine"]
    out = subprocess.run([*tengine, "jobs", "submit", *submit, "--store", store, "--json"],
                         cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["id"]
    work = subprocess.run([*tengine, "jobs", "work", "--once", "--store", store], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert work.returncode == 0, work.stderr
    client = connect(store_uri=store)
    job = client.jobs.get(job_id)
    assert job.state == "SUCCEEDED", (job.error, client.jobs.logs(job_id)[-20:])
    return client, job


def _work_once(store: str, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "tengine", "jobs", "work", "--once", "--store", store,
                    *extra], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_cli_train_job_registers_a_copy_that_outlives_its_run_and_warm_starts_a_retrain(tmp_path):
    """`tengine jobs submit … --register` trains and registers a copy of the checkpoint in the
    registry's artifact root; the run dir deleted, the version still evaluates, to the metrics
    it was registered with; a retrain with --init-from-parent starts where the parent ended; one
    flipped byte in the artifact and every use refuses it."""
    store = f"sqlite:///{tmp_path}/control/tengine.db"
    sets = [a for s in [*TINY, "training.max_steps=20", "checkpoint.every_n_steps=10",
                        "training.eval_every_n_steps=10", "training.micro_batch_size=32",
                        f"logging.root={tmp_path}/runs"] for a in ("--set", s)]
    tengine = [sys.executable, "-m", "tengine"]
    client, job = _submit_and_work(store, REPO, "configs/quickstart.yaml", *sets, "--register", "tiny")
    job_id = job.id
    assert job.result["summary"]["steps"] == 20 and job.result["model"]["version"] == 1
    model = client.registry.get("tiny", 1)
    artifact = Path(model.artifact_uri)
    assert artifact.parent == tmp_path / "control" / "artifacts" / "tiny"
    # weights, config, the data profile (the Markov source has no tokenizer to copy), no
    # optimizer state
    assert sorted(p.name for p in artifact.iterdir()) == ["config.yaml", "manifest.json",
                                                          "model.safetensors", "profile.json",
                                                          "profile_batch.npz"]
    assert model.sha256 == sha256_file(artifact / "manifest.json") == artifact.name
    assert Path(model.source_uri).name == "step_00000020" and model.step == 20
    assert model.job_id == job_id and model.source_run == job.result["run_dir"]
    checkpoint_metrics = json.loads((Path(model.source_uri) / "manifest.json").read_text())["metrics"]
    assert model.metrics == checkpoint_metrics and "val_loss" in model.metrics
    wait = subprocess.run([*tengine, "jobs", "wait", job_id, "--store", store], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert wait.returncode == 0 and f"{job_id} SUCCEEDED" in wait.stdout

    # the run dir is gone (retention, a fresh start's archiving, `make clean`): the version is not
    shutil.rmtree(job.result["run_dir"])
    for bad, text in ((["--model", "tiny:7"], "has no version 7"), ([], "needs --model")):
        out = subprocess.run([*tengine, "jobs", "submit", "evaluate", *bad, "--store", store],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and text in out.stderr and len(client.jobs.list()) == 1
    evaluation = client.jobs.submit("evaluate", {"model": "tiny", "ref": "latest"})
    _work_once(store)
    done = client.jobs.get(evaluation.id)
    assert done.state == "SUCCEEDED", (done.error, client.jobs.logs(evaluation.id)[-20:])
    assert done.result["model"] == {"name": "tiny", "version": 1} and done.result["step"] == 20
    assert done.result["metrics"]["val_loss"] == pytest.approx(model.metrics["val_loss"], abs=1e-6)

    # a retrain warm-started from its parent: its first step's loss is the parent's last
    client.registry.promote_model("tiny", 1)
    retrain_sets = [a for s in [*TINY, "training.max_steps=3", "training.micro_batch_size=32",
                                "schedule.warmup_steps=3", f"logging.root={tmp_path}/runs"]
                    for a in ("--set", s)]
    client, retrain = _submit_and_work(store, REPO, "configs/quickstart.yaml", *retrain_sets,
                                       "--type", "retrain", "--register", "tiny", "--init-from-parent")
    child = client.registry.get("tiny", 2)
    assert child.parent_version == 1 and "warm start from tiny v1" in "\n".join(client.jobs.logs(retrain.id))
    first = next(r for r in map(json.loads, (Path(retrain.result["run_dir"]) / "metrics.jsonl")
                                .read_text().splitlines()) if r.get("split") == "train")
    assert first["step"] == 1 and first["loss"] == pytest.approx(model.metrics["train_loss"], rel=0.02)

    # one flipped byte: evaluate, a retrain's warm start and init_from all refuse the artifact
    weights = artifact / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    refused = [client.jobs.submit("evaluate", {"model": "tiny", "ref": 1}),
               client.jobs.submit("retrain", {**retrain.config, "parent_alias": "production"})]
    _work_once(store)
    _work_once(store)
    for job in refused:
        job = client.jobs.get(job.id)
        assert job.state == "FAILED" and "sha256 mismatch" in job.error, (job.type, job.error)
    train = subprocess.run([*tengine, "train", "configs/quickstart.yaml", *sets[:-2],
                            "--set", f"model.init_from={artifact}", "--run-dir", str(tmp_path / "x")],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert train.returncode != 0 and "sha256 mismatch" in train.stderr, train.stderr[-2000:]


def _default_sigint() -> None:
    """As in a terminal: a harness that started us in the background may ignore SIGINT, and a
    child inherits that (then Python installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_in_jobs_work_gives_the_running_job_back(tmp_path, sig):
    store = f"sqlite:///{tmp_path}/c.db"
    client = connect(store_uri=store)
    record = tmp_path / "ran.txt"
    job = client.jobs.submit("sleep", {"seconds": 60, "append_to": str(record)})
    output = tmp_path / "work.log"  # a file, not a pipe nobody reads while we wait
    with output.open("w") as out:
        work = subprocess.Popen([sys.executable, "-m", "tengine", "jobs", "work", "--store", store],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=_default_sigint)
    try:
        deadline = time.time() + 60
        while client.jobs.get(job.id).state != "RUNNING" and time.time() < deadline:
            time.sleep(0.1)
        assert client.jobs.get(job.id).state == "RUNNING", output.read_text()[-3000:]
        work.send_signal(sig)
        assert work.wait(timeout=30) == 130, output.read_text()[-3000:]
    finally:
        work.kill()
        work.wait()
    back = client.jobs.get(job.id)
    assert back.state == "PENDING" and not record.exists()
    assert "the runner was interrupted" in client.jobs.events(job.id)[-1]["reason"]


def test_a_runner_cut_off_from_the_control_plane_stops_its_work_before_the_lease_expires(tmp_path):
    client = connect(store_uri=f"sqlite:///{tmp_path}/c.db")

    def call(component, method, args, kwargs):
        if method == "heartbeat":
            raise LostReply("the control plane is unreachable")
        return client._call(component, method, args, kwargs)

    cut_off = ControlClient(call, client._status, "cut off", transient=(LostReply,))
    record = tmp_path / "ran.txt"
    job = client.jobs.submit("sleep", {"seconds": 30, "append_to": str(record)})
    t0 = time.time()
    assert JobRunner(cut_off, "r", ttl_s=2.0, heartbeat_s=0.1).run_one()
    assert time.time() - t0 < 5 and not record.exists()  # stopped after ~ttl/2, not 30 s
    assert client.jobs.get(job.id).state == "RUNNING"  # the plane decides: its lease will expire
    assert any("no contact with the control plane" in line for line in client.jobs.logs(job.id))


def test_a_sweep_job_runs_its_sweep_file_and_registers_the_best_trial(tmp_path):
    import yaml

    store = f"sqlite:///{tmp_path}/control/tengine.db"
    sweep = tmp_path / "lr.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "lr", "base": str(REPO / "configs/quickstart.yaml"), "root": "sweeps",
        "overrides": [*TINY, "training.max_steps=10", "training.eval_every_n_steps=5"],
        "space": {"optim.lr": {"grid": [1e-3, 1e-2]}}, "search": {"name": "grid"}, "num_samples": 1,
        "resources": {"workers": 0}}))
    client, job = _submit_and_work(store, tmp_path, str(sweep), "--type", "sweep", "--register", "swept")
    assert job.result["sweep_dir"] == str(tmp_path / "sweeps" / "lr")  # the submitter's root
    assert job.result["trials"] == 2 and job.result["counts"] == {"completed": 2}
    results = json.loads((tmp_path / "sweeps/lr/results.json").read_text())
    assert job.result["best"]["trial"] == results["best"]["trial"]
    model = client.registry.get("swept", "latest")
    assert model.tags["trial"] == results["best"]["trial"] and job.result["model"]["version"] == model.version
