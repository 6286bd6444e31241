"""`tengine runs list|show|compare|best` over runs the `db` tracker recorded; an unknown run is
exit 2 naming it; an unreachable experiment DB is one warning and the run completes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tengine.cli import main
from tengine.config import load_config
from tengine.engine import run
from tests.conftest import REPO, TINY


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two short runs in one root: `a` (lr 3e-3, tagged baseline) and `b` (lr 1e-2, another
    OMP_NUM_THREADS in its environment)."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    summaries = {}
    try:
        for name, lr, threads, tags in (("a", 3e-3, "2", "[baseline]"), ("b", 1e-2, "1", "[]")):
            mp.setenv("OMP_NUM_THREADS", threads)
            summaries[name] = run(load_config(REPO / "configs/quickstart.yaml", [
                *TINY, f"logging.root={root}", f"name={name}", f"optim.lr={lr}",
                "training.max_steps=8", "training.eval_every_n_steps=4",
                "checkpoint.every_n_steps=8", f"logging.tags={tags}"]))
    finally:
        mp.undo()
    return root, summaries


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_runs_compare_shows_only_differing_params_metrics_and_the_environment_diff(two_runs, capsys):
    root, summaries = two_runs
    store = ("--store", f"sqlite:///{root}/control/tengine.db")
    code, out, _ = _cli(capsys, "runs", "compare", "a", "b", "--json", *store)
    assert code == 0
    cmp = json.loads(out)
    ids = [r["id"] for r in cmp["runs"]]
    assert [i.split("-")[0] for i in ids] == ["a", "b"]
    assert cmp["params"] == {"name": ["a", "b"], "optim.lr": [3e-3, 1e-2],
                             "logging.tags": [["baseline"], []]}  # nothing else differs
    val = cmp["metrics"]["val_loss"]
    assert val["mode"] == "min" and val["last_step"] == [8, 8]
    assert val["last"] == pytest.approx([summaries["a"]["val_loss"], summaries["b"]["val_loss"]])
    assert val["best"][0] == pytest.approx(summaries["a"]["best_val_loss"])
    assert cmp["metrics"]["train_loss"]["last"][1] == pytest.approx(summaries["b"]["train_loss"])
    assert cmp["env"][ids[1]]["environment"]["changed"] == {"OMP_NUM_THREADS": ["2", "1"]}
    assert cmp["env"][ids[1]]["distributions"]["changed"] == {}

    code, out, _ = _cli(capsys, "runs", "compare", "a", "b", *store)  # the table a person reads
    assert code == 0 and "optim.lr" in out and "val_loss (min)" in out
    env_line = next(line.split() for line in out.splitlines() if "OMP_NUM_THREADS" in line)
    assert env_line == ["environment", "OMP_NUM_THREADS", "2", "1"]

    code, _, err = _cli(capsys, "runs", "compare", "a", "no-such-run", "--json", *store)
    assert code == 2 and "no run 'no-such-run'" in err and "Traceback" not in err
    code, _, err = _cli(capsys, "runs", "show", "zz", *store)
    assert code == 2 and "no run 'zz'" in err


def test_runs_list_filters_and_sorts_and_best_picks_the_lowest_val_loss(two_runs, capsys):
    root, summaries = two_runs
    store = ("--store", f"sqlite:///{root}/control/tengine.db")
    code, out, _ = _cli(capsys, "runs", "list", "--json", *store)
    listed = json.loads(out)
    assert code == 0 and [r["name"] for r in listed] == ["b", "a"]  # newest first
    assert all(r["status"] == "completed" and r["summary"]["steps"] == 8 for r in listed)
    assert listed[1]["run_dir"] == str(Path(summaries["a"]["run_dir"]).resolve())
    code, out, _ = _cli(capsys, "runs", "list", "--tag", "baseline", "--json", *store)
    assert [r["name"] for r in json.loads(out)] == ["a"]
    code, out, _ = _cli(capsys, "runs", "list", "--sort", "val_loss", "--json", *store)
    ranked = json.loads(out)
    best = min(("a", "b"), key=lambda n: summaries[n]["best_val_loss"])
    assert ranked[0]["name"] == best
    assert ranked[0]["metrics"]["val_loss"]["best"] == pytest.approx(summaries[best]["best_val_loss"])
    code, out, _ = _cli(capsys, "runs", "best", "--metric", "val_loss", "--json", *store)
    assert code == 0 and json.loads(out)["name"] == best
    code, out, _ = _cli(capsys, "runs", "list", *store)
    assert code == 0 and out.splitlines()[0].split()[:4] == ["ID", "STATUS", "SWEEP", "STEPS"]
    code, _, err = _cli(capsys, "runs", "best", "--metric", "bleu", *store)
    assert code == 1 and "no run has logged 'bleu'" in err


def test_an_unreachable_experiment_db_is_one_warning_and_the_run_completes(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tengine"):
        summary = run(load_config(REPO / "configs/quickstart.yaml", [
            *TINY, f"logging.root={tmp_path}", "name=u", "training.max_steps=3",
            f"logging.db.store=postgresql://nobody@/none?host={tmp_path}/no-socket"]))
    assert summary["status"] == "completed" and summary["steps"] == 3
    warned = [r.getMessage() for r in caplog.records if "tracker 'db'" in r.getMessage()]
    assert len(warned) == 1 and "on_fit_start" in warned[0], warned


def test_a_fresh_start_in_a_used_run_dir_is_a_new_run_and_the_old_one_follows_its_files(tmp_path):
    from tengine.control import open_store
    from tengine.control.experiments import ExperimentDB

    common = [*TINY, f"logging.root={tmp_path}", "name=f", "training.max_steps=4",
              "checkpoint.every_n_steps=4"]
    run(load_config(REPO / "configs/quickstart.yaml", common))
    again = run(load_config(REPO / "configs/quickstart.yaml", [*common, "checkpoint.resume=never"]))
    store = open_store(f"sqlite:///{tmp_path}/control/tengine.db")
    db = ExperimentDB(store)
    new, old = db.list_runs(name="f")  # newest first
    assert new.run_dir == str(Path(again["run_dir"]).resolve()) and new.starts == 1
    archived = Path(old.run_dir)
    assert archived.name.startswith("f-") and (archived / "metrics.jsonl").is_file()
    [ckpt] = db.get_artifacts(old.id, kind="checkpoint")
    assert ckpt["uri"].startswith(str(archived)) and Path(ckpt["uri"], "manifest.json").is_file()
    assert old.status == "completed"  # it had ended; only a run left `running` is interrupted
    store.close()


def test_the_db_tracker_records_into_postgresql(postgres, tmp_path, capsys):
    uri = postgres.new_database()
    summary = run(load_config(REPO / "configs/quickstart.yaml", [
        *TINY, f"logging.root={tmp_path}", "name=pg", "training.max_steps=6",
        "training.eval_every_n_steps=3", f"logging.db.store={uri}"]))
    code, out, _ = _cli(capsys, "runs", "show", "pg", "--json", "--store", uri)
    shown = json.loads(out)
    assert code == 0 and shown["run"]["status"] == "completed"
    assert [s for s, _ in shown["metrics"]["train_loss"]] == list(range(1, 7))
    assert shown["metrics"]["val_loss"][-1] == [6, summary["val_loss"]]
    assert not (tmp_path / "control").exists()  # nothing in the root's embedded store
