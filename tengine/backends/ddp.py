"""Data parallel through HF Accelerate (DDP): every rank holds the whole model.

Gradients are all-reduced on the last micro-batch of a window only (`no_sync` before), the
fp16 GradScaler is Accelerate's, and checkpoints are the unsharded single-device format written
by rank 0, so a DDP run resumes on any number of workers (or on one process).
On CPU Accelerate needs `cpu=True`, or each worker silently trains alone (no gradient sync).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from tengine.backends.precision import default_device, resolve_precision
from tengine.backends.process_group import ProcessGroupStrategy, ensure_process_group
from tengine.backends.single import load_full_state, save_full_state

ACCELERATE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class AccelerateDDPStrategy(ProcessGroupStrategy):
    name = "ddp"

    def __init__(self, precision: str = "auto", find_unused_parameters: bool = False):
        from tengine.extras import require

        accelerate = require("accelerate", "ray", "distributed.backend 'ddp'")

        self.rank, self.world_size, local_rank = ensure_process_group()
        device = default_device(local_rank)
        self.precision = resolve_precision(precision, device)
        ddp = accelerate.DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
        self.accelerator = accelerate.Accelerator(
            cpu=device.type == "cpu", mixed_precision=ACCELERATE_PRECISION[self.precision],
            kwargs_handlers=[ddp])
        self.device = self.accelerator.device

    def prepare(self, model: nn.Module,
                make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]) -> nn.Module:
        model = model.to(self.device)
        self.model, self.optimizer = self.accelerator.prepare(model, make_optimizer(model))
        return self.model

    def autocast(self) -> AbstractContextManager:
        return self.accelerator.autocast()

    def accumulate(self, sync: bool) -> AbstractContextManager:
        return nullcontext() if sync else self.accelerator.no_sync(self.model)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip_grad_norm(self, max_norm: float | None) -> torch.Tensor:
        # max_norm=inf measures without clipping (the clip coefficient is capped at 1)
        return self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm or math.inf)

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def skip_step(self) -> None:
        if self.precision == "fp16":
            self.optimizer.step()  # the scaler sees the inf/NaN, skips, and lowers its scale
        self.optimizer.zero_grad(set_to_none=True)

    def unwrap(self) -> nn.Module:
        # Accelerate's unwrap_model imports deepspeed, when installed, only to rule out a
        # DeepSpeedEngine (~0.5 s of every worker's start); this backend wraps in DDP alone.
        from accelerate.utils import is_compiled_module

        model = self.model
        if is_compiled_module(model):  # a compiled wrapper: Accelerate's own handling
            return self.accelerator.unwrap_model(model)
        while isinstance(model, DistributedDataParallel | DataParallel):
            model = model.module
        return model

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        if self.is_main:  # replicas are identical: one copy
            scaler = self.accelerator.scaler.state_dict() if self.accelerator.scaler else {}
            save_full_state(directory, self.unwrap(), self.optimizer.optimizer, scaler, extra)

    def load(self, directory: Path) -> dict[str, Any]:
        scaler, extra = load_full_state(directory, self.unwrap(), self.optimizer.optimizer,
                                        self.device)
        if scaler and self.accelerator.scaler:
            self.accelerator.scaler.load_state_dict(scaler)
        return extra
