"""Fully sharded data parallel with PyTorch FSDP2 (`fully_shard`): parameters, gradients and
optimizer state are split across ranks; each rank holds about 1/world of them.

Shard units are chosen by block class, applied bottom-up, then the root: the classes named in
`distributed.fsdp.wrap`, else an HF model's `_no_split_modules` (its transformer blocks), else
the modules inside the model's `nn.ModuleList`s; a block's full parameters exist only during
its forward/backward. A named class that is not in the model is an error. bf16 uses a
MixedPrecisionPolicy (bf16 compute, fp32 gradient reduction and master weights); fp16 is refused
by preflight (FSDP2 has no sharded GradScaler here). Checkpoints use torch.distributed.checkpoint:
each rank writes its own shards, and loading reshards, so a run resumes on another world size.

Accelerate 1.15 silently ignores its FSDP plugin on CPU (measured: DistributedType.NO), so this
backend calls FSDP2 directly; it is the same `fully_shard` Accelerate's FSDP2 path wraps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from tengine.backends.precision import default_device, resolve_precision
from tengine.backends.process_group import ProcessGroupStrategy, ensure_process_group

log = logging.getLogger("tengine")


class FSDP2Strategy(ProcessGroupStrategy):
    name = "fsdp"

    def __init__(self, precision: str = "auto", wrap: list[str] | None = None):
        self.wrap = wrap
        self.rank, self.world_size, local_rank = ensure_process_group()
        self.device = default_device(local_rank)
        self.precision = resolve_precision(precision, self.device)
        if self.precision == "fp16":  # only via `auto` on a card without bf16 (T4, V100)
            log.warning("fsdp has no fp16 GradScaler here and this GPU has no bf16: using fp32")
            self.precision = "fp32"

    def prepare(self, model: nn.Module,
                make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]) -> nn.Module:
        model = model.to(self.device)
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if self.precision == "bf16" else MixedPrecisionPolicy()
        for block in shard_units(model, self.wrap):
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        self.model, self.optimizer = model, make_optimizer(model)
        return model

    def autocast(self) -> AbstractContextManager:
        return nullcontext()  # the MixedPrecisionPolicy casts parameters; no autocast needed

    @contextmanager
    def _no_grad_sync(self) -> Iterator[None]:
        self.model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)

    def accumulate(self, sync: bool) -> AbstractContextManager:
        return nullcontext() if sync else self._no_grad_sync()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm(self, max_norm: float | None) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm or float("inf"), foreach=True)
        return norm.full_tensor() if isinstance(norm, DTensor) else norm

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def skip_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(directory / "dcp"))
        if self.is_main:
            torch.save({"extra": extra}, directory / "extra.pt")

    def load(self, directory: Path) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(directory / "dcp"))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
        return torch.load(directory / "extra.pt", weights_only=True)["extra"]

    def shard_fractions(self) -> dict[str, float]:
        def share(tensors: list[torch.Tensor]) -> float:
            local = sum(t.to_local().numel() if isinstance(t, DTensor) else t.numel() for t in tensors)
            return local / max(1, sum(t.numel() for t in tensors))

        state = [t for s in self.optimizer.state.values() for t in s.values()
                 if torch.is_tensor(t) and t.ndim > 0]
        return {"params": share(list(self.model.parameters())), "optimizer": share(state)}


def shard_units(model: nn.Module, wrap: list[str] | None = None) -> list[nn.Module]:
    """The modules to shard on their own, innermost first (a unit inside another is sharded
    before it, as `fully_shard` requires)."""
    names = wrap if wrap is not None else sorted(getattr(model, "_no_split_modules", None) or [])
    if names:
        present = {type(m).__name__ for m in model.modules()}
        absent = [n for n in names if n not in present]
        if absent:
            from tengine.errors import ConfigError

            field = "distributed.fsdp.wrap" if wrap is not None else "the model's _no_split_modules"
            raise ConfigError(f"{field}: no module of class {', '.join(absent)} in "
                              f"{type(model).__name__}; classes with parameters there: "
                              f"{', '.join(sorted(_param_classes(model)))}")
        units = [m for m in model.modules() if type(m).__name__ in names and m is not model]
    else:
        units = [b for m in model.modules() if isinstance(m, nn.ModuleList) for b in m]
    depth = {id(m): n.count(".") + 1 for n, m in model.named_modules() if n}
    return sorted(units, key=lambda m: -depth[id(m)])  # deepest first: bottom-up


def _param_classes(model: nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules()
            if m is not model and not isinstance(m, nn.ModuleList | nn.ModuleDict)
            and any(True for _ in m.parameters())}
