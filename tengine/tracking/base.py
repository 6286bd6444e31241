"""`Guarded`: a tracker or a user's callback whose failures cannot fail the run."""

from __future__ import annotations

import logging
from typing import Any

from tengine.engine.callbacks import Callback

log = logging.getLogger("tengine")
HOOKS = ("on_fit_start", "on_step_end", "on_eval_end", "on_checkpoint_saved", "on_epoch_end",
         "on_fit_end")


class Guarded(Callback):
    """Calls `inner`'s hooks; the first exception from any of them is logged once as a warning
    (naming the callback and the hook) and `inner` is off for the rest of the run, except for
    `on_fit_end`, which it still gets (quietly) so it can close what it opened: a writer, a
    W&B run. Tracking is worth less than the run it tracks."""

    def __init__(self, inner: Any, name: str):
        self.inner, self.name, self.failed = inner, name, False

    @classmethod
    def make(cls, factory, name: str) -> Guarded | None:
        """`Guarded(factory(), name)`; None when the factory makes nothing (the `jsonl`
        tracker: the Reporter's file) or raises (after one warning)."""
        try:
            made = factory()
            return None if made is None else cls(made, name)
        except Exception as err:  # noqa: BLE001
            log.warning("%s could not be set up (%s: %s); this run goes on without it", name,
                        type(err).__name__, err)
            return None

    @property
    def state_key(self) -> str:
        try:
            return str(getattr(self.inner, "state_key", type(self.inner).__name__))
        except Exception:  # noqa: BLE001
            return type(self.inner).__name__

    def _call(self, hook: str, *args: Any, always: bool = False) -> Any:
        if (self.failed and not always) or not hasattr(self.inner, hook):
            return None
        try:
            return getattr(self.inner, hook)(*args)
        except Exception as err:  # noqa: BLE001 — any failure of a tracker is only a warning
            if not self.failed:
                log.warning("%s failed in %s (%s: %s); it is off for the rest of this run, "
                            "which goes on", self.name, hook, type(err).__name__, err)
            self.failed = True
            return None

    def on_fit_end(self, trainer, summary) -> None:
        self._call("on_fit_end", trainer, summary, always=True)

    def state_dict(self) -> dict:
        import json

        state = self._call("state_dict") or {}
        try:
            json.dumps(state)
        except (TypeError, ValueError) as err:
            log.warning("%s: its state is not JSON (%s); not saved with the checkpoint",
                        self.name, err)
            return {}
        return state

    def load_state_dict(self, state: dict) -> None:
        self._call("load_state_dict", state)


def _hook(name: str):
    def call(self: Guarded, *args: Any) -> None:
        self._call(name, *args)

    call.__name__ = name
    return call


for _name in HOOKS:
    if _name != "on_fit_end":
        setattr(Guarded, _name, _hook(_name))
