"""Ending a run early but resumably: SIGTERM (a cluster taking the node) or `training.max_time`.

    stop = StopRequest(max_time_s=3 * 3600)
    stop.install()            # SIGTERM now only sets a flag
    ... if stop.requested: checkpoint at this step boundary, summary status "preempted", exit
    stop.uninstall()

The signal handler does no work (a checkpoint written from inside a handler could tear a
collective or a half-done step); the Trainer checks the flag once per step. A second SIGTERM
gets the previous handler (by default: the process ends at once). Handlers can only be set in
the main thread; elsewhere (a Ray Train worker's training thread) only `max_time` applies, and
Ray's own fault tolerance restarts killed workers from their last checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time

log = logging.getLogger("tengine")

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> float:
    """'90s', '45m', '3h', '1.5d' → seconds (the schema checks the form)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 45m, 3h, 1d)")
    return float(match.group(1)) * UNITS[match.group(2)]


class StopRequest:
    def __init__(self, max_time: str | None = None):
        self.budget_s = duration_s(max_time) if max_time else None
        self.deadline = time.monotonic() + self.budget_s if self.budget_s else None
        self.signal: int | None = None
        self._previous = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame) -> None:
        if self.signal is not None:  # asked twice: stop waiting for the step boundary
            self.uninstall()
            os.kill(os.getpid(), signum)
            return
        self.signal = signum
        log.warning("SIGTERM: checkpointing at the end of this step, then exiting (send it "
                    "again to exit at once)")

    @property
    def requested(self) -> bool:
        return self.signal is not None or (self.deadline is not None and time.monotonic() >= self.deadline)

    def reason(self) -> str:
        if self.signal is not None:
            return "SIGTERM"
        return f"training.max_time ({self.budget_s:g} s) reached"
