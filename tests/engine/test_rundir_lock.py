"""One owner per run dir: a second `tengine train` on a run dir in use fails at once naming the
holder and leaves the first run alone; once the holder is dead (even SIGKILLed) the next run
takes the dir; the Ray Train driver refuses a busy dir before it starts Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tengine.engine.rundir_lock import hold_run_dir, lock_file
from tests.conftest import REPO, TINY, read_jsonl

SLOW = [*TINY, "model.name=tests.engine.helpers:slow_gpt", "data.markov.num_tokens=18000"]


def _train(run_dir, *sets: str) -> list[str]:
    return [sys.executable, "-m", "tengine", "train", str(REPO / "configs/quickstart.yaml"),
            "--run-dir", str(run_dir), *[x for s in [*SLOW, *sets] for x in ("--set", s)]]


def _steps(run_dir) -> list[int]:
    metrics = run_dir / "metrics.jsonl"
    return [r["step"] for r in read_jsonl(metrics)] if metrics.is_file() else []


def _wait_for_step(run_dir, step: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        if any(s >= step for s in _steps(run_dir)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout_s} s")


def test_holding_is_exclusive_across_processes_and_reentrant_within_one(tmp_path):
    run_dir = tmp_path / "run"
    probe = ("import sys\nfrom tengine.engine.rundir_lock import hold_run_dir\n"
             "try:\n    with hold_run_dir(sys.argv[1]):\n        print('took it')\n"
             "except Exception as err:\n    print(type(err).__name__, err)\n")
    with hold_run_dir(run_dir) as path:
        with hold_run_dir(run_dir):  # a trial that drives a fit: the same process holds it again
            pass
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and path == lock_file(run_dir)
        other = subprocess.run([sys.executable, "-c", probe, str(run_dir)], capture_output=True,
                               text=True, timeout=60)
        assert other.stdout.startswith(f"RunDirBusy run dir {run_dir} is in use by pid {os.getpid()}")
    assert not path.exists()  # released: the next owner starts from a new file
    again = subprocess.run([sys.executable, "-c", probe, str(run_dir)], capture_output=True,
                           text=True, timeout=60)
    assert again.stdout.strip() == "took it", again.stderr[-2000:]


def test_a_second_run_fails_at_once_and_a_dead_holders_dir_is_taken(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(_train(run_dir, "training.max_steps=100000"), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_step(run_dir, 3, first)
        holder = json.loads(lock_file(run_dir).read_text())
        assert holder["pid"] == first.pid and "train" in holder["argv"]
        t0 = time.monotonic()
        second = subprocess.run(_train(run_dir, "training.max_steps=5"), cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
        assert second.returncode == 1, second.stderr[-2000:]
        assert f"run dir {run_dir} is in use by pid {first.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr and took < 15, took
        # the first run goes on in its own dir: nothing moved aside, its steps keep coming
        seen = max(_steps(run_dir))
        _wait_for_step(run_dir, seen + 3, first)
        assert not list(tmp_path.glob("run-*")) and first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: the kernel releases it
        first.communicate()
    steps = _steps(run_dir)
    assert steps == list(range(1, len(steps) + 1))  # one writer: no step twice, none missing
    third = subprocess.run(_train(run_dir, "training.max_steps=5"), cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-2000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert len(list(tmp_path.glob("run-*"))) == 1  # the killed run, moved aside by the fresh start
    assert not lock_file(run_dir).exists()


def test_the_ray_train_driver_refuses_a_busy_run_dir_before_starting_ray(tmp_path):
    run_dir = tmp_path / "run"
    with hold_run_dir(run_dir):
        t0 = time.monotonic()
        out = subprocess.run(_train(run_dir, "distributed.workers=2", "distributed.backend=ddp"),
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and f"is in use by pid {os.getpid()}" in out.stderr, out.stderr[-2000:]
    assert time.monotonic() - t0 < 15
    assert not run_dir.exists()


def test_under_torchrun_rank_0_holds_it_and_a_busy_dir_fails_every_rank(tmp_path):
    """Rank 0 alone takes the lock and tells the other ranks (one broadcast): a busy dir ends the
    whole group at once, with no rank left waiting for rank 0 in a collective."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *_train(run_dir, "distributed.backend=ddp")[1:]]
    with hold_run_dir(run_dir):
        t0 = time.monotonic()
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
    assert out.returncode != 0 and took < 30, (took, out.stderr[-2000:])
    said = f"tengine: error: run dir {run_dir} is in use by pid {os.getpid()}"
    assert out.stderr.count(said) == 2, out.stderr[-3000:]  # each rank says why it stopped
    assert not run_dir.exists()
