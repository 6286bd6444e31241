"""Where alerts go: the log, a JSONL file, a webhook, W&B (`monitoring.alerts.sinks`).

    sinks = build_sinks(cfg.monitoring.alerts.sinks, run_dir)
    for s in sinks: s.send(event)        # an event from tengine.monitoring.alerts
    for s in sinks: s.close()            # the webhook's queue delivered (or dead-lettered)

The webhook POSTs the event as JSON with `X-Tengine-Event-Id` (the event's id: the same on
every retry, so a receiver can drop duplicates) and, when `secret_env` names a key,
`X-Tengine-Signature: sha256=<HMAC-SHA256 of the body>`. 429, 5xx and no answer are retried
with a doubling backoff capped at `max_backoff_s` (a Retry-After header is honoured, capped too);
what is still undelivered after `retries` goes to the dead-letter file with the last error.
Delivery runs on a background thread, so a slow receiver never stalls training; `close` waits
for the queue at most one event's whole retry budget, then dead-letters what is left.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tengine.errors import ConfigError
from tengine.registry import Registry

log = logging.getLogger("tengine")
SINKS: Registry = Registry("alert sink", "monitoring.alerts.sinks[].kind")
ALERTS_FILE, DEAD_LETTER_FILE = "alerts.jsonl", "alerts_dead_letter.jsonl"
RETRY_STATUS = (429, 500, 502, 503, 504)


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record, default=repr) + "\n")  # an odd value must not lose it


@SINKS.register("log")
class LogSink:
    def __init__(self, conf: Any = None, run_dir: Path | None = None):
        pass

    def send(self, event: dict[str, Any]) -> None:
        level = logging.INFO if event["state"] == "resolved" else logging.WARNING
        log.log(level, "ALERT %s", event["message"])


@SINKS.register("jsonl")
class JsonlSink:
    def __init__(self, conf: Any, run_dir: Path | None):
        self.path = Path(conf.path) if conf.path else _default(run_dir, ALERTS_FILE, "path")

    def send(self, event: dict[str, Any]) -> None:
        _append(self.path, event)


def _default(run_dir: Path | None, name: str, field: str) -> Path:
    if run_dir is None:
        raise ConfigError(f"monitoring.alerts.sinks: a {field} is needed here (there is no run "
                          "dir to put it in)")
    return Path(run_dir) / name


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@SINKS.register("webhook")
class WebhookSink:
    def __init__(self, conf: Any, run_dir: Path | None):
        self.url = conf.url or os.environ.get(conf.url_env or "", "")
        if not self.url:
            raise ConfigError(f"monitoring.alerts.sinks: the webhook's url_env {conf.url_env} is "
                              "not set in this environment")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"monitoring.alerts.sinks: the webhook URL {_redacted(self.url)} "
                              "is not http:// or https://")
        self.secret = os.environ.get(conf.secret_env) if conf.secret_env else None
        if conf.secret_env and not self.secret:
            raise ConfigError(f"monitoring.alerts.sinks: secret_env {conf.secret_env} is not set; "
                              "set it, or leave secret_env out to send unsigned")
        self.conf = conf
        self.dead_letter = Path(conf.dead_letter) if conf.dead_letter else \
            _default(run_dir, DEAD_LETTER_FILE, "dead_letter")
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.sleep = time.sleep  # tests and callers may shorten the waits

    def send(self, event: dict[str, Any]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="tengine-webhook", daemon=True)
            self._thread.start()
        self._queue.put(event)

    def close(self, timeout_s: float | None = None) -> None:
        """Wait for the queue: at most `timeout_s` (default: one event's whole retry budget);
        what is still queued then goes to the dead-letter file, not lost."""
        if self._thread is None:
            return
        c = self.conf
        budget = timeout_s if timeout_s is not None else (c.retries + 1) * c.timeout_s + sum(
            min(c.backoff_s * 2 ** a, c.max_backoff_s) for a in range(c.retries))
        self._queue.put(None)
        self._thread.join(budget)
        if self._thread.is_alive():
            self._closing = True  # the worker dead-letters what it has not sent yet
            self._thread.join(c.timeout_s + 1)
        self._thread = None

    def _work(self) -> None:
        while (event := self._queue.get()) is not None:
            if self._closing:
                self._dead(event, "not sent: the run ended first", 0)
                continue
            try:
                self.deliver(event)
            except Exception as err:  # noqa: BLE001 — the thread must outlive one bad event
                self._dead(event, f"{type(err).__name__}: {err}", 0)

    def deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        """POST `event` until it is accepted or the retries run out (then: dead letter)."""
        body = json.dumps(event, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "X-Tengine-Event-Id": event["id"],
                   "User-Agent": "tengine-alerts"}
        if self.secret:
            headers["X-Tengine-Signature"] = signature(self.secret, body)
        error, c = "", self.conf
        for attempt in range(c.retries + 1):
            wait = min(c.backoff_s * 2 ** attempt, c.max_backoff_s)
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=c.timeout_s) as resp:
                    return {"delivered": True, "status": resp.status, "attempts": attempt + 1}
            except urllib.error.HTTPError as err:
                error = f"HTTP {err.code}"
                if err.code not in RETRY_STATUS:
                    break  # the receiver refused this event: retrying sends the same refusal
                after = err.headers.get("Retry-After") if err.headers else None
                if after and after.strip().isdigit():
                    wait = min(float(after), c.max_backoff_s)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                error = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            if attempt < c.retries:
                self.sleep(wait)
        self._dead(event, error, attempt + 1)
        return {"delivered": False, "error": error, "attempts": attempt + 1}

    def _dead(self, event: dict[str, Any], error: str, attempts: int) -> None:
        _append(self.dead_letter, {"event": event, "url": _redacted(self.url), "error": error,
                                   "attempts": attempts, "time": round(time.time(), 3)})
        log.warning("alert %s not delivered to the webhook after %d attempt(s) (%s); it is in "
                    "%s", event.get("id"), attempts, error, self.dead_letter)


def _redacted(url: str) -> str:
    """Scheme, host and port only: a webhook's path or query is often its secret."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/…"


@SINKS.register("wandb")
class WandbSink:
    """`wandb.alert` on the active W&B run (the wandb tracker's); without one, a warning once."""

    LEVELS = {"firing": "WARN", "repeat": "WARN", "resolved": "INFO"}

    def __init__(self, conf: Any = None, run_dir: Path | None = None):
        self.warned = False

    def send(self, event: dict[str, Any]) -> None:
        import wandb

        if wandb.run is None:
            if not self.warned:
                log.warning("alert sink wandb: no active W&B run (add wandb to "
                            "logging.trackers); alerts go to the other sinks")
                self.warned = True
            return
        wandb.alert(title=f"{event['rule']} {event['state']}", text=event["message"],
                    level=getattr(wandb.AlertLevel, self.LEVELS[event["state"]]),
                    wait_duration=0)


def build_sinks(confs: list[Any], run_dir: Path | None) -> list[Any]:
    return [SINKS.get(c.kind)(c, run_dir) for c in confs]
