"""Precision choice: `auto` → bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU.

CPU autocast to bf16 works but is slower than fp32 on most CPUs without AMX, so `auto` keeps
fp32 there; ask for `bf16` explicitly to use it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from tengine.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision: 'bf16' is not supported on {torch.cuda.get_device_name(device)}; "
                              "use fp16 or auto")
        return requested
    if device.type == "cuda":
        # native bf16 only (compute capability >= 8.0): with its default including_emulation=True,
        # is_bf16_supported() says yes on a T4 (7.5), where bf16 is emulated and slow
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return "bf16" if native else "fp16"
    return "fp32"


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager:
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def default_device(local_rank: int = 0) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")
