"""Ray Train: 2 workers (DDP over gloo) on an embedded Ray, one of them SIGKILLed mid-run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from tengine.engine.callbacks import read_metrics
from tests.backends.test_distributed import COMMON, _sets, single
from tests.conftest import REPO


def test_killed_worker_is_survived_and_the_curve_is_unchanged(tmp_path):
    reference = tmp_path / "single"
    # the whole validation split on both sides (eval_batches counts micro-batches, 8 vs 16)
    single(reference, "training.micro_batch_size=16", "training.eval_batches=null")

    run_dir = tmp_path / "ray"
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    env.pop("RAY_ADDRESS", None)  # an embedded Ray, started and stopped by the command
    args = [*COMMON, "distributed.backend=ddp", "training.micro_batch_size=8",
            "distributed.kill_rank_at_step=15", "distributed.max_failures=2",
            "training.eval_batches=null"]
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


def _train(run_dir, *args: str):
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "tengine", "train", str(REPO / "configs/quickstart.yaml"),
                           "--run-dir", str(run_dir), "--workers", "2", *_sets(list(args))],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def test_checkpoints_reach_ray_storage_and_a_lost_run_dir_resumes_from_there(tmp_path):
    reference = tmp_path / "single"
    # the whole validation split on both sides (eval_batches counts micro-batches, 8 vs 16)
    single(reference, "training.micro_batch_size=16", "training.eval_batches=null")
    run_dir, storage = tmp_path / "ray", tmp_path / "storage"
    args = [*COMMON, "distributed.backend=ddp", "training.micro_batch_size=8",
            f"distributed.storage_path={storage}", "checkpoint.keep_last=1", "checkpoint.keep_best=0"]
    first = _train(run_dir, *args, "training.halt_at_step=20")
    assert first.returncode == 0, first.stderr[-3000:]
    # Ray keeps its own copies (keep_last + keep_best = 1), uploaded as the engine saved them
    kept = sorted(p.name for p in (storage / "ray").glob("step_*"))
    assert kept == ["step_00000020"], kept
    assert (storage / "ray" / "step_00000020" / "manifest.json").is_file()

    shutil.rmtree(run_dir)  # the run dir is lost (a new cluster, another disk): Ray's copy remains
    second = _train(run_dir, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"].endswith("step_00000020") and summary["steps"] == 30
    ray_losses = {r["step"]: r["step_loss"] for r in read_metrics(run_dir / "metrics.jsonl")
                  if r["split"] == "train"}
    ref_losses = {r["step"]: r["step_loss"] for r in read_metrics(reference / "metrics.jsonl")
                  if r["split"] == "train"}
    assert sorted(ray_losses) == list(range(21, 31))  # nothing before the fetched checkpoint redone
    assert max(abs(ray_losses[s] - ref_losses[s]) for s in ray_losses) <= 1e-4


def test_unusable_storage_path_fails_before_any_worker_starts(tmp_path):
    (tmp_path / "a_file").write_text("x")
    bad = _train(tmp_path / "r", *COMMON, "distributed.backend=ddp", f"distributed.storage_path={tmp_path}/a_file/sub")
    assert bad.returncode == 2 and "distributed.storage_path" in bad.stderr and "not writable" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "r" / "metrics.jsonl").exists()
    scheme = _train(tmp_path / "r", *COMMON, "distributed.backend=ddp", "distributed.storage_path=ftp://host/x")
    assert scheme.returncode == 2 and "unknown scheme; use a directory or a URI of s3://" in scheme.stderr
