"""The experiment DB on the control store, SQLite and PostgreSQL: each of the seed's calls, one
value per step after a resume, clear errors, and 4 writer processes at once."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from tengine.control.experiments import ExperimentDB, flatten, mode_of
from tengine.errors import Invalid, NotFound
from tests.conftest import REPO


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _config(lr: float, **extra) -> dict:
    return {"name": "exp", "optim": {"lr": lr, "weight_decay": 0.1}, "model": {"d_model": 64},
            "logging": {"tags": []}, **extra}


def test_each_seed_call_works_against_the_db(store):
    db = ExperimentDB(store, clock=Clock())
    env_a = {"python": "3.11.9", "distributions": {"torch": "2.13.0", "numpy": "2.1.0"}}
    env_b = {"python": "3.11.9", "distributions": {"torch": "2.13.0", "numpy": "2.2.0"}}
    # log_run: an id of name + 8 hex, params flattened, the config's hash
    a = db.log_run("exp", _config(1e-3), tags=["baseline", "cpu"], sweep="lr", env=env_a,
                   run_dir="/runs/exp")
    b = db.log_run("exp", _config(3e-3), tags=["cpu"], sweep="lr", env=env_b)
    c = db.log_run("other", _config(1e-3), env=env_a)
    assert a.startswith("exp-") and len(a) == len("exp-") + 8 and len({a, b, c}) == 3
    # log_metric / log_metrics
    for step in range(1, 11):
        db.log_metrics(a, {"train_loss": 3.0 - 0.2 * step, "train_lr": 1e-3}, step)
        db.log_metrics(b, {"train_loss": 3.0 - 0.1 * step}, step)
    db.log_metric(a, "val_loss", 1.4, 10)
    db.log_metric(a, "val_accuracy", 0.61, 10)
    db.log_metric(b, "val_loss", 2.1, 5)
    db.log_metric(b, "val_loss", 1.9, 10)
    db.log_metric(b, "val_accuracy", 0.70, 10)
    db.log_metric(c, "val_loss", float("nan"), 3)  # a non-finite value is kept as NaN
    # log_artifact / update_run_status
    art = db.log_artifact(a, "checkpoint", "/runs/exp/checkpoints/step_00000010", sha256="ab" * 32,
                          step=10, meta={"files": 3})
    assert isinstance(art, int)
    db.update_run_status(a, "completed", summary={"steps": 10, "best_val_loss": 1.4})
    db.update_run_status(b, "failed", summary={"steps": 10, "error": "NonFiniteError: ..."})

    # get_run: by id, by name (the newest of that name), by a unique id prefix
    run = db.get_run(a)
    assert (run.name, run.status, run.sweep, run.tags, run.run_dir) == (
        "exp", "completed", "lr", ("baseline", "cpu"), "/runs/exp")
    assert run.params["optim.lr"] == 1e-3 and run.params["model.d_model"] == 64
    assert run.summary == {"steps": 10, "best_val_loss": 1.4} and run.env == env_a
    assert run.ended is not None and run.starts == 1
    assert db.get_run("exp").id == b and db.get_run("other").id == c
    assert db.get_run(a[:-2]).id == a

    # get_metrics: by key then step; NaN survives
    loss = db.get_metrics(a, "train_loss")
    assert [r["step"] for r in loss] == list(range(1, 11))
    assert [r["value"] for r in loss] == pytest.approx([3.0 - 0.2 * s for s in range(1, 11)])
    assert {r["key"] for r in db.get_metrics(a)} == {"train_loss", "train_lr", "val_loss",
                                                      "val_accuracy"}
    assert math.isnan(db.get_metrics(c, "val_loss")[0]["value"])
    assert db.get_artifacts(a)[0]["uri"].endswith("step_00000010")

    # list_runs: newest first; filters by status, tag, sweep; sorted by a metric, best first
    assert [r.id for r in db.list_runs()] == [c, b, a]
    assert [r.id for r in db.list_runs(status="failed")] == [b]
    assert [r.id for r in db.list_runs(tag="baseline")] == [a]
    assert [r.id for r in db.list_runs(sort="val_loss", sweep="lr")] == [a, b]
    ranked = db.list_runs(sort="val_accuracy")  # accuracy: higher is better; c has none: last
    assert [r.id for r in ranked] == [b, a, c]
    assert ranked[0].metrics["val_accuracy"] == {"best": 0.70, "last": 0.70, "last_step": 10,
                                                 "count": 1}
    assert [r.id for r in db.list_runs(sort="val_loss", mode="max", sweep="lr")] == [b, a]
    # get_runs_for_sweep / get_best_run
    assert {r.id for r in db.get_runs_for_sweep("lr")} == {a, b}
    assert db.get_runs_for_sweep("nope") == []
    assert db.get_best_run("val_loss").id == a
    assert db.get_best_run("val_accuracy", sweep="lr").id == b
    assert db.get_best_run("train_loss", status="failed").id == b
    assert db.get_best_run("bleu") is None

    # compare_runs: only the params that differ, each metric's best and last, the env diff
    cmp = db.compare_runs([a, b])
    assert cmp["params"] == {"optim.lr": [1e-3, 3e-3]}
    assert cmp["metrics"]["val_loss"] == {"mode": "min", "best": [1.4, 1.9], "last": [1.4, 1.9],
                                          "last_step": [10, 10]}
    assert cmp["metrics"]["train_loss"]["best"] == pytest.approx([1.0, 2.0])
    assert cmp["metrics"]["train_lr"]["best"] == [1e-3, None]
    assert cmp["env"][b]["distributions"]["changed"] == {"numpy": ["2.1.0", "2.2.0"]}
    assert cmp["env"][b]["fields"] == {}
    assert [r["status"] for r in cmp["runs"]] == ["completed", "failed"]


def test_a_resume_supersedes_what_came_after_its_checkpoint(store):
    db = ExperimentDB(store)
    run = db.log_run("r", _config(1e-3))
    for step in range(1, 56):  # an attempt that died after step 55; its checkpoint is step 50
        db.log_metrics(run, {"train_loss": 10.0 - step / 10}, step)
    db.log_artifact(run, "checkpoint", "/r/step_00000050", step=50)
    db.log_artifact(run, "checkpoint", "/r/step_00000055", step=55)
    assert db.log_run("r", _config(1e-3), run_id=run) == run  # the resumed start
    assert db.supersede_after(run, 50) == 5
    db.log_metric_rows(run, [(s, "train_loss", 1.0) for s in range(51, 61)])
    db.log_metric(run, "train_loss", 0.5, 60)  # logged twice for one step: the later one counts
    rows = db.get_metrics(run, "train_loss")
    assert [r["step"] for r in rows] == list(range(1, 61))  # one value per step
    assert rows[-1]["value"] == 0.5 and rows[50]["value"] == 1.0
    everything = db.get_metrics(run, "train_loss", include_superseded=True)
    assert len(everything) == 66 and sum(r["superseded"] for r in everything) == 6
    assert db.get_run(run).starts == 2
    assert [a["step"] for a in db.get_artifacts(run)] == [50]
    assert len(db.get_artifacts(run, include_superseded=True)) == 2


def test_one_batch_with_a_step_twice_keeps_the_later_value_and_mode_decides_best(store):
    db = ExperimentDB(store)
    run = db.log_run("d", {})
    db.log_metric_rows(run, [(1, "bleu", 0.2), (2, "bleu", 0.9), (2, "bleu", 0.5)])
    assert [(r["step"], r["value"]) for r in db.get_metrics(run, "bleu")] == [(1, 0.2), (2, 0.5)]
    other = db.log_run("e", {})
    db.log_metric_rows(other, [(1, "bleu", 0.1), (2, "bleu", 0.7)])
    # the ranges cross (d: 0.2-0.5, e: 0.1-0.7): `mode` picks the aggregate, not only the order
    best = db.get_best_run("bleu", "max")
    assert best.id == other and best.metrics["bleu"]["best"] == 0.7
    worst_first = db.list_runs(sort="bleu", mode="max")
    assert [r.metrics["bleu"]["best"] for r in worst_first] == [0.7, 0.5]
    assert db.get_best_run("bleu").metrics["bleu"]["best"] == 0.1  # bleu is not known: min


def test_a_run_whose_files_moved_follows_them(store):
    db = ExperimentDB(store)
    run = db.log_run("m", {}, run_dir="/runs/m")
    db.log_artifact(run, "checkpoint", "/runs/m/checkpoints/step_00000004", step=4)
    db.log_artifact(run, "bundle", "/bundles/m", step=4)
    assert db.move_run(run, "/runs/m-20261202-101010")
    moved = db.get_run(run)
    assert moved.run_dir == "/runs/m-20261202-101010" and moved.status == "interrupted"
    assert [a["uri"] for a in db.get_artifacts(run)] == [
        "/runs/m-20261202-101010/checkpoints/step_00000004", "/bundles/m"]
    assert not db.move_run("m-nothere", "/x")


def test_bad_input_is_a_clear_error(store):
    db = ExperimentDB(store)
    run = db.log_run("bad", {})
    with pytest.raises(NotFound, match="no run 'missing-run' in the experiment DB"):
        db.get_run("missing-run")
    with pytest.raises(NotFound, match="log_run"):
        db.log_metric("missing-run", "loss", 1.0, 1)
    with pytest.raises(Invalid, match="metric 'loss': 'high' is not a number"):
        db.log_metric(run, "loss", "high", 1)
    with pytest.raises(Invalid, match="step -1 must be a non-negative integer"):
        db.log_metric(run, "loss", 1.0, -1)
    with pytest.raises(Invalid, match="run status 'done' is not one of running, completed"):
        db.update_run_status(run, "done")
    with pytest.raises(Invalid, match="run name '../x' is not allowed"):
        db.log_run("../x", {})
    with pytest.raises(Invalid, match="two or more runs"):
        db.compare_runs([run])
    db.log_run("bad", {}, run_id="bad-aaaa0001")
    db.log_run("bad", {}, run_id="bad-aaaa0002")
    with pytest.raises(Invalid, match="ambiguous.*bad-aaaa0001"):
        db.get_run("bad-aaaa")
    with pytest.raises(NotFound):  # a prefix matches exactly, on either backend
        db.get_run("BAD-AAAA0001")
    assert db.get_metrics(run) == []


def test_secret_looking_config_values_are_masked_before_they_are_stored(store):
    db = ExperimentDB(store)
    run = db.log_run("s", {"logging": {"db": {"store": "postgresql://u:pg-pass-7731@h/db"}},
                           "data": {"hf_token": "hf_tokvalue0042", "api_key": "k-3319"}},
                     env={"environment": {"OMP_NUM_THREADS": "2"}})
    params = db.get_run(run).params
    assert params == {"logging.db.store": "postgresql://u:***@h/db", "data.hf_token": "***",
                      "data.api_key": "***"}
    assert flatten({"a": {"b": {"c": 1}}, "d": [1, 2], "e": {}}) == {"a.b.c": 1, "d": [1, 2],
                                                                    "e": {}}
    assert [mode_of(k) for k in ("val_loss", "val_accuracy", "train_tokens_per_s", "train_lr")] \
        == ["min", "max", "max", "min"]


WRITERS, ROWS, KEYS = 4, 10_000, 10


@pytest.mark.slow
def test_four_processes_write_ten_thousand_rows_each_without_a_lock_error(store_uri):
    """Each process logs its own run's 1,000 steps × 10 metrics, 50 rows per transaction (200
    transactions each), all at once: every row arrives, none twice, and no writer sees
    'database is locked'."""
    from tengine.control import open_store

    store = open_store(store_uri)
    db = ExperimentDB(store)
    ids = [db.log_run(f"w{i}", {"writer": i}) for i in range(WRITERS)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.control.metric_writer", store_uri,
                               run, str(ROWS // KEYS), str(KEYS)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for run in ids]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * WRITERS, outputs
    assert not any("locked" in out for out in outputs), outputs
    for run in ids:
        rows = db.get_metrics(run)
        assert len(rows) == ROWS
        assert len({(r["key"], r["step"]) for r in rows}) == ROWS
        assert len(db.get_metrics(run, include_superseded=True)) == ROWS
    store.close()
