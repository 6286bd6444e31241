"""The main job (`make demo`): the quickstart, 2 Ray workers, reaches the loss floor within 5%."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_quickstart_reaches_the_loss_floor(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tengine.cli", "train",
                           str(REPO / "configs/quickstart.yaml"), "--run-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 1000
    assert summary["world_size"] == 2 and summary["backend"] == "ddp"
    assert summary["val_loss"] <= 1.05 * summary["loss_floor"], summary
    assert summary["val_loss"] > summary["loss_floor"] * 0.99  # nothing beats the entropy rate
    assert "val_loss" in proc.stdout and "loss floor" in proc.stdout
    # env.json and REPRODUCE.md name the command that was run, not the Ray worker's own
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["argv"][1:3] == ["train", str(REPO / "configs/quickstart.yaml")], env["argv"]
    assert env["cwd"] == str(tmp_path)
    assert "train " + str(REPO / "configs/quickstart.yaml") in (tmp_path / "REPRODUCE.md").read_text()
    # the run is in the experiment DB of the driver's runs root (`logging.root: runs`, relative
    # to where it was launched, not to the Ray workers' own directory), with its metrics
    from tengine.control import open_store
    from tengine.control.experiments import ExperimentDB

    store = open_store(f"sqlite:///{tmp_path}/runs/control/tengine.db")
    recorded = ExperimentDB(store).get_run("quickstart")
    assert recorded.status == "completed" and recorded.run_dir == str(tmp_path)
    val = ExperimentDB(store).get_metrics(recorded.id, "val_loss")
    assert val[-1]["step"] == 1000 and val[-1]["value"] == summary["val_loss"]
    store.close()
