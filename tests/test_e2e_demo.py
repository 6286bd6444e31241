"""`launch/e2e_demo.sh`, the production loop end to end, completes here and does what it says:
v1 trained on 2 Ray Train workers and registered as production, a bundle attached, drift on the
shifted data alerting a webhook (signed) and firing one retrain, v2 registered with v1 as its
parent, evaluated against v1 on the same data, and production moved only because it is better."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_e2e_demo_runs_the_production_loop(tmp_path):
    work = tmp_path / "e2e"
    env = {**os.environ, "E2E_DIR": str(work), "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}  # each report waits this long (STACK_NOTES)
    started = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "launch/e2e_demo.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert took < 600  # the bar: under 10 minutes here
    out = proc.stdout
    for n in range(1, 10):
        assert f"] {n}. " in out  # every step printed
    from tengine.control.plane import ControlPlane

    plane = ControlPlane(f"sqlite:///{work}/runs/control/tengine.db")
    try:
        v1, v2 = plane.registry.get("demo", 1), plane.registry.get("demo", 2)
        assert v2.parent_version == 1 and plane.registry.get("demo", "production").version == 2
        [decision] = plane.registry.promotions("demo")
        assert (decision["candidate"], decision["baseline"], decision["decision"]) == (2, 1, "promoted")
        assert decision["candidate_value"] < decision["baseline_value"]
        assert [b["uri"] for b in plane.registry.list_bundles("demo", 1)] == [str(work / "bundles/demo-v1")]
        [firing] = plane.triggers.firings("demo-balanced")
        assert [j.id for j in plane.jobs.list(type="retrain")] == [firing["job_id"]]
        assert v2.job_id == firing["job_id"] and v1.version == 1
    finally:
        plane.store.close()
    report = json.loads((work / "drift/report.json").read_text())
    assert report["status"] == "alert" and (work / "drift/drift.png").is_file()
    [event] = [json.loads(x) for x in (work / "webhook.jsonl").read_text().splitlines()]
    assert event["signature_ok"] and event["rule"] == "drift" and event["state"] == "firing"
    assert event["id"] == report["alerts"][0]["id"]
    final = out.split("] 9. ")[1]  # the lineage and the runs compared, by their params
    assert "v2" in final and re.search(r"data\.markov\.seed\s+1234\s+99", final)
