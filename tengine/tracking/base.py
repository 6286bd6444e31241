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
    (naming the callback and the hook) and `inner` is off for the rest of the run. Tracking is
    worth less than the run it tracks."""

    def __init__(self, inner: Any, name: str):
        self.inner, self.name, self.failed = inner, name, False

    @property
    def state_key(self) -> str:
        return getattr(self.inner, "state_key", type(self.inner).__name__)

    def _call(self, hook: str, *args: Any) -> Any:
        if self.failed or not hasattr(self.inner, hook):
            return None
        try:
            return getattr(self.inner, hook)(*args)
        except Exception as err:  # noqa: BLE001 — any failure of a tracker is only a warning
            self.failed = True
            log.warning("%s failed in %s (%s: %s); it is off for the rest of this run, which "
                        "goes on", self.name, hook, type(err).__name__, err)
            return None

    def state_dict(self) -> dict:
        return self._call("state_dict") or {}

    def load_state_dict(self, state: dict) -> None:
        self._call("load_state_dict", state)


def _hook(name: str):
    def call(self: Guarded, *args: Any) -> None:
        self._call(name, *args)

    call.__name__ = name
    return call


for _name in HOOKS:
    setattr(Guarded, _name, _hook(_name))
