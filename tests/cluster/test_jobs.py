"""Cluster-level behaviour: `launch/submit.sh` on a local `ray start --head` cluster, and a
killed driver whose re-run resumes from the run dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.backends.test_distributed import COMMON, _sets
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    env.pop("RAY_ADDRESS", None)
    return {**env, **extra}


def test_submit_script_runs_a_job_to_success_on_a_local_cluster(tmp_path):
    gcs, dash = _free_port(), _free_port()
    env = _env(RAY_ADDRESS=f"http://127.0.0.1:{dash}", TENGINE_STORAGE=str(tmp_path / "runs"))
    start = subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=3",
                            "--include-dashboard=true", f"--dashboard-port={dash}",
                            "--disable-usage-stats"], env=_env(), capture_output=True, text=True,
                           timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        sub = subprocess.run(["bash", str(REPO / "launch/submit.sh"), "configs/quickstart.yaml",
                              "--workers", "2", *_sets(["training.max_steps=20", "checkpoint.every_n_steps=10",
                                                        "data.markov.num_tokens=40000"])],
                             env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert sub.returncode == 0, sub.stderr[-2000:]
        job = sub.stdout.split("submitted: ")[1].split()[0]
        status = ""
        for _ in range(180):
            status = subprocess.run([str(BIN / "ray"), "job", "status", job], env={**env, "RAY_AUTH_MODE": "token"},
                                    capture_output=True, text=True, timeout=60).stdout.lower()
            if any(s in status for s in ("succeeded", "failed", "stopped")):
                break
            time.sleep(1)
        logs = subprocess.run([str(BIN / "ray"), "job", "logs", job], env={**env, "RAY_AUTH_MODE": "token"},
                              capture_output=True, text=True, timeout=60).stdout
        assert "succeeded" in status, logs[-3000:]
        run_dir = tmp_path / "runs" / "quickstart"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["world_size"] == 2
        assert (run_dir / "checkpoints" / "step_00000020" / "manifest.json").is_file()
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=_env(), capture_output=True, timeout=120)


def test_killed_driver_rerun_resumes_within_one_checkpoint_interval(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "tengine", "train", str(REPO / "configs/quickstart.yaml"),
           "--run-dir", str(run_dir), "--workers", "2",
           *_sets([*COMMON, "distributed.backend=ddp", "training.micro_batch_size=8",
                   "training.max_steps=400", "checkpoint.every_n_steps=10"])]
    driver = subprocess.Popen(cmd, env=_env(), cwd=REPO, start_new_session=True,
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
    rerun = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    resumed = int(summary["resumed_from"].rsplit("_", 1)[1])
    assert summary["status"] == "completed" and summary["steps"] == 400
    assert 0 <= reached - resumed <= 10, (reached, resumed)  # at most one checkpoint interval redone
