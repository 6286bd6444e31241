"""`tengine jobs|schedule|registry` against an in-process store: tables, --json, clear errors."""

from __future__ import annotations

import json

import pytest

from tengine.cli import main
from tengine.control import ModelRegistry, open_store
from tests.conftest import REPO

SHA = "ef" * 32


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path}/control/tengine.db"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def js(capsys, *argv: str):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_registry_commands(store, capsys):
    reg = ModelRegistry(open_store(store))
    reg.register("m", artifact_uri="/runs/a", sha256=SHA, size=1, metrics={"val_loss": 2.0})
    reg.register("m", artifact_uri="/runs/b", sha256=SHA, size=1, metrics={"val_loss": 1.8}, parent_version=1)
    S = ("--store", store)
    assert js(capsys, "registry", "promote", "m", "2", "--by", "ci", "--reason", "better", *S)["aliases"] == ["production"]
    assert js(capsys, "registry", "show", "m", "production", *S)["version"] == 2
    assert js(capsys, "registry", "compare", "m", "1", "2", *S)["metrics"]["val_loss"]["delta"] == pytest.approx(-0.2)
    assert [v["version"] for v in js(capsys, "registry", "lineage", "m", "2", *S)] == [2, 1]
    code, out, _ = run(capsys, "registry", "list", "m", *S)
    assert code == 0 and "production" in out.splitlines()[2] and out.startswith("NAME")
    code, _, err = run(capsys, "registry", "rm", "m", "2", *S)
    assert code == 2 and "alias(es) production point at it" in err and "Traceback" not in err
    assert js(capsys, "registry", "alias", "m", "production", "1", *S)["version"] == 1
    code, out, _ = run(capsys, "registry", "rm", "m", "2", *S)
    assert code == 0 and [v["version"] for v in js(capsys, "registry", "list", "m", *S)] == [1]


def test_jobs_and_schedules(store, capsys):
    S = ("--store", store)
    job = js(capsys, "jobs", "submit", str(REPO / "configs/quickstart.yaml"), "--workers", "2",
             "--register", "mymodel", "--priority", "7", "--key", "k1", *S)
    assert job["type"] == "train" and job["priority"] == 7 and job["config"]["register"] == "mymodel"
    assert job["config"]["config"]["distributed"]["workers"] == 2
    again = js(capsys, "jobs", "submit", str(REPO / "configs/quickstart.yaml"), "--key", "k1", *S)
    assert again["id"] == job["id"]
    assert js(capsys, "jobs", "cancel", job["id"], *S)["state"] == "CANCELLED"
    assert js(capsys, "jobs", "retry", job["id"], *S)["state"] == "PENDING"
    shown = js(capsys, "jobs", "show", job["id"], *S)
    assert [e["to_state"] for e in shown["events"]] == ["PENDING", "CANCELLED", "PENDING"]
    s = js(capsys, "schedule", "add", "nightly", "--cron", "0 3 * * 1", "--tz", "Europe/Berlin",
           "--config", str(REPO / "configs/quickstart.yaml"), *S)
    assert s["next_fire"] is not None and s["tz"] == "Europe/Berlin"
    assert js(capsys, "schedule", "disable", "nightly", *S)["enabled"] is False
    code, out, _ = run(capsys, "schedule", "list", *S)
    assert code == 0 and "nightly" in out and "0 3 * * 1" in out
    assert run(capsys, "schedule", "rm", "nightly", *S)[0] == 0


@pytest.mark.parametrize("argv, text", [
    (("jobs", "submit", "trian"), "did you mean 'train'"),
    (("jobs", "submit", "sleep", "--priority", "0"), "priority 0 must be an integer from 1 to 10"),
    (("jobs", "show", "job-nope"), "does not exist"),
    (("schedule", "add", "x", "--cron", "0 3 * *"), "not a valid 5-field"),
    (("schedule", "add", "x", "--cron", "0 3 * * 1", "--tz", "Nowhere/Land"), "IANA"),
    (("registry", "show", "../etc", "1"), "no path separators"),
    (("registry", "show", "m", "prod"), "has no alias 'prod'"),
    (("registry", "show", "m", "0"), "must be ≥ 1"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(store, capsys, argv, text):
    ModelRegistry(open_store(store)).register("m", artifact_uri="/a", sha256=SHA, size=1)
    before = js(capsys, "jobs", "list", "--store", store), js(capsys, "schedule", "list", "--store", store)
    code, _, err = run(capsys, *argv, "--store", store)
    assert code == 2 and text in err and "Traceback" not in err
    after = js(capsys, "jobs", "list", "--store", store), js(capsys, "schedule", "list", "--store", store)
    assert before == after


def test_jobs_work_runs_the_in_process_planes_tick(store, capsys, monkeypatch):
    """On the embedded default nobody else ticks: `jobs work` fires a due schedule (and the
    retraining triggers) itself, then runs what it submitted."""
    import time

    monkeypatch.setenv("TENGINE_TEST_EXECUTORS", "1")  # the test-only `sleep` executor
    from tengine import connect

    client = connect(store_uri=store)
    client.schedules.add("soon", job_type="sleep", config={"seconds": 0}, interval_s=0.3)
    time.sleep(0.4)
    assert client.jobs.list() == []  # due, but nothing has ticked
    assert run(capsys, "jobs", "work", "--once", "--store", store)[0] == 0
    [job] = connect(store_uri=store).jobs.list()
    assert (job.type, job.state, job.schedule_id) == ("sleep", "SUCCEEDED",
                                                       client.schedules.get("soon").id)
