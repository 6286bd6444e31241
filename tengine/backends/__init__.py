"""Backends behind the Strategy seam, looked up by `distributed.backend`.

`single` (one device), `ddp` (Accelerate DDP), `fsdp` (PyTorch FSDP2) and `deepspeed`
(ZeRO 1/2/3). Each registry entry is a factory taking the whole config; the multi-process ones
import their libraries on first use (accelerate, torch.distributed.checkpoint, deepspeed).
"""

from __future__ import annotations

from tengine.backends.base import Strategy
from tengine.backends.precision import resolve_precision
from tengine.backends.single import SingleDeviceStrategy
from tengine.registry import Registry

BACKENDS: Registry = Registry("backend", "distributed.backend")


@BACKENDS.register("single")
def _single(cfg) -> Strategy:
    return SingleDeviceStrategy(precision=cfg.precision)


@BACKENDS.register("ddp")
def _ddp(cfg) -> Strategy:
    from tengine.backends.ddp import AccelerateDDPStrategy

    return AccelerateDDPStrategy(cfg.precision, cfg.distributed.find_unused_parameters)


@BACKENDS.register("fsdp")
def _fsdp(cfg) -> Strategy:
    from tengine.backends.fsdp import FSDP2Strategy

    return FSDP2Strategy(cfg.precision, cfg.distributed.fsdp.wrap)


@BACKENDS.register("deepspeed")
def _deepspeed(cfg) -> Strategy:
    from tengine.backends.deepspeed import DeepSpeedStrategy

    return DeepSpeedStrategy(cfg)


def build_strategy(cfg) -> Strategy:
    return BACKENDS.get(cfg.distributed.backend)(cfg)


__all__ = ["BACKENDS", "SingleDeviceStrategy", "Strategy", "build_strategy", "resolve_precision"]
