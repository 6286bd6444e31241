"""Export formats: a registry of builders, each writing its files into the bundle being built.

    FORMATS.get("onnx")(target, out_dir)  # -> the format's metadata entry (file, runtime, ...)

- `safetensors`: the consolidated weights (any backend's checkpoint, gathered when the registry
  artifact was packed), metadata `format: pt` and the config's sha256. A Hugging Face model is
  written with `save_pretrained` (config.json beside the weights), so `from_pretrained` and the
  bundle's inference.py read it without tengine.
- `pt2`: a `torch.export` ExportedProgram with dynamic batch and sequence dimensions.
- `onnx`: `torch.onnx.export(dynamo=True)` with the same dynamic dimensions, checked by
  `onnx.checker`; run by onnxruntime in the parity check.
- `torchscript`: `torch.jit.trace`, opt-in and legacy (PyTorch deprecated TorchScript in favour
  of torch.export); kept for consumers of older bundles.

Every traced format is built from the same `Target.module`: the model with positional inputs in
the order of `Target.names`, returning the logits tensor. Examples have batch and sequence ≥ 2,
so torch.export's 0/1 specialisation cannot pin a dimension to the example's size.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tengine.registry import Registry

FORMATS: Registry = Registry("export format", "export.formats")
DEFAULT_FORMATS = ("safetensors", "pt2", "onnx")
Builder = Callable[["Target", Path], dict[str, Any]]


class Positional(nn.Module):
    """`model(**dict(zip(names, args)))` → its logits: one signature for every exporter."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        from tengine.engine.trainer import logits_of

        return logits_of(self.model(**dict(zip(self.names, args, strict=False))))


@dataclass
class Target:
    """What every format exports: the model (eval, fp32, CPU) and how it is called."""

    model: nn.Module
    names: list[str]  # input names, in positional order
    example: tuple[torch.Tensor, ...]  # real inputs, batch and sequence ≥ 2
    dims: list[dict[int, str]]  # per input: dim index → "batch" | "seq"
    seq_max: int | None  # the longest sequence the model takes (its positions)
    state: dict[str, torch.Tensor]  # the weights as saved (tied tensors once)
    config_sha256: str
    opset: int
    hf_auto_class: str | None = None  # a transformers model: the Auto class that reads it
    module: nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.module = Positional(self.model, self.names).eval()

    def dynamic_shapes(self) -> tuple[tuple[dict[int, Any], ...]]:
        batch = torch.export.Dim("batch", min=1)
        seq = torch.export.Dim("seq", min=1, max=self.seq_max) if self.seq_max else \
            torch.export.Dim("seq", min=1)
        named = {"batch": batch, "seq": seq}
        return (tuple({i: named[d] for i, d in dims.items()} for dims in self.dims),)


@contextlib.contextmanager
def quiet():
    """The exporters' progress prints and warnings (torchvision kernels it skips, TorchScript's
    deprecation) are not the user's problem; failures still raise."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export",
                                              "torch._export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@FORMATS.register("safetensors")
def safetensors_format(target: Target, out: Path) -> dict[str, Any]:
    from safetensors.torch import load_file, save_file

    metadata = {"format": "pt", "config_sha256": target.config_sha256}
    if target.hf_auto_class:  # the save_pretrained layout (its own tied-weight handling)
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Writing model shards" on stderr
        try:
            with quiet():
                target.model.save_pretrained(str(out), safe_serialization=True)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        weights = out / "model.safetensors"
        if not weights.is_file():
            raise RuntimeError("save_pretrained wrote sharded weights; tengine bundles hold one "
                               "model.safetensors")
        save_file(load_file(str(weights)), str(weights), metadata=metadata)
        files = ["model.safetensors", "config.json"] + [
            f for f in ("generation_config.json",) if (out / f).is_file()]
        return {"file": "model.safetensors", "files": files, "runtime": "hf",
                "layout": "save_pretrained", "auto_class": target.hf_auto_class}
    save_file({k: v.contiguous() for k, v in target.state.items()}, str(out / "model.safetensors"),
              metadata=metadata)
    return {"file": "model.safetensors", "files": ["model.safetensors"], "runtime": None,
            "weights_only": True, "layout": "tengine state dict (tengine/models)"}


@FORMATS.register("pt2")
def pt2_format(target: Target, out: Path) -> dict[str, Any]:
    with quiet():
        program = torch.export.export(target.module, target.example,
                                      dynamic_shapes=target.dynamic_shapes())
        torch.export.save(program, str(out / "model.pt2"))
    return {"file": "model.pt2", "files": ["model.pt2"], "runtime": "pt2",
            "exporter": f"torch.export.export (torch {torch.__version__})"}


# what a format needs beyond the core install: (module, extra), checked before any work
REQUIRES: dict[str, tuple[tuple[str, str], ...]] = {
    "onnx": (("onnx", "export"), ("onnxscript", "export"), ("onnxruntime", "export")),
}


def check_requirements(formats: list[str]) -> None:
    """Each requested format's packages installed, or exit 2 naming the extra to install."""
    from tengine.extras import require

    for fmt in formats:
        for module, extra in REQUIRES.get(fmt, ()):
            require(module, extra, f"export format '{fmt}'",
                    otherwise="leave it out: --formats safetensors,pt2")


@FORMATS.register("onnx")
def onnx_format(target: Target, out: Path) -> dict[str, Any]:
    import onnx

    before = set(out.iterdir())
    with quiet():
        torch.onnx.export(target.module, target.example, str(out / "model.onnx"), dynamo=True,
                          input_names=target.names, output_names=["logits"],
                          dynamic_shapes=target.dynamic_shapes(), opset_version=target.opset)
    onnx.checker.check_model(str(out / "model.onnx"))
    written = sorted(p.name for p in set(out.iterdir()) - before)  # + external data, if any
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset != target.opset:  # the exporter could not convert to the one asked for
        raise RuntimeError(f"the ONNX exporter wrote opset {opset}, not export.onnx_opset "
                           f"{target.opset}; use opset {opset} (--opset {opset})")
    return {"file": "model.onnx", "files": written, "runtime": "onnx", "opset": opset,
            "exporter": f"torch.onnx.export(dynamo=True) (torch {torch.__version__})"}


@FORMATS.register("torchscript")
def torchscript_format(target: Target, out: Path) -> dict[str, Any]:
    with quiet():
        traced = torch.jit.trace(target.module, target.example, check_trace=False)
        traced.save(str(out / "model.torchscript.pt"))
    return {"file": "model.torchscript.pt", "files": ["model.torchscript.pt"],
            "runtime": "torchscript", "legacy": True,
            "exporter": f"torch.jit.trace (torch {torch.__version__}; legacy)"}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def reason(err: BaseException) -> str:
    """One readable line for an exporter's failure (the ONNX exporter's summary, not its
    multi-page advice)."""
    text = _ANSI.sub("", str(err))
    if "## Exception summary" in text:
        summary = text.split("## Exception summary", 1)[1]
        lines = [ln.strip() for ln in summary.splitlines() if ln.strip().startswith("<class")]
        if lines:
            text = re.sub(r"^<class '[\w.]*?(\w+)'>:\s*", r"\1: ", lines[0])
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    first = first if first.startswith(type(err).__name__) or ":" in first[:40] else \
        f"{type(err).__name__}: {first}"
    return first[:400]
