"""Backends behind the Strategy seam, looked up by `distributed.backend`.

Only `single` exists today; `ddp`/`fsdp` (Accelerate) and `deepspeed` plug into `BACKENDS`.
"""

from __future__ import annotations

from tengine.backends.base import Strategy
from tengine.backends.precision import resolve_precision
from tengine.backends.single import SingleDeviceStrategy
from tengine.registry import Registry

BACKENDS: Registry = Registry("backend", "distributed.backend")
BACKENDS.register("single", SingleDeviceStrategy)


def build_strategy(cfg) -> Strategy:
    return BACKENDS.get(cfg.distributed.backend)(precision=cfg.precision)


__all__ = ["BACKENDS", "SingleDeviceStrategy", "Strategy", "build_strategy", "resolve_precision"]
