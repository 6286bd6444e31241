"""`env.json`: versions, devices, the git commit and the environment variables a run used (for
reproducing it later). Secrets stay out: the command line and the variables are written with
secret-looking values as `***` (`tengine.redact`), since run dirs get copied and shared."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from tengine.redact import redact_argv, redact_env

PACKAGES = ("torch", "accelerate", "deepspeed", "ray", "numpy", "pydantic", "safetensors", "tengine")
# Variables that change what a run computes or how it is placed: threads, devices, collectives,
# seeds, the launcher's ranks, library modes (HF offline, W&B mode); not the whole environment.
ENV_PREFIXES = ("TENGINE_", "RAY_", "CUDA_", "NCCL_", "GLOO_", "TORCH_", "PYTORCH_", "TORCHELASTIC_",
                "CUBLAS_", "CUDNN_", "OMP_", "MKL_", "KMP_", "HF_", "TRANSFORMERS_", "TOKENIZERS_",
                "WANDB_", "ACCELERATE_", "DEEPSPEED_", "DS_")
ENV_NAMES = ("PYTHONHASHSEED", "PYTHONPATH", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK",
             "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")


def package_version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": {p: package_version(p) for p in PACKAGES},
        "cuda": torch.version.cuda if cuda else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"],
        "cpu_count": torch.get_num_threads(),
        "git_commit": _git_commit(Path.cwd()),
        "argv": redact_argv(sys.argv),
        "environment": relevant_environment(),
    }


def relevant_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables of ENV_PREFIXES/ENV_NAMES, sorted, secret-looking values as `***`."""
    env = os.environ if env is None else env
    kept = {k: v for k, v in env.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}
    return dict(sorted(redact_env(kept).items()))
