"""Alert rules and sinks: a persisting condition sends one alert (a repeat only after the
interval) and one `resolved`; M-of-N patience; the webhook retries with one event id and a
signature that verifies; what cannot be delivered lands in the dead-letter file."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading

import pytest

from tengine.config.schema import AlertRuleConfig, AlertsConfig, AlertSinkConfig
from tengine.monitoring.alerts import Alerts
from tengine.monitoring.sinks import WebhookSink, build_sinks


class Memory:
    def __init__(self):
        self.events = []

    def send(self, event):
        self.events.append(event)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _alerts(*rules, repeat_after_s=3600.0):
    conf = AlertsConfig(rules=list(rules), sinks=[], repeat_after_s=repeat_after_s)
    sink, clock = Memory(), Clock()
    return Alerts.from_config(conf, "run t", [sink], clock), sink, clock


def _val(step, loss):
    return {"split": "val", "step": step, "val_loss": loss}


def test_a_persisting_spike_sends_one_alert_a_repeat_after_the_interval_and_one_resolved():
    alerts, sink, clock = _alerts(AlertRuleConfig(kind="val_loss_spike"), repeat_after_s=600)
    alerts.observe(_val(100, 2.0))
    for step in range(200, 700, 100):  # 30 % above the best, five evaluations in a row
        alerts.observe(_val(step, 2.6))
        clock.now += 100
    assert [e["state"] for e in sink.events] == ["firing"]
    first = sink.events[0]
    assert (first["rule"], first["step"], first["threshold"]) == ("val_loss_spike", 200, 0.2)
    assert first["value"] == pytest.approx(0.3)
    clock.now = first["time"] + 600
    alerts.observe(_val(700, 2.6))  # 600 s after the first: one repeat
    alerts.observe(_val(800, 2.0))  # back to its best
    alerts.observe(_val(900, 2.0))
    assert [e["state"] for e in sink.events] == ["firing", "repeat", "resolved"]
    assert len({e["id"] for e in sink.events}) == 3  # each event its own id


def test_patience_fires_on_m_of_the_last_n_observations():
    alerts, sink, _ = _alerts(AlertRuleConfig(kind="grad_norm", threshold=5.0, patience=2,
                                              window=3))
    for step, norm in enumerate([9.0, 1.0, 1.0, 9.0, 1.0, 9.0], 1):
        alerts.observe({"split": "train", "step": step, "grad_norm": norm})
    assert [(e["state"], e["step"]) for e in sink.events] == [("firing", 6)]


def test_accuracy_drop_nonfinite_and_drift_rules():
    alerts, sink, _ = _alerts(AlertRuleConfig(kind="accuracy_drop"),
                              AlertRuleConfig(kind="nonfinite"), AlertRuleConfig(kind="drift"))
    alerts.observe({"split": "val", "step": 1, "val_accuracy": 0.90})
    alerts.observe({"split": "val", "step": 2, "val_accuracy": 0.88})  # within 0.05
    alerts.observe({"split": "val", "step": 3, "val_accuracy": 0.80})
    alerts.observe({"split": "train", "step": 4, "skipped_steps": 0})
    alerts.observe({"split": "train", "step": 5, "skipped_steps": 2})
    alerts.observe({"kind": "drift", "status": "insufficient", "features": []})  # says nothing
    alerts.observe({"kind": "drift", "status": "alert", "settings": {"alert": 0.2},
                    "features": [{"feature": "bigrams", "statistic": "js_distance",
                                  "value": 0.3}]})
    assert [(e["rule"], e["state"]) for e in sink.events] == [
        ("accuracy_drop", "firing"), ("nonfinite", "firing"), ("drift", "firing")]
    assert "bigrams js_distance 0.3" in sink.events[-1]["message"]


def test_a_resumed_run_keeps_its_firing_state_and_does_not_alert_again():
    rule = AlertRuleConfig(kind="val_loss_spike")
    alerts, sink, _ = _alerts(rule)
    alerts.observe(_val(1, 2.0))
    alerts.observe(_val(2, 3.0))
    saved = json.loads(json.dumps(alerts.state_dict()))  # as a checkpoint stores it
    resumed, sink2, _ = _alerts(rule)
    resumed.load_state_dict(saved)
    resumed.observe(_val(3, 3.0))  # still 50 % above the best it remembers
    assert [e["state"] for e in sink.events] == ["firing"] and sink2.events == []
    resumed.observe(_val(4, 2.0))
    assert [e["state"] for e in sink2.events] == ["resolved"]


class Receiver(http.server.BaseHTTPRequestHandler):
    """Answers the queued codes in order (then 200), recording what it was sent."""

    codes: list[int] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 — http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append({"headers": dict(self.headers), "body": body})
        code = type(self).codes.pop(0) if type(self).codes else 200
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.codes, Receiver.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", Receiver
    server.shutdown()
    server.server_close()


def _event(i="e1"):
    return {"id": i, "rule": "drift", "state": "firing", "subject": "s", "message": "m"}


def test_the_webhook_retries_503_twice_with_one_event_id_and_a_valid_signature(
        receiver, tmp_path, monkeypatch):
    url, handler = receiver
    handler.codes = [503, 503]
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    sink = WebhookSink(AlertSinkConfig(kind="webhook", url=url, secret_env="HOOK_SECRET",
                                       backoff_s=0.01), tmp_path)
    sink.send(_event("ev-42"))
    sink.close()  # waits for the delivery thread
    assert len(handler.seen) == 3
    assert {s["headers"]["X-Tengine-Event-Id"] for s in handler.seen} == {"ev-42"}
    for s in handler.seen:
        expected = "sha256=" + hmac.new(b"s3cret", s["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(s["headers"]["X-Tengine-Signature"], expected)
        assert json.loads(s["body"])["id"] == "ev-42"
    assert not (tmp_path / "alerts_dead_letter.jsonl").exists()


def test_an_undeliverable_alert_goes_to_the_dead_letter_file(receiver, tmp_path):
    url, handler = receiver
    handler.codes = [400]  # refused: not retried
    conf = AlertSinkConfig(kind="webhook", url=url, backoff_s=0.01, retries=2)
    result = WebhookSink(conf, tmp_path).deliver(_event("refused"))
    assert result == {"delivered": False, "error": "HTTP 400", "attempts": 1}
    handler.codes = [500, 502, 503]  # every retry fails
    assert WebhookSink(conf, tmp_path).deliver(_event("down"))["attempts"] == 3
    dead = [json.loads(x) for x in (tmp_path / "alerts_dead_letter.jsonl").read_text().splitlines()]
    assert [(d["event"]["id"], d["error"], d["attempts"]) for d in dead] == [
        ("refused", "HTTP 400", 1), ("down", "HTTP 503", 3)]
    assert "/hook" not in dead[0]["url"]  # a webhook's path can be its secret


def test_no_listener_is_retried_then_dead_lettered(tmp_path):
    conf = AlertSinkConfig(kind="webhook", url="http://127.0.0.1:9/x", backoff_s=0.0, retries=1,
                           timeout_s=2)
    result = WebhookSink(conf, tmp_path).deliver(_event())
    assert not result["delivered"] and result["attempts"] == 2


def test_the_jsonl_and_log_sinks(tmp_path, caplog):
    sinks = build_sinks([AlertSinkConfig(kind="log"), AlertSinkConfig(kind="jsonl")], tmp_path)
    for s in sinks:
        s.send(_event())
    assert json.loads((tmp_path / "alerts.jsonl").read_text())["id"] == "e1"
    assert "ALERT m" in caplog.text


def test_bad_sink_and_rule_configs_name_the_field(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from tengine.errors import ConfigError

    with pytest.raises(ValidationError, match="exactly one of url and url_env"):
        AlertSinkConfig(kind="webhook")
    with pytest.raises(ValidationError, match="needs a threshold"):
        AlertRuleConfig(kind="grad_norm")
    with pytest.raises(ValidationError, match="window 1 is below patience 2"):
        AlertRuleConfig(kind="drift", patience=2)
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    with pytest.raises(ConfigError, match="secret_env NO_SUCH_SECRET is not set"):
        WebhookSink(AlertSinkConfig(kind="webhook", url="http://x", secret_env="NO_SUCH_SECRET"),
                    tmp_path)


def test_a_webhook_sink_whose_variables_are_unset_fails_before_the_run(tmp_path, monkeypatch):
    from tengine.config import load_config
    from tengine.engine.run import preflight
    from tengine.errors import ConfigError
    from tests.conftest import REPO, TINY

    monkeypatch.delenv("NO_HOOK_URL", raising=False)
    cfg = load_config(REPO / "configs/quickstart.yaml", [
        *TINY, f"logging.root={tmp_path}",
        "monitoring.alerts.sinks=[{kind: webhook, url_env: NO_HOOK_URL}]"])
    with pytest.raises(ConfigError, match=r"monitoring.alerts.sinks\[0\].url_env: the "
                                          "environment variable NO_HOOK_URL is not set"):
        preflight(cfg)
    assert not (tmp_path / "t").exists()


def test_an_event_that_cannot_be_sent_is_dead_lettered_and_the_worker_goes_on(receiver, tmp_path):
    url, handler = receiver
    sink = WebhookSink(AlertSinkConfig(kind="webhook", url=url, backoff_s=0.01), tmp_path)
    sink.send({**_event("bad"), "value": object()})  # not JSON: deliver raises in the thread
    sink.send(_event("good"))
    sink.close()
    assert [json.loads(s["body"])["id"] for s in handler.seen] == ["good"]
    [dead] = [json.loads(x) for x in (tmp_path / "alerts_dead_letter.jsonl").read_text().splitlines()]
    assert dead["error"].startswith("TypeError") and dead["attempts"] == 0


def test_a_nan_loss_holds_the_spike_rule_and_never_becomes_the_best():
    alerts, sink, _ = _alerts(AlertRuleConfig(kind="val_loss_spike"))
    alerts.observe(_val(1, float("nan")))
    alerts.observe(_val(2, 2.0))
    assert [e["state"] for e in sink.events] == ["firing", "resolved"]
    assert alerts.rules["val_loss_spike"][0].state["best"] == 2.0
