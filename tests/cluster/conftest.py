"""A local multi-process Ray cluster (`ray start --head`) for the tests that need one, as a
second driver would see it; stopped (`ray stop --force`) when the module's tests are done."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(**extra: str) -> dict:
    """The environment of a test cluster's processes (and of drivers started beside it): the
    test-only `sleep` job executor on (TENGINE_TEST_EXECUTORS, read by the runners in its
    actors), fast Ray Train health checks, no RAY_ADDRESS of the caller's."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
           "TENGINE_TEST_EXECUTORS": "1"}
    env.pop("RAY_ADDRESS", None)
    return {**env, **extra}


@dataclass
class Head:
    address: str  # GCS, for ray.init / --address
    dashboard: str  # http://…, for `ray job submit`


@pytest.fixture(scope="module")
def ray_head():
    gcs, dash = free_port(), free_port()
    start = subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=3",
                            "--include-dashboard=true", f"--dashboard-port={dash}",
                            "--disable-usage-stats"], env=cluster_env(), capture_output=True,
                           text=True, timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        yield Head(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}")
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=cluster_env(), capture_output=True,
                       timeout=120)
