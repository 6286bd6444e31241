"""Alert rules with M-of-N patience and an ok → firing → resolved state machine.

    alerts = Alerts.from_config(cfg.monitoring.alerts, subject="runs/v1", sinks=sinks)
    alerts.observe({"split": "val", "step": 200, "val_loss": 3.1})   # → the events it sent
    alerts.observe({"kind": "drift", "status": "alert", ...})         # a drift report

A rule reads the records it understands (val records, train records, drift reports) and
decides whether its condition holds. It fires when the condition held in `patience` of its
last `window` observations; while it keeps holding nothing more is sent, except a `repeat`
every `repeat_after_s`; once fewer than `patience` of the window hold, one `resolved` is sent.
So a loss that stays high sends one alert, not one per evaluation. Every event has its own id
(a sink's retries resend the same one) and says the value, the threshold and the step.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tengine.registry import Registry

log = logging.getLogger("tengine")
RULES: Registry = Registry("alert rule", "monitoring.alerts.rules[].kind")


@dataclass
class Observation:
    holds: bool
    value: float | None
    threshold: float | None
    message: str


class Rule:
    """One condition; `check(record)` → an Observation, or None when the record says nothing
    about it. Its own memory (a best value) is in `state`, saved with the run's checkpoints."""

    default: float | None = None

    def __init__(self, threshold: float | None = None):
        self.threshold = self.default if threshold is None else threshold
        self.state: dict[str, Any] = {}

    def check(self, record: dict[str, Any]) -> Observation | None:
        raise NotImplementedError


@RULES.register("val_loss_spike")
class ValLossSpike(Rule):
    default = 0.2  # relative rise above the best val_loss so far

    def check(self, record):
        value = record.get("val_loss")
        if record.get("split") != "val" or value is None:
            return None
        if not math.isfinite(value):  # a NaN loss is the worst spike, and never the best
            return Observation(True, None, self.threshold, f"val_loss is {value}")
        best = self.state.get("best")
        self.state["best"] = value if best is None else min(best, value)
        rise = 0.0 if best is None or best <= 0 else value / best - 1
        shown = value if best is None else best
        return Observation(rise > self.threshold, round(rise, 6), self.threshold,
                           f"val_loss {value:.4g} is {rise:+.1%} from its best {shown:.4g}")


@RULES.register("accuracy_drop")
class AccuracyDrop(Rule):
    default = 0.05  # absolute drop below the best val_accuracy so far

    def check(self, record):
        value = record.get("val_accuracy")
        if record.get("split") != "val" or value is None:
            return None
        if not math.isfinite(value):
            return Observation(True, None, self.threshold, f"val_accuracy is {value}")
        best = self.state.get("best")
        self.state["best"] = value if best is None else max(best, value)
        drop = 0.0 if best is None else best - value
        return Observation(drop > self.threshold, round(drop, 6), self.threshold,
                           f"val_accuracy {value:.4f} is {drop:.4f} below its best "
                           f"{best if best is not None else value:.4f}")


@RULES.register("grad_norm")
class GradNorm(Rule):
    def check(self, record):
        value = record.get("grad_norm")
        if record.get("split") != "train" or value is None:
            return None
        holds = not math.isfinite(value) or value > self.threshold
        return Observation(holds, value, self.threshold,
                           f"gradient norm {value:.4g} (bound {self.threshold:.4g})")


@RULES.register("nonfinite")
class NonFinite(Rule):
    default = 0  # skipped steps since the last record

    def check(self, record):
        skipped = record.get("skipped_steps")
        if record.get("split") != "train" or skipped is None:
            return None
        new = skipped - self.state.get("seen", 0)
        self.state["seen"] = skipped
        return Observation(new > self.threshold, new, self.threshold,
                           f"{new} non-finite step(s) skipped since the last record "
                           f"({skipped} in all)")


@RULES.register("drift")
class Drift(Rule):
    """A drift report (`kind: drift`) at status alert (threshold ≤ the report's warn level:
    at warn too)."""

    def check(self, record):
        if record.get("kind") != "drift" or record.get("status") in (None, "insufficient"):
            return None
        warn_too = self.threshold is not None and \
            self.threshold <= record.get("settings", {}).get("warn", 0.1)
        holds = record["status"] == "alert" or (warn_too and record["status"] == "warn")
        worst = max((r for r in record.get("features", []) if r.get("value") is not None),
                    key=lambda r: r["value"], default=None)
        what = f"{worst['feature']} {worst['statistic']} {worst['value']}" if worst else "-"
        return Observation(holds, worst["value"] if worst else None,
                           record.get("settings", {}).get("alert"),
                           f"drift status {record['status']} (worst: {what})")


@dataclass
class RuleState:
    window: deque = field(default_factory=deque)
    firing: bool = False
    since: float | None = None  # when it began firing
    last_sent: float | None = None


@dataclass
class Alerts:
    """Rules, their states and the sinks events go to (`send(event)` each)."""

    rules: dict[str, tuple[Rule, int, int]]  # name → (rule, patience, window)
    sinks: list[Any]
    subject: str
    repeat_after_s: float = 3600.0
    clock: Callable[[], float] = time.time
    states: dict[str, RuleState] = field(default_factory=dict)

    @classmethod
    def from_config(cls, conf: Any, subject: str, sinks: list[Any],
                    clock: Callable[[], float] = time.time) -> Alerts:
        rules: dict[str, tuple[Rule, int, int]] = {}
        for i, r in enumerate(conf.rules):
            name = r.kind if r.kind not in rules else f"{r.kind}_{i}"
            rules[name] = (RULES.get(r.kind)(r.threshold), r.patience, r.window)
        return cls(rules, sinks, subject, conf.repeat_after_s, clock)

    def observe(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        for name, (rule, patience, window) in self.rules.items():
            obs = rule.check(record)
            if obs is None:
                continue
            st = self.states.setdefault(name, RuleState(deque(maxlen=window)))
            st.window.append(obs.holds)
            event = self._transition(name, st, obs, patience, record)
            if event is not None:
                events.append(event)
                self._send(event)
        return events

    def _transition(self, name: str, st: RuleState, obs: Observation, patience: int,
                    record: dict[str, Any]) -> dict[str, Any] | None:
        now, met = self.clock(), sum(st.window) >= patience
        if met and not st.firing:
            st.firing, st.since, st.last_sent = True, now, now
            return self._event(name, "firing", obs, record, now)
        last = now if st.last_sent is None else st.last_sent
        if met and self.repeat_after_s and now - last >= self.repeat_after_s:
            st.last_sent = now
            return self._event(name, "repeat", obs, record, now)
        if not met and st.firing:
            st.firing, st.last_sent = False, now
            return self._event(name, "resolved", obs, record, now, since=st.since)
        return None

    def _event(self, name: str, state: str, obs: Observation, record: dict[str, Any],
               now: float, since: float | None = None) -> dict[str, Any]:
        return {"id": uuid.uuid4().hex, "rule": name, "state": state, "subject": self.subject,
                "step": record.get("step"), "value": obs.value, "threshold": obs.threshold,
                "message": f"{self.subject}: {name} {state}: {obs.message}",
                "time": round(now, 3),
                **({"firing_since": round(since, 3)} if since is not None else {})}

    def _send(self, event: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.send(event)
            except Exception as err:  # noqa: BLE001 — one sink's failure is not the others'
                log.warning("alert sink %s failed (%s: %s); the alert went to the others",
                            type(sink).__name__, type(err).__name__, err)

    def close(self) -> None:
        for sink in self.sinks:
            if hasattr(sink, "close"):
                sink.close()

    # a resumed run goes on from the saved windows and best values (no second `firing`)
    def state_dict(self) -> dict[str, Any]:
        return {name: {"window": list(st.window), "firing": st.firing, "since": st.since,
                       "last_sent": st.last_sent, "rule": self.rules[name][0].state}
                for name, st in self.states.items() if name in self.rules}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, saved in state.items():
            if name not in self.rules:
                continue
            rule, _, window = self.rules[name]
            rule.state = dict(saved.get("rule", {}))
            self.states[name] = RuleState(deque(saved.get("window", []), maxlen=window),
                                          bool(saved.get("firing")), saved.get("since"),
                                          saved.get("last_sent"))
