"""Monitoring in a run and from the command line: a run writes its data profile and the
reference batch, a persisting alert condition is one alert across a resume, and `tengine
drift` tells a different Markov source from the reference's own data (table, JSON, PNG,
an alert to a webhook, exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tengine.cli import main
from tengine.engine import run
from tests.conftest import REPO
from tests.monitoring.test_alerts import Receiver, receiver  # noqa: F401 — the fixture

QUICKSTART = str(REPO / "configs/quickstart.yaml")
DATA = ["--set", "data.markov.num_tokens=60000"]  # 1,687 train / 187 val examples of 32


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """A tiny run halted at step 10 and resumed to 20, with an alert that holds from step 1."""
    from tengine.config import load_config
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("mon")
    sets = [*TINY, f"logging.root={root}", "name=ref", "data.markov.num_tokens=60000",
            "training.max_steps=20", "checkpoint.every_n_steps=10", "logging.trackers=[jsonl]",
            "monitoring.alerts.rules=[{kind: grad_norm, threshold: 1.0e-9}]"]
    first = run(load_config(QUICKSTART, [*sets, "training.halt_at_step=10"]))
    assert first["status"] == "halted"
    second = run(load_config(QUICKSTART, sets))
    assert second["status"] == "completed"
    return Path(second["run_dir"])


def test_a_run_writes_its_profile_and_alerts_once_across_a_resume(reference_run):
    profile = json.loads((reference_run / "profile.json").read_text())
    assert profile["kind"] == "text" and profile["examples"] == 1687
    tokens = profile["features"]["tokens"]
    assert tokens["vocab_size"] == 16 and tokens["oov"] == 0
    assert sum(tokens["counts"]) + tokens["other"] == tokens["total"] == 1687 * 32 + 1
    with np.load(reference_run / "profile_batch.npz") as batch:
        assert batch["input_ids"].shape == (187, 32)  # every val example (< 256)
    # the trained model's outputs on that batch, at the step the run ended on
    outputs = profile["outputs"]
    assert outputs["step"] == 20 and len(outputs["entropy"]["values"]) == 187
    probs = outputs["mean_probs"]
    assert sum(probs["probs"]) + probs["other"] == pytest.approx(1.0, abs=1e-5)
    events = [json.loads(x) for x in (reference_run / "alerts.jsonl").read_text().splitlines()]
    assert [(e["rule"], e["state"], e["step"]) for e in events] == [("grad_norm", "firing", 1)]


def _drift(tmp_path, ref, *args, name="d"):
    return main(["drift", "--reference", str(ref), "--current", QUICKSTART, *DATA, *args,
                 "--out", str(tmp_path / name), "--alert-state", str(tmp_path / "state.json")])


def test_drift_tells_a_different_markov_source_and_alerts_a_webhook(reference_run, tmp_path,
                                                                  capsys, receiver):  # noqa: F811
    url, handler = receiver
    code = _drift(tmp_path, reference_run, "--set", "data.markov.seed=99", "--webhook", url,
                  "--fail-on", "alert", "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # --fail-on alert
    rows = {r["feature"]: r for r in report["features"]}
    assert report["status"] == "alert" and rows["bigrams"]["status"] == "alert"
    assert rows["bigrams"]["statistic"] == "js_distance" and rows["bigrams"]["base"] == 2
    # the model's outputs, on the run's reference batch and on the new data
    assert rows["output_entropy"]["statistic"] == "ks_2samp"
    assert rows["output_entropy"]["current_n"] == rows["output_entropy"]["reference_n"] == 187
    assert rows["output_mean_probs"]["value"] is not None
    assert (tmp_path / "d/drift.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "d/report.json").read_text())
    assert saved["status"] == "alert" and [a["rule"] for a in saved["alerts"]] == ["drift"]
    [sent] = handler.seen
    event = json.loads(sent["body"])
    assert event["rule"] == "drift" and event["state"] == "firing"
    assert sent["headers"]["X-Tengine-Event-Id"] == saved["alerts"][0]["id"]
    assert json.loads((tmp_path / "d/alerts.jsonl").read_text())["id"] == event["id"]
    # the same drift checked again: still firing, no second alert; then the data is back: resolved
    assert _drift(tmp_path, reference_run, "--set", "data.markov.seed=99", "--webhook", url,
                  name="again") == 0
    assert len(handler.seen) == 1 and not (tmp_path / "again/alerts.jsonl").exists()
    capsys.readouterr()
    assert _drift(tmp_path, reference_run, "--webhook", url, name="back") == 0
    assert [json.loads(s["body"])["state"] for s in handler.seen] == ["firing", "resolved"]


def test_drift_on_the_references_own_data_is_ok_and_prints_a_table(reference_run, tmp_path,
                                                                    capsys):
    assert _drift(tmp_path, reference_run, "--fail-on", "warn") == 0
    out = capsys.readouterr().out
    assert out.startswith("drift: OK")
    assert "bigrams" in out and "js_distance" in out and "thresholds: warn 0.1, alert 0.2" in out
    assert not (tmp_path / "d/alerts.jsonl").exists()


def test_drift_refuses_a_missing_reference_with_exit_2(tmp_path, capsys):
    assert _drift(tmp_path, tmp_path / "nope") == 2
    assert "does not exist; give a run dir, an export bundle or MODEL:ALIAS" in \
        capsys.readouterr().err
