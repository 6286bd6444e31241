"""A Ray address with no cluster behind it fails in seconds, naming the address and how to start
a cluster, for every command that joins one (no cluster is started here, nor left running)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO

ADDRESS = "127.0.0.1:1"  # nothing listens on port 1


def _sweep_file(tmp_path) -> str:
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump({
        "name": "lr", "base": str(REPO / "configs/quickstart.yaml"), "root": str(tmp_path / "sweeps"),
        "space": {"optim.lr": {"grid": [1e-3, 1e-2]}}, "search": {"name": "grid"},
        "resources": {"workers": 0}}))
    return str(path)


@pytest.mark.parametrize("command", [
    ["train", "configs/quickstart.yaml", "--address", ADDRESS],  # 2 Ray Train workers
    ["jobs", "list", "--address", ADDRESS],
    ["control", "stop", "--address", ADDRESS],
    ["sweep", "SWEEP", "--dry-run", "--address", ADDRESS],
    ["registry", "list", "--address", ADDRESS],
    ["jobs", "list", "RAY_ADDRESS"],
], ids=["train", "jobs", "control-stop", "sweep-dry-run", "registry", "RAY_ADDRESS"])
def test_an_unreachable_address_fails_within_15_s_naming_it(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if command[-1] == "RAY_ADDRESS":
        command, env["RAY_ADDRESS"] = command[:-1], ADDRESS
    command = [_sweep_file(tmp_path) if c == "SWEEP" else c for c in command]
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "tengine", *command, *(
        ["--set", f"logging.root={tmp_path}/runs"] if command[0] == "train" else [])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert out.returncode == 2 and took < 15, (took, out.stderr[-2000:])
    said = "RAY_ADDRESS=" if "RAY_ADDRESS" in env else "--address "
    assert f"tengine: error: cannot reach the Ray cluster of {said}{ADDRESS}: connection refused" \
        in out.stderr, out.stderr[-2000:]
    assert "`ray start --head`" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "quickstart" / "metrics.jsonl").exists()
