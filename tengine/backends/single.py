"""One process, one device (CPU, one GPU, a Colab notebook). No process group.

fp16 uses a GradScaler (loss scaled before backward, unscaled before clipping, a step with
inf/NaN gradients skipped by the scaler and the scale lowered); bf16 and fp32 need none.
Checkpoint layout: `model.safetensors` (tied weights stored once) and `optim.pt`
(optimizer, scaler and the caller's `extra`, loaded with weights_only=True).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from tengine.backends.base import Strategy
from tengine.backends.precision import autocast_context, default_device, resolve_precision


class SingleDeviceStrategy(Strategy):
    name = "single"

    def __init__(self, precision: str = "auto", device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.precision = resolve_precision(precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def prepare(self, model: nn.Module,
                make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]) -> nn.Module:
        self.model = model.to(self.device)
        self.optimizer = make_optimizer(self.model)
        return self.model

    def autocast(self) -> AbstractContextManager:
        return autocast_context(self.precision, self.device)

    def accumulate(self, sync: bool) -> AbstractContextManager:
        return nullcontext()  # nothing to synchronise on one device

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def clip_grad_norm(self, max_norm: float | None) -> torch.Tensor:
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if max_norm is None:  # still measured: the monitor needs the norm
            return torch.nn.utils.get_total_norm([p.grad for p in params])
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

    def optimizer_step(self) -> None:
        self.scaler.step(self.optimizer)  # skips by itself if fp16 grads overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def skip_step(self) -> None:
        if self.scaler.is_enabled():
            self.scaler.update()  # lowers the scale after an overflow
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        save_full_state(directory, self.unwrap(), self.optimizer, self.scaler.state_dict(), extra)

    def load(self, directory: Path) -> dict[str, Any]:
        scaler, extra = load_full_state(directory, self.unwrap(), self.optimizer, self.device)
        if scaler:
            self.scaler.load_state_dict(scaler)
        return extra


def save_full_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: dict, extra: dict[str, Any]) -> None:
    """Unsharded state: `model.safetensors` (tied weights once) + `optim.pt`. Independent of the
    world size, so a run saved by N replicas resumes on M."""
    save_model(model, str(directory / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler, "extra": extra},
               directory / "optim.pt")


def load_full_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device) -> tuple[dict, dict[str, Any]]:
    """Load what `save_full_state` wrote (weights_only); returns (scaler state, extra)."""
    target = str(device) if device.type == "cuda" else device.type  # safetensors rejects "cpu:0"
    load_model(model, str(directory / "model.safetensors"), strict=True, device=target)
    state = torch.load(directory / "optim.pt", map_location=target, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    return state["scaler"], state["extra"]
