"""Gradient health: the global norm once per step, non-finite steps skipped and counted.

The loss and the norm are read in one host sync per optimizer step (`torch.stack(...).tolist()`),
never per parameter. A non-finite step is skipped (no update); `max_consecutive` of them in a
row raise `NonFiniteError` before anything is saved, so the last good checkpoint stays as it is.
Under fp16 the GradScaler owns overflow: an inf gradient with a finite loss is the scaler
probing its scale, counted as `overflow_steps`, not a strike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tengine.errors import NonFiniteError


@dataclass
class StepHealth:
    loss: float
    grad_norm: float | None
    ok: bool


class GradientMonitor:
    def __init__(self, max_consecutive: int = 3, scaled: bool = False):
        self.max_consecutive, self.scaled = max_consecutive, scaled
        self.consecutive = 0
        self.skipped_steps = 0
        self.overflow_steps = 0

    def observe(self, loss: torch.Tensor, grad_norm: torch.Tensor | None, step: int) -> StepHealth:
        """`grad_norm` None: the backend clips in its own step; only the loss is checked here."""
        if grad_norm is None:
            loss_v, norm_v = loss.detach().float().item(), 0.0
        else:
            loss_v, norm_v = torch.stack([loss.detach().float(), grad_norm.detach().float()]).tolist()
        loss_ok, norm_ok = math.isfinite(loss_v), math.isfinite(norm_v)
        if loss_ok and not norm_ok and self.scaled:
            self.overflow_steps += 1
            return StepHealth(loss_v, norm_v, ok=False)
        if loss_ok and norm_ok:
            self.consecutive = 0
            return StepHealth(loss_v, norm_v, ok=True)
        self._strike(step, f"loss={loss_v}, grad_norm={norm_v}")
        return StepHealth(loss_v, norm_v, ok=False)

    def _strike(self, step: int, values: str) -> None:
        """Count a skipped non-finite step; `max_consecutive` in a row raise."""
        self.consecutive += 1
        self.skipped_steps += 1
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(
                f"step {step}: {self.consecutive} consecutive non-finite steps ({values}); "
                "stopped without saving, the last good checkpoint is kept. Lower optim.lr, set "
                "optim.grad_clip, or use precision fp32/bf16 to find the cause.")

    def after_step(self, health: StepHealth, grad_norm: float | None, step: int) -> StepHealth:
        """A backend that measures the norm inside its own step (DeepSpeed) and skipped the
        update for a non-finite one: count it like a step skipped here."""
        health.grad_norm = grad_norm
        if grad_norm is None or math.isfinite(grad_norm):
            return health
        health.ok = False
        if self.scaled:  # the loss scaler probing its scale, not a strike
            self.overflow_steps += 1
        else:
            self._strike(step, f"loss={health.loss}, grad_norm={grad_norm}")
        return health

    def state_dict(self) -> dict:
        return {"consecutive": self.consecutive, "skipped_steps": self.skipped_steps,
                "overflow_steps": self.overflow_steps}

    def load_state_dict(self, state: dict) -> None:
        self.consecutive = state["consecutive"]
        self.skipped_steps = state["skipped_steps"]
        self.overflow_steps = state["overflow_steps"]
