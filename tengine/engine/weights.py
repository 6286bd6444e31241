"""Model weights from anything tengine or Hugging Face saved, as one CPU state dict.

    state = load_weights("runs/x/checkpoints/step_00001000")   # any backend, any world size
    init_from(model, "runs/base/hf", strict=True)               # `model.init_from`

Formats (a registry, detected from the files; add one with `WEIGHT_FORMATS.register`):
- `safetensors`: a `.safetensors` file;
- `hf`: a `save_pretrained` directory (`model.safetensors`, its sharded index, or
  `pytorch_model.bin`);
- `tengine`: a checkpoint dir (has `manifest.json`) of the `single`/`ddp` backends
  (`model.safetensors`), `fsdp` (torch.distributed.checkpoint shards: read in this process,
  only the model's entries) or `deepspeed` (ZeRO shards of any stage, consolidated to fp32 by
  DeepSpeed's own `zero_to_fp32`). Weights only: no step, optimizer or schedule.

Tied weights (an LM head sharing the embedding) are saved once; a key the model ties to one
that was loaded is not reported missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tengine.backends.deepspeed import TAG as DEEPSPEED_TAG  # imports no deepspeed
from tengine.engine.checkpoint import MANIFEST
from tengine.errors import ConfigError, ModelError
from tengine.registry import Registry

log = logging.getLogger("tengine")

StateDict = dict[str, torch.Tensor]
WEIGHT_FORMATS: Registry = Registry("weights format", "model.init_from")


def _detect(path: Path) -> str:
    if path.is_file() and path.suffix == ".safetensors":
        return "safetensors"
    if path.is_dir() and (path / MANIFEST).is_file():
        if (path / "model.safetensors").is_file():
            return "tengine_full"
        if (path / "dcp").is_dir():
            return "tengine_fsdp"
        if (path / DEEPSPEED_TAG).is_dir():
            return "tengine_deepspeed"
    if path.is_dir() and any((path / f).is_file() for f in (
            "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")):
        return "hf"
    what = "does not exist" if not path.exists() else "holds no weights tengine can read"
    raise ConfigError(f"model.init_from: '{path}' {what}; give a .safetensors file, a Hugging "
                      "Face save_pretrained directory or a tengine checkpoint (step_XXXXXXXX)")


def check_weights_path(path: str) -> None:
    """Preflight: the path is there and in a known format (nothing is read)."""
    _detect(Path(path))


def load_weights(path: str | Path) -> StateDict:
    """The state dict saved at `path`; a tengine checkpoint or registry artifact is verified
    against its manifest first (a flipped byte is refused, never loaded)."""
    path = Path(path)
    fmt = _detect(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        from tengine.files import verify_artifact

        verify_artifact(path)
    elif path.is_file() and (path.parent / MANIFEST).is_file():  # a file of a checkpoint/artifact
        from tengine.files import verify_artifact

        verify_artifact(path.parent)
    return WEIGHT_FORMATS.get(fmt)(path)


@WEIGHT_FORMATS.register("safetensors")
def _safetensors(path: Path) -> StateDict:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


WEIGHT_FORMATS.register("tengine_full", lambda path: _safetensors(path / "model.safetensors"))


@WEIGHT_FORMATS.register("hf")
def _hf_dir(path: Path) -> StateDict:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in _safetensors(path / shard).items()}
    if (path / "model.safetensors").is_file():
        return _safetensors(path / "model.safetensors")
    return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)


@WEIGHT_FORMATS.register("tengine_fsdp")
def _fsdp(path: Path) -> StateDict:
    # DCP's reader in this process (no process group), only the "model" entries: an FSDP
    # checkpoint also holds the optimizer state, twice the weights' size for AdamW
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    state = _load_state_dict_from_keys(keys={"model"}, checkpoint_id=str(path / "dcp"))
    return {k: v.to_local() if hasattr(v, "to_local") else v for k, v in state["model"].items()}


@WEIGHT_FORMATS.register("tengine_deepspeed")
def _deepspeed(path: Path) -> StateDict:
    from tengine.extras import require

    zero_to_fp32 = require("deepspeed.utils.zero_to_fp32", "deepspeed",
                           f"model.init_from '{path}' (a DeepSpeed checkpoint)")
    state = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(path), tag=DEEPSPEED_TAG)
    return {k: v.float() for k, v in state.items()}


def _tied_names(model: nn.Module) -> dict[str, set[str]]:
    """name → the other names of the same tensor (parameters a model shares)."""
    by_tensor: dict[int, set[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(p), set()).add(name)
    return {n: names - {n} for names in by_tensor.values() for n in names}


def init_from(model: nn.Module, path: str | Path, strict: bool = True,
              loader: Callable[[Path], StateDict] | None = None) -> dict[str, list[str]]:
    """Copy the weights saved at `path` into `model` (in place, on its device). Missing and
    unexpected keys are an error when `strict`, a warning otherwise; a shape that does not fit
    is always an error. Returns {"missing": [...], "unexpected": [...]}."""
    state = (loader or load_weights)(Path(path))
    own = model.state_dict()
    tied = _tied_names(model)
    missing = sorted(k for k in own if k not in state and not (tied.get(k, set()) & state.keys()))
    unexpected = sorted(k for k in state if k not in own)
    wrong = [f"{k}: saved {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
             for k in state if k in own and state[k].shape != own[k].shape]
    if wrong:
        raise ModelError(f"model.init_from '{path}': shapes do not fit this model: "
                         + "; ".join(wrong[:5]) + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else ""))
    if (missing or unexpected) and strict:
        raise ModelError(f"model.init_from '{path}': {_keys_report(missing, unexpected)}; fix the "
                         "model or set model.init_strict: false to load what matches")
    if missing or unexpected:
        log.warning("model.init_from %s: %s", path, _keys_report(missing, unexpected))
    with torch.no_grad():
        for k, v in state.items():
            if k in own:
                own[k].copy_(v.to(own[k].dtype))
    log.info("model.init_from %s: %d tensors loaded", path, sum(k in own for k in state))
    return {"missing": missing, "unexpected": unexpected}


def _keys_report(missing: list[str], unexpected: list[str]) -> str:
    def some(keys: list[str]) -> str:
        return ", ".join(keys[:6]) + (f" … (+{len(keys) - 6})" if len(keys) > 6 else "")

    parts = [f"{len(missing)} missing keys ({some(missing)})" if missing else "",
             f"{len(unexpected)} unexpected keys ({some(unexpected)})" if unexpected else ""]
    return " and ".join(p for p in parts if p)
