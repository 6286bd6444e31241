"""The Strategy seam: everything the Trainer needs from a device/parallelism backend.

A Strategy owns the model and optimizer after `prepare`, mixed precision (autocast and the
fp16 GradScaler), gradient sync, the optimizer step and the save/load of their state (sharded
where the backend shards). The Trainer never calls `.to(device)`, `.backward()` or `.step()`
itself, so the same loop runs on one CPU, DDP, FSDP or DeepSpeed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn


class Strategy(ABC):
    name: str = "abstract"
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    reshards: bool = True  # can load a checkpoint saved by another world size
    model: nn.Module
    optimizer: torch.optim.Optimizer

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @abstractmethod
    def prepare(self, model: nn.Module,
                make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]) -> nn.Module:
        """Move/wrap/shard the model, then build its optimizer (after sharding, so the optimizer
        sees the parameters it will own); returns the model to call in the loop."""

    @abstractmethod
    def autocast(self) -> AbstractContextManager:
        """Mixed-precision context for the forward pass and the loss."""

    @abstractmethod
    def accumulate(self, sync: bool) -> AbstractContextManager:
        """Context for one micro-batch; gradients are synchronised only when `sync` is True."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def clip_grad_norm(self, max_norm: float | None) -> torch.Tensor | None:
        """Unscale (fp16) and clip; returns the global grad norm as a device tensor (no sync),
        or None where the backend clips inside its own step."""

    @abstractmethod
    def optimizer_step(self) -> None:
        """Apply the accumulated gradients and zero them."""

    @abstractmethod
    def skip_step(self) -> None:
        """Drop the accumulated gradients without updating (non-finite step)."""

    @abstractmethod
    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        """Write model + optimizer (+ scaler) state and `extra` (tensors/JSON-like) under directory."""

    @abstractmethod
    def load(self, directory: Path) -> dict[str, Any]:
        """Restore what `save` wrote (weights_only); returns `extra`."""

    def unwrap(self) -> nn.Module:
        return self.model

    def compile_step(self, fn: Callable) -> Callable:
        """`compile: true`: compile forward + loss as one graph, so the loss (an fp32 softmax
        over the vocabulary) fuses with the model instead of materialising fp32 logits."""
        return torch.compile(fn)

    def grad_norm_after_step(self) -> float | None:
        """For backends that clip inside their step (DeepSpeed): the norm they measured."""
        return None

    def shard_fractions(self) -> dict[str, float]:
        """Share of the parameters and of the optimizer state this rank stores (1.0 = all)."""
        return {"params": 1.0, "optimizer": 1.0}

    def to_device(self, batch: dict) -> dict:
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=non_blocking) if torch.is_tensor(v) else v
                for k, v in batch.items()}

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        return None

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (a small picklable value)."""
        return obj

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (a small picklable value), in rank order, on every rank."""
        return [obj]

    def teardown(self) -> None:
        return None
