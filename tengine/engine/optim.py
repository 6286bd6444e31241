"""AdamW with no-decay groups, and warmup + cosine/linear/constant schedules.

Biases, norm weights and embeddings (including a tied LM head) are not decayed: decaying them
hurts quality and buys no regularisation. Fused AdamW (one kernel for all parameters) is used on
CUDA when `optim.fused` is auto/on.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from tengine.config.schema import OptimConfig, ScheduleConfig

NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d,
                    nn.BatchNorm3d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    no_decay: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, NO_DECAY_MODULES) or p.ndim < 2 or name.endswith("bias"):
                no_decay.add(id(p))
    params = [p for p in model.parameters() if p.requires_grad]  # unique: tied weights once
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay,
         "decayed": True},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0, "decayed": False},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = cfg.fused == "on" or (cfg.fused == "auto" and device.type == "cuda")
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                             eps=cfg.eps, fused=fused or None)


def lr_factor(step: int, total: int, cfg: ScheduleConfig) -> float:
    """LR multiplier for the update made at 0-based `step` of `total`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    floor = cfg.min_lr_ratio
    if cfg.name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.name == "linear":
        return 1 - (1 - floor) * progress
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, cfg))


def apply_hyperparameters(optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
                          cfg: OptimConfig) -> None:
    """Make the optimizer and schedule use `cfg`'s hyperparameters after a restore.

    Loading an optimizer's state dict also loads the lr, betas, eps and weight decay it was saved
    with, and the schedule's base lr: a run that resumes another run's checkpoint with a new
    config (a PBT exploit, a `--set optim.lr=…` resume) would silently train with the old values.
    The config is the source of truth for hyperparameters; the checkpoint only for state (weights,
    moments, step). With the config the checkpoint was saved with this changes nothing."""
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]
    for i, group in enumerate(optimizer.param_groups):
        group["initial_lr"], group["lr"] = cfg.lr, cfg.lr * factor
        group["betas"], group["eps"] = tuple(cfg.betas), cfg.eps
        if group.get("decayed", i == 0):  # the no-decay group (second) stays at 0
            group["weight_decay"] = cfg.weight_decay
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
