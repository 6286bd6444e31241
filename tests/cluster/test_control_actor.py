"""The same client runs in-process without Ray (the actor's restarts: test_control_cluster.py)."""

from __future__ import annotations

import time

import pytest

from tengine import connect
from tengine.errors import Invalid

SHA = "cd" * 32


def _wait(fn, timeout: float = 60.0):
    deadline = time.time() + timeout
    while True:
        try:
            result = fn()
            if result:
                return result
        except Exception:  # noqa: BLE001 — the actor is restarting
            if time.time() > deadline:
                raise
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.3)


def test_in_process_client_needs_no_ray(tmp_path):
    client = connect(store_uri=f"sqlite:///{tmp_path}/c.db")
    assert client.where == "in-process"
    assert client.registry.register("m", artifact_uri="/a", sha256=SHA, size=1).version == 1
    with pytest.raises(Invalid, match="did you mean 'register'"):
        client.registry.regster("m")
