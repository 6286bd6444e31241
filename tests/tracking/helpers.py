"""Test callbacks: one that raises in every hook."""

from __future__ import annotations


class Exploding:
    """A tracker that fails on every call it gets."""

    calls = 0

    def _boom(self, *args) -> None:
        type(self).calls += 1
        raise RuntimeError("tracker backend unreachable")

    on_fit_start = on_step_end = on_eval_end = on_checkpoint_saved = on_epoch_end = _boom
    on_fit_end = state_dict = _boom


class Unbuildable:
    """A callback whose constructor fails (its backend is down at start)."""

    def __init__(self) -> None:
        raise ConnectionError("metrics server refused the connection")
