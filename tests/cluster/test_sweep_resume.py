"""A sweep driver SIGKILLed halfway, then the same command again: the sweep finishes with every
trial, and no trial that had completed is trained again. On a `ray start --head` cluster, so
the killed driver leaves nothing that the cluster's own `ray stop` does not end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import yaml

from tests.cluster.conftest import cluster_env
from tests.conftest import REPO

NUM = 6


def test_a_killed_sweep_driver_rerun_resumes_without_rerunning_completed_trials(ray_head, tmp_path):
    spec = {"name": "resume", "base": str(REPO / "configs/quickstart.yaml"),
            "root": str(tmp_path / "sweeps"), "num_samples": NUM, "max_concurrent": 2,
            "overrides": ["data.seq_len=32", "data.markov.num_tokens=40000",
                          "training.micro_batch_size=8", "training.max_steps=80",
                          "training.eval_every_n_steps=20", "training.eval_batches=4",
                          "checkpoint.every_n_steps=20", "logging.plots=false"],
            "space": {"optim.lr": {"loguniform": [1e-3, 1e-2]}},
            "resources": {"workers": 0, "cpus_per_worker": 1}}
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "tengine", "sweep", str(path), "--address", ray_head.address]
    trials = tmp_path / "sweeps" / "resume" / "trials"

    def completed() -> set[str]:
        return {d.name for d in trials.glob("*") if (d / "summary.json").is_file()
                and json.loads((d / "summary.json").read_text())["status"] == "completed"} \
            if trials.is_dir() else set()

    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, cwd=REPO, env=cluster_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while len(completed()) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    done_before = completed()
    assert 2 <= len(done_before) < NUM
    checkpointed = {d.name for d in trials.glob("*") if d.name not in done_before
                    and any((d / "checkpoints").glob("step_*/manifest.json"))}

    second = subprocess.run(cmd, cwd=REPO, env=cluster_env(), capture_output=True, text=True,
                            timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming" in second.stdout

    results = json.loads((tmp_path / "sweeps" / "resume" / "results.json").read_text())
    assert len(results["trials"]) == NUM == len(list(trials.glob("*")))
    assert all(r["status"] == "completed" and r["step"] == 80 for r in results["trials"])
    for name in done_before:  # trained once: one start, one run of 80 steps
        starts = (trials / name / "starts.jsonl").read_text().splitlines()
        assert len(starts) == 1, (name, starts)
    for name in checkpointed:  # an interrupted trial continued from its own newest checkpoint
        records = [json.loads(line) for line in (trials / name / "metrics.jsonl").read_text().splitlines()]
        assert any(r["split"] == "resume" for r in records), name
