"""The DeepSpeed JSON config, generated from ours; ours stays the one source of truth.

A user JSON (`distributed.deepspeed_config`) may add DeepSpeed settings we do not model
(communication buckets, activation checkpointing, ...); where it sets something we do model
(micro-batch, accumulation, clipping, precision, ZeRO stage, offload) to a different value, that
is a config error naming both values, never a silent winner.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tengine.errors import ConfigError


def _ours(cfg) -> dict[str, Any]:
    d, t = cfg.distributed, cfg.training
    zero: dict[str, Any] = {"stage": d.zero_stage}
    if d.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if d.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    precision = cfg.precision
    return {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum_steps,
        "gradient_clipping": cfg.optim.grad_clip or 0.0,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # our AdamW, built with no-decay groups
        "steps_per_print": 2**31 - 1,  # we log; DeepSpeed stays quiet
    }


FIELD_OF = {  # DeepSpeed key → our config field, for conflict messages
    "train_micro_batch_size_per_gpu": "training.micro_batch_size",
    "gradient_accumulation_steps": "training.grad_accum_steps",
    "gradient_clipping": "optim.grad_clip",
    "bf16": "precision", "fp16": "precision",
    "zero_optimization.stage": "distributed.zero_stage",
    "zero_optimization.offload_optimizer": "distributed.offload_optimizer",
    "zero_optimization.offload_param": "distributed.offload_params",
}


def _conflicts(ours: dict, theirs: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in theirs.items():
        path = f"{prefix}{key}"
        if key not in ours:
            continue
        if isinstance(value, dict) and isinstance(ours[key], dict) and path not in FIELD_OF:
            out += _conflicts(ours[key], value, f"{path}.")
        elif value != ours[key] and path in FIELD_OF:
            out.append(f"distributed.deepspeed_config sets {path}={json.dumps(value)} but "
                       f"{FIELD_OF[path]} gives {json.dumps(ours[key])}; remove it from the JSON "
                       f"or set {FIELD_OF[path]}")
    return out


def deepspeed_config(cfg, precision: str | None = None) -> dict[str, Any]:
    """The full DeepSpeed config for `cfg` (`precision` = the resolved one, when known)."""
    if precision is not None:
        cfg = cfg.model_copy(update={"precision": precision})
    ours = _ours(cfg)
    path = cfg.distributed.deepspeed_config
    if not path:
        return ours
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"distributed.deepspeed_config: '{path}' does not exist")
    try:
        theirs = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"distributed.deepspeed_config: '{path}' is not valid JSON ({err.msg})") from None
    if cfg.precision == "auto":  # resolved per device later; compare on the settled value only
        theirs = {k: v for k, v in theirs.items() if k not in ("bf16", "fp16")}
    problems = _conflicts(ours, theirs)
    if problems:
        raise ConfigError(problems)
    merged = {**theirs, **ours}
    merged["zero_optimization"] = {**theirs.get("zero_optimization", {}), **ours["zero_optimization"]}
    return merged
