"""Backends behind the Strategy seam, looked up by `distributed.backend`.

`single` (one device), `ddp` (Accelerate DDP) and `fsdp` (PyTorch FSDP2). The multi-process
ones are imported on first use (they pull in accelerate / torch.distributed.checkpoint).
"""

from __future__ import annotations

from tengine.backends.base import Strategy
from tengine.backends.precision import resolve_precision
from tengine.backends.single import SingleDeviceStrategy
from tengine.registry import Registry

BACKENDS: Registry = Registry("backend", "distributed.backend")
BACKENDS.register("single", SingleDeviceStrategy)


def _ddp(precision: str) -> Strategy:
    from tengine.backends.ddp import AccelerateDDPStrategy

    return AccelerateDDPStrategy(precision)


def _fsdp(precision: str) -> Strategy:
    from tengine.backends.fsdp import FSDP2Strategy

    return FSDP2Strategy(precision)


BACKENDS.register("ddp", _ddp)
BACKENDS.register("fsdp", _fsdp)


def build_strategy(cfg) -> Strategy:
    return BACKENDS.get(cfg.distributed.backend)(precision=cfg.precision)


__all__ = ["BACKENDS", "SingleDeviceStrategy", "Strategy", "build_strategy", "resolve_precision"]
