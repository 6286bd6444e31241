"""Ray Train: 2 workers (DDP over gloo) on an embedded Ray, one of them SIGKILLed mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tengine.engine.callbacks import read_metrics
from tests.backends.test_distributed import COMMON, _sets, single
from tests.conftest import REPO


def test_killed_worker_is_survived_and_the_curve_is_unchanged(tmp_path):
    reference = tmp_path / "single"
    single(reference, "training.micro_batch_size=16")

    run_dir = tmp_path / "ray"
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    env.pop("RAY_ADDRESS", None)  # an embedded Ray, started and stopped by the command
    args = [*COMMON, "distributed.backend=ddp", "training.micro_batch_size=8",
            "distributed.kill_rank_at_step=15", "distributed.max_failures=2"]
    proc = subprocess.run([sys.executable, "-m", "tengine", "train",
                           str(REPO / "configs/quickstart.yaml"), "--run-dir", str(run_dir),
                           "--workers", "2", *_sets(args)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert summary["restarts"] == 1 and summary["resumed_from"].endswith("step_00000010")
    assert (run_dir / ".killed_once").read_text() == "15"
    ray_losses = {r["step"]: r["step_loss"] for r in read_metrics(run_dir / "metrics.jsonl")
                  if r["split"] == "train"}
    ref_losses = {r["step"]: r["step_loss"] for r in read_metrics(reference / "metrics.jsonl")
                  if r["split"] == "train"}
    assert sorted(ray_losses) == list(range(1, 31))
    assert max(abs(ray_losses[s] - ref_losses[s]) for s in ref_losses) <= 1e-4
    ref_summary = json.loads((reference / "summary.json").read_text())
    assert abs(summary["val_loss"] - ref_summary["val_loss"]) <= 1e-4
