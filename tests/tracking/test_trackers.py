"""Trackers: W&B (offline) and TensorBoard record what metrics.jsonl records, step for step; a
tracker that fails is one warning, never a failed run; a resumed run has one value per step."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from tengine.config import load_config
from tengine.engine import run
from tests.conftest import REPO, TINY, read_jsonl
from tests.tracking.wandb_log import alerts, history, records


def _cfg(tmp_path: Path, *overrides: str):
    return load_config(REPO / "configs/quickstart.yaml",
                       [*TINY, f"logging.root={tmp_path}", "name=t", *overrides])


def _tb_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_wandb_offline_and_tensorboard_record_metrics_jsonl_step_for_step(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # `auto`: offline
    summary = run(_cfg(tmp_path, "training.max_steps=20", "training.eval_every_n_steps=10",
                       "checkpoint.every_n_steps=10",
                       "logging.trackers=[jsonl,db,tensorboard,wandb]",
                       # an alert that fires at step 1 and holds: one wandb.alert for the run
                       "monitoring.alerts.rules=[{kind: grad_norm, threshold: 1.0e-9}]",
                       "monitoring.alerts.sinks=[{kind: jsonl}, {kind: wandb}]"))
    assert summary["status"] == "completed"
    run_dir = Path(summary["run_dir"])
    train = {r["step"]: r for r in read_jsonl(run_dir / "metrics.jsonl")}
    val = {r["step"]: r for r in read_jsonl(run_dir / "metrics.jsonl", "val")}
    assert sorted(train) == list(range(1, 21)) and sorted(val) == [10, 20]

    [log] = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # offline: nothing left the machine
    rows = history(log)
    assert sorted(rows) == sorted(train)
    for step, r in train.items():  # the same numbers at the same step (JSON floats: exact)
        assert rows[step]["train/loss"] == r["loss"] and rows[step]["train/lr"] == r["lr"]
    assert {s: rows[s]["val/loss"] for s in val} == {s: r["val_loss"] for s, r in val.items()}
    # the checkpoints as artifacts referencing their files, and the resolved config
    arts = [r.artifact for r in records(log) if r.WhichOneof("record_type") == "artifact"]
    assert [sorted(set(a.aliases) - {"latest"}) for a in arts] == [["step_00000010"],
                                                                    ["step_00000020"]]
    assert all(a.type == "checkpoint" and any(m.ref.endswith("model.safetensors")
                                              for m in a.manifest.contents) for a in arts)
    [started] = [r.run for r in records(log) if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in started.config.update}
    assert config["name"] == "t" and config["optim"]["lr"] == 3e-3  # the resolved config

    [(title, text, level)] = alerts(log)  # through wandb.alert, into the same run
    [event] = [json.loads(x) for x in (run_dir / "alerts.jsonl").read_text().splitlines()]
    assert title == "grad_norm firing" and text == event["message"] and event["step"] == 1
    assert level == "WARN"

    tb = _tb_scalars(run_dir, "train/loss")
    assert [s for s, _ in tb] == sorted(train)
    assert all(v == pytest.approx(train[s]["loss"], rel=1e-6) for s, v in tb)  # float32 events
    assert [s for s, _ in _tb_scalars(run_dir, "val/loss")] == [10, 20]

    # an export of this run is recorded with it: an artifact of its DB run and of its W&B run
    # (the same W&B run id, resumed offline), each with metadata.json's sha256
    from tengine.control import open_store
    from tengine.control.experiments import ExperimentDB
    from tengine.export import export
    from tengine.files import sha256_file

    bundle = tmp_path / "bundle"
    export(run_dir, bundle, formats=["safetensors"], latency_iters=0, progress=lambda *a: None)
    # the bundle carries the run's data profile, with the model's outputs on its reference batch
    profile = json.loads((bundle / "profile.json").read_text())
    assert profile["features"] == json.loads((run_dir / "profile.json").read_text())["features"]
    assert len(profile["outputs"]["entropy"]["values"]) == profile["outputs"]["examples"] > 0
    store = open_store(f"sqlite:///{tmp_path}/control/tengine.db")
    [art] = ExperimentDB(store).get_artifacts("t", kind="bundle")
    store.close()
    assert art["uri"] == str(bundle) and art["sha256"] == sha256_file(bundle / "metadata.json")
    assert art["meta"] == {"formats": ["safetensors"]}
    first, second = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"),
                           key=lambda p: p.stat().st_mtime)
    assert first == log
    run_ids = [r.run.run_id for f in (first, second) for r in records(f)
               if r.WhichOneof("record_type") == "run"]
    assert len(set(run_ids)) == 1, run_ids
    [bundled] = [r.artifact for r in records(second) if r.WhichOneof("record_type") == "artifact"]
    assert bundled.type == "bundle" and json.loads(bundled.metadata)["metadata_sha256"] == art["sha256"]
    refs = sorted(m.ref for m in bundled.manifest.contents)  # a directory: one per file
    assert f"file://{bundle}/metadata.json" in refs and f"file://{bundle}/model.safetensors" in refs

    # evaluating a checkpoint of this run (its config names the trackers) logs nothing, and
    # needs neither package: here neither can be imported
    from tengine.engine.run import evaluate

    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    before = sorted(p.name for p in (run_dir / "tensorboard").iterdir())
    evaluate(load_config(run_dir / "config.yaml"), run_dir / "checkpoints" / "step_00000020")
    assert sorted(p.name for p in (run_dir / "tensorboard").iterdir()) == before
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2  # the run's, the export's


def test_a_tracker_that_raises_on_every_call_is_one_warning_and_the_run_completes(tmp_path, caplog):
    from tests.tracking.helpers import Exploding

    Exploding.calls = 0
    with caplog.at_level(logging.WARNING, logger="tengine"):
        summary = run(_cfg(tmp_path, "training.max_steps=12", "checkpoint.every_n_steps=6",
                           "training.eval_every_n_steps=6",
                           "logging.callbacks=[tests.tracking.helpers:Exploding]"))
    assert summary["status"] == "completed" and summary["steps"] == 12
    warned = [r.getMessage() for r in caplog.records if "Exploding" in r.getMessage()]
    assert len(warned) == 1 and "tracker backend unreachable" in warned[0], warned
    assert Exploding.calls == 2  # its first failure, then only on_fit_end (to close up)
    trainer_state = json.loads((Path(summary["run_dir"]) / "checkpoints" / "step_00000012" /
                                "trainer_state.json").read_text())
    # jsonl makes no callback; db (a default tracker) keeps no state
    states = trainer_state["callbacks"]
    assert set(states) == {"ProgressBar", "DbTracker", "Exploding", "ProfileWriter", "alerts"}
    assert states["Exploding"] == states["DbTracker"] == {}
    assert (Path(summary["run_dir"]) / "checkpoints" / "step_00000012").is_dir()


def test_a_resumed_run_has_one_value_per_step_in_tensorboard_and_runs_show(tmp_path, capsys):
    """Steps 51–55 were logged, then the run died; its last checkpoint is step 50. The resumed
    run logs 51–60 again: TensorBoard and `tengine runs show` show each step once, with the
    resumed run's values; the DB keeps the first attempt's 51–55 marked superseded."""
    from tengine.cli import main

    common = ["training.max_steps=60", "checkpoint.every_n_steps=50", "checkpoint.keep_last=3",
              "logging.trackers=[jsonl,db,tensorboard]"]
    first = run(_cfg(tmp_path, *common, "training.halt_at_step=55"))
    run_dir = Path(first["run_dir"])
    shutil.rmtree(run_dir / "checkpoints" / "step_00000055")  # died after 55, before saving
    second = run(_cfg(tmp_path, *common))
    assert second["resumed_from"].endswith("step_00000050") and second["steps"] == 60
    tb = _tb_scalars(run_dir, "train/loss")
    assert [s for s, _ in tb] == list(range(1, 61))  # one value per step
    last = {}
    for r in read_jsonl(run_dir / "metrics.jsonl"):
        last[r["step"]] = r["loss"]  # the resumed run's lines come last
    assert all(v == pytest.approx(last[s], rel=1e-6) for s, v in tb)

    store = ["--store", f"sqlite:///{tmp_path}/control/tengine.db"]  # the root's own store
    capsys.readouterr()
    assert main(["runs", "show", "t", "--json", *store]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["status"] == "completed" and shown["run"]["starts"] == 2
    steps = [step for step, _ in shown["metrics"]["train_loss"]]
    assert steps == list(range(1, 61))  # one value per step, in the DB too
    assert {s: v for s, v in shown["metrics"]["train_loss"]} == last  # the resumed run's
    checkpoints = [a["step"] for a in shown["artifacts"] if a["kind"] == "checkpoint"]
    assert checkpoints == [50, 60]  # 55's checkpoint was redone
    [resume] = [a for a in shown["artifacts"] if a["kind"] == "resume"]
    assert resume["step"] == 50 and resume["uri"].endswith("step_00000050")
    assert main(["runs", "show", "t", "--json", "--superseded", *store]) == 0
    every = json.loads(capsys.readouterr().out)["metrics"]["train_loss"]
    assert sorted(s for s, _, old in every if old) == [51, 52, 53, 54, 55]
    assert main(["runs", "show", "t", *store]) == 0  # the table a person reads
    table = capsys.readouterr().out
    assert "status:        completed" in table and "\n60    " in table


def test_a_callback_that_cannot_be_built_is_one_warning_too(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tengine"):
        summary = run(_cfg(tmp_path, "training.max_steps=3",
                           "logging.callbacks=[tests.tracking.helpers:Unbuildable]"))
    assert summary["status"] == "completed"
    warned = [r.getMessage() for r in caplog.records if "Unbuildable" in r.getMessage()]
    assert len(warned) == 1 and "could not be set up" in warned[0]
    # and a job's submit-time import check sees logging.callbacks
    from tengine.control.safety import config_imports

    cfg = _cfg(tmp_path, "logging.callbacks=[tests.tracking.helpers:Unbuildable]")
    assert ("logging.callbacks", "tests.tracking.helpers") in config_imports(cfg.model_dump(mode="json"))


def test_an_unknown_tracker_or_callback_is_a_config_error(tmp_path):
    from tengine.errors import ConfigError

    with pytest.raises(Exception, match="logging.trackers"):
        _cfg(tmp_path, "logging.trackers=[jsonl,mlflow]")
    with pytest.raises(ConfigError, match="logging.callbacks: cannot import module 'nowhere'"):
        run(_cfg(tmp_path, "training.max_steps=2", "logging.callbacks=[nowhere:Thing]"))
    with pytest.raises(ConfigError, match=r"logging.db.store: 'mysql://u:\*\*\*@h/db' is not a store URI"):
        run(_cfg(tmp_path, "training.max_steps=2", "logging.db.store=mysql://u:pw@h/db"))
    assert not (tmp_path / "t").exists()  # refused before any work
    assert json.dumps(_cfg(tmp_path).logging.trackers) == '["jsonl", "db"]'
