"""Cluster-level behaviour: `launch/submit.sh` on a local `ray start --head` cluster, and a
killed driver whose re-run resumes from the run dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.backends.test_distributed import COMMON, _sets
from tests.cluster.conftest import BIN, cluster_env
from tests.conftest import REPO


def test_submit_script_runs_a_job_to_success_on_a_local_cluster(tmp_path, ray_head):
    env = cluster_env(RAY_ADDRESS=ray_head.dashboard, TENGINE_STORAGE=str(tmp_path / "runs"),
                      RAY_AUTH_MODE="token")
    sub = subprocess.run(["bash", str(REPO / "launch/submit.sh"), "configs/quickstart.yaml",
                          "--workers", "2", *_sets(["training.max_steps=20", "checkpoint.every_n_steps=10",
                                                    "data.markov.num_tokens=40000"])],
                         env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert sub.returncode == 0, sub.stderr[-2000:]
    job = sub.stdout.split("submitted: ")[1].split()[0]
    status = ""
    for _ in range(180):
        status = subprocess.run([str(BIN / "ray"), "job", "status", job], env=env,
                                capture_output=True, text=True, timeout=60).stdout.lower()
        if any(s in status for s in ("succeeded", "failed", "stopped")):
            break
        time.sleep(1)
    logs = subprocess.run([str(BIN / "ray"), "job", "logs", job], env=env,
                          capture_output=True, text=True, timeout=60).stdout
    assert "succeeded" in status, logs[-3000:]
    run_dir = tmp_path / "runs" / "quickstart"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert (run_dir / "checkpoints" / "step_00000020" / "manifest.json").is_file()


def test_killed_driver_rerun_resumes_within_one_checkpoint_interval(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "tengine", "train", str(REPO / "configs/quickstart.yaml"),
           "--run-dir", str(run_dir), "--workers", "2",
           *_sets([*COMMON, "distributed.backend=ddp", "training.micro_batch_size=8",
                   "training.max_steps=150", "checkpoint.every_n_steps=10"])]
    driver = subprocess.Popen(cmd, env=cluster_env(), cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "metrics.jsonl"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if metrics.exists() and metrics.read_text().count('"train"') >= 25:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the first run never reached step 25")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
        driver.wait()
    # the embedded Ray's workers outlive their driver for a moment: wait until nothing writes
    last, still = metrics.stat().st_mtime, 0
    while still < 20:
        time.sleep(0.25)
        now = metrics.stat().st_mtime
        still, last = (still + 1, last) if now == last else (0, now)
    reached = max(json.loads(x)["step"] for x in metrics.read_text().splitlines() if '"train"' in x)
    assert reached < 150, "the first run finished before it was killed"
    rerun = subprocess.run(cmd, env=cluster_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    resumed = int(summary["resumed_from"].rsplit("_", 1)[1])
    assert summary["status"] == "completed" and summary["steps"] == 150
    assert 0 <= reached - resumed <= 10, (reached, resumed)  # at most one checkpoint interval redone
