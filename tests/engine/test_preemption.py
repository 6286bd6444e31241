"""Preemption: SIGTERM (or `training.max_time`) checkpoints at the step boundary, writes status
`preempted`, exits 75, and the same command resumes onto the uninterrupted run's curve."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tengine.cli import main
from tengine.errors import PREEMPTED_EXIT_CODE
from tests.conftest import REPO, TINY, read_jsonl

STEPS = 150
ARGS = [*TINY, f"training.max_steps={STEPS}", "training.grad_accum_steps=2",
        "model.name=tests.engine.helpers:slow_gpt", "data.markov.num_tokens=18000",
        "checkpoint.every_n_steps=50", "training.eval_every_n_steps=50"]


def _command(run_dir, *extra: str) -> list[str]:
    sets = [x for a in ARGS + list(extra) for x in ("--set", a)]
    return [sys.executable, "-m", "tengine", "train", str(REPO / "configs/quickstart.yaml"),
            "--run-dir", str(run_dir), *sets]


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["step_loss"] for r in read_jsonl(run_dir / "metrics.jsonl")}


def _wait_for_step(run_dir, step: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    metrics, end = run_dir / "metrics.jsonl", time.monotonic() + timeout_s
    while time.monotonic() < end:
        assert proc.poll() is None, "the run ended before it could be signalled"
        if metrics.is_file() and any(r["step"] >= step for r in read_jsonl(metrics)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout_s} s")


def test_sigterm_checkpoints_and_the_rerun_ends_on_the_uninterrupted_curve(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(_command(straight)[3:]) == 0
    proc = subprocess.Popen(_command(broken), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for_step(broken, 20, proc)  # not a checkpoint step: the stop must make its own
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, out[-2000:]
    summary = json.loads((broken / "summary.json").read_text())
    at = summary["steps"]
    assert summary["status"] == "preempted" and summary["stopped_by"] == "SIGTERM"
    assert 20 <= at < 50, at
    assert summary["last_checkpoint"].endswith(f"step_{at:08d}")
    assert "run the same command again" in out

    rerun = subprocess.run(_command(broken), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    resumed = json.loads((broken / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed_from"].endswith(f"step_{at:08d}")
    a, b = _losses(straight), _losses(broken)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    worst = max(abs(a[s] - b[s]) for s in a)
    assert worst <= 1e-6, worst


def test_max_time_ends_the_run_resumably(tmp_path):
    run_dir = tmp_path / "run"
    assert main(_command(run_dir, "training.max_time=2s")[3:]) == PREEMPTED_EXIT_CODE
    first = json.loads((run_dir / "summary.json").read_text())
    assert first["status"] == "preempted" and first["stopped_by"].startswith("training.max_time")
    assert 0 < first["steps"] < STEPS and first["last_checkpoint"].endswith(f"step_{first['steps']:08d}")
    assert main(_command(run_dir)[3:]) == 0  # the same run without the budget finishes
    done = json.loads((run_dir / "summary.json").read_text())
    assert done["status"] == "completed" and done["steps"] == STEPS
    assert done["resumed_from"].endswith(f"step_{first['steps']:08d}")
