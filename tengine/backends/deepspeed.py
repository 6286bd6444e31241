"""DeepSpeed ZeRO 1/2/3 (optional CPU offload), called through `deepspeed.initialize`.

Our loop keeps control of accumulation: it tells the engine which micro-batch ends a window
(`set_gradient_accumulation_boundary`), so a short last window works, and it scales each
micro-batch loss itself (`backward(scale_wrt_gas=False)`). Clipping and the fp16 loss scale are
DeepSpeed's (from our config); the gradient norm DeepSpeed computed in `step` is the one logged.
A non-finite step is DeepSpeed's to skip: a non-finite loss calls `engine.step()` anyway, whose
overflow check (NaN/inf gradient norm, every precision) applies nothing and clears the window's
buffers; a finite loss with non-finite gradients is caught the same way and reported through
the norm DeepSpeed returns (inf), so the Trainer counts it as skipped.

Checkpoints are DeepSpeed's own per-rank shards (`engine.save_checkpoint`) under our atomic,
hashed checkpoint dir; they are loaded by DeepSpeed (pickle, our own files, verified by sha256
first). A checkpoint written by another world size is resharded through DeepSpeed's universal
checkpoint: rank 0 converts it (`ds_to_universal`, fp32 weights and Adam moments per parameter)
into a hidden sibling of the checkpoint, every rank loads its new partition from there, and the
conversion is deleted. It costs one read and one write of the full fp32 training state.
Calling `deepspeed.initialize` directly avoids Accelerate's DeepSpeedPlugin, which is silently
ignored with `cpu=True` and needs `transformers` installed (STACK_NOTES.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tengine.backends.deepspeed_config import deepspeed_config
from tengine.backends.precision import default_device, resolve_precision
from tengine.backends.process_group import ProcessGroupStrategy, ensure_process_group

log = logging.getLogger("tengine")
TAG = "ds"


class DeepSpeedStrategy(ProcessGroupStrategy):
    name = "deepspeed"
    reshards = True  # through DeepSpeed's universal checkpoint (see `_load_resharded`)

    def __init__(self, cfg):
        from tengine.extras import require

        deepspeed = require("deepspeed", "deepspeed", "distributed.backend 'deepspeed'")

        self.rank, self.world_size, local_rank = ensure_process_group()
        self.device = default_device(local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")
        self.ds_config = deepspeed_config(cfg, self.precision)
        self.offload = cfg.distributed.offload_optimizer
        self.stage = cfg.distributed.zero_stage

    def prepare(self, model: nn.Module,
                make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]) -> nn.Module:
        import deepspeed

        optimizer = make_optimizer(model)
        if self.offload:  # optimizer state on the CPU needs DeepSpeed's CPU Adam (a C++ op)
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            defaults = optimizer.defaults
            optimizer = DeepSpeedCPUAdam(optimizer.param_groups, lr=defaults["lr"],
                                         betas=defaults["betas"], eps=defaults["eps"],
                                         adamw_mode=True)
        self.engine, self.zero_optimizer, _, _ = deepspeed.initialize(
            model=model.to(self.device), optimizer=optimizer, config=self.ds_config)
        # the LR schedule drives the wrapped torch optimizer: ZeRO steps it with its groups' lr
        self.model, self.optimizer = self.engine, optimizer
        return self.engine

    def autocast(self) -> AbstractContextManager:
        return nullcontext()  # DeepSpeed runs the module in bf16/fp16 itself

    @contextmanager
    def _window(self, boundary: bool) -> Iterator[None]:
        self.engine.set_gradient_accumulation_boundary(boundary)
        yield

    def accumulate(self, sync: bool) -> AbstractContextManager:
        return self._window(sync)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)

    def clip_grad_norm(self, max_norm: float | None) -> torch.Tensor | None:
        return None  # DeepSpeed clips inside step(); see grad_norm_after_step

    def grad_norm_after_step(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else None

    def optimizer_step(self) -> None:
        self.engine.step()

    def skip_step(self) -> None:
        # A non-finite window is dropped by DeepSpeed's own overflow path: engine.step() sees
        # the NaN/inf gradient norm, applies nothing and clears every buffer of the window (the
        # reduced gradient partitions, the CPU-offload accumulators, the micro-step count).
        # zero_grad() alone left the offloaded fp32 gradients in place for the next window to
        # add onto (measured: a ZeRO-2 offload run drifted 6e-3 from one process afterwards).
        self.engine.step()
        if self.engine.was_step_applied():
            log.warning("DeepSpeed applied a step whose loss was not finite: its gradients were "
                        "finite (an inf loss with finite gradients); the update was kept")

    def unwrap(self) -> nn.Module:
        return self.engine.module

    def compile_step(self, fn: Callable) -> Callable:
        self.engine.compile()  # DeepSpeed's supported path: it compiles its module in place
        return fn

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        self.engine.save_checkpoint(str(directory), tag=TAG, client_state={"extra": extra},
                                    save_latest=False)

    def load(self, directory: Path) -> dict[str, Any]:
        if _saved_world_size(directory) != self.world_size:
            return self._load_resharded(directory)
        _, client = self.engine.load_checkpoint(str(directory), tag=TAG)
        if client is None:
            raise FileNotFoundError(f"{directory}: no DeepSpeed checkpoint for this world size")
        return client["extra"]

    def _load_resharded(self, directory: Path) -> dict[str, Any]:
        import shutil
        import tempfile
        from argparse import Namespace

        from deepspeed.checkpoint.ds_to_universal import main as to_universal

        made: tuple[str | None, str | None] = (None, None)  # (universal dir, error)
        if self.is_main:
            try:
                # one rank: a private temp dir (the checkpoint's own dir may be read-only);
                # more: a unique sibling, on the storage every rank sees
                out = tempfile.mkdtemp(prefix=f".universal-{directory.name}-",
                                       dir=None if self.world_size == 1 else directory.parent)
                # one process, no pool: this may itself run inside a worker process
                to_universal(Namespace(input_folder=str(directory / TAG), output_folder=f"{out}/{TAG}",
                                       num_extract_workers=1, num_merge_workers=1,
                                       keep_temp_folder=False, strict=True, inject_missing_state=True))
                made = (out, None)
            except Exception as err:  # noqa: BLE001 — the other ranks must hear of it
                made = (None, f"{type(err).__name__}: {err}")
        out, error = self.broadcast(made)
        if error:
            raise RuntimeError(f"converting {directory} to DeepSpeed's universal checkpoint "
                               f"failed: {error}")
        universal = Path(out)
        # DeepSpeed reads this flag from its config at load time; it has no load argument for it
        self.engine._config.load_universal_checkpoint = True
        try:
            _, client = self.engine.load_checkpoint(str(universal), tag=TAG)
        finally:
            self.engine._config.load_universal_checkpoint = False
        self.barrier()
        if self.is_main:
            shutil.rmtree(universal, ignore_errors=True)
        if client is None:
            raise FileNotFoundError(f"{universal}: DeepSpeed found no universal checkpoint")
        return client["extra"]

    def shard_fractions(self) -> dict[str, float]:
        params = list(self.engine.module.parameters())
        total = sum(getattr(p, "ds_numel", p.numel()) for p in params)
        local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
        opt = self.zero_optimizer
        flat = getattr(opt, "single_partition_of_fp32_groups", None)  # ZeRO 1/2
        if flat is None:
            flat = getattr(opt, "fp32_partitioned_groups_flat", [])  # ZeRO 3
        return {"params": local / total, "optimizer": sum(t.numel() for t in flat) / total}


def _saved_world_size(directory: Path) -> int:
    """How many data-parallel ranks wrote the checkpoint: one optimizer shard file each."""
    return len(list((directory / TAG).glob("*optim_states.pt")))
