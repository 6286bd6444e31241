"""MetricsEngine: token-weighted loss/perplexity/accuracy, throughput, MFU and peak memory.

Sums (loss, count, correct, tokens) stay on the device and are read only when a record is
made, in one sync; before reading they go through `reduce` (the Strategy's all_reduce), so the
same code gives global metrics on many ranks. MFU = achieved FLOP/s ÷ the card's dense bf16
peak, with `flops_per_token` below (the model's own, or an estimate); it is null on CPU.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable

import torch

from tengine.engine.losses import LossOutput

# Dense bf16/fp16 tensor-core peaks (FLOP/s) by substring of the CUDA device name.
PEAK_FLOPS = [("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40", 181e12),
              ("A10", 125e12), ("L4", 121e12), ("V100", 125e12), ("T4", 65e12), ("4090", 165e12),
              ("3090", 71e12)]


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS if key in name), None)


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: the model's own `flops_per_token(seq_len)`, else the PaLM
    estimate 6·N + 12·L·d·T (App. B), N = parameters used in matmuls (embedding tables are
    lookups and do not count, except one tied to the output head), L and d from an HF config
    (`num_hidden_layers`, `hidden_size`) or `n_layers`/`d_model` attributes; no attention term
    when the model has neither."""
    own = getattr(model, "flops_per_token", None)
    if callable(own):
        return float(own(seq_len))
    params = {id(p): p.numel() for p in model.parameters()}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = getattr(model, "get_output_embeddings", lambda: None)()
    heads = {id(head.weight)} if head is not None and hasattr(head, "weight") else set()
    n = sum(v for k, v in params.items() if k not in tables or k in heads)
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None) or getattr(model, "n_layers", None)
    width = getattr(config, "hidden_size", None) or getattr(model, "d_model", None)
    attention = 12 * layers * width * seq_len if layers and width else 0
    return float(6 * n + attention)


def batch_tokens(batch: dict) -> int:
    """Input tokens of a batch (images count one per sample)."""
    ids = batch.get("input_ids")
    if ids is not None:
        return int(ids.numel())
    return len(batch["labels"])


class Accumulator:
    """Device-side sums of loss, count, correct; one sync to read."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        self.has_correct = False

    def add(self, out: LossOutput) -> None:
        self.sums[0] += out.loss_sum.detach().double()
        self.sums[1] += out.count.double() if torch.is_tensor(out.count) else float(out.count)
        if out.correct is not None:
            self.sums[2] += out.correct.double()
            self.has_correct = True

    def read(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        loss_sum, count, correct = reduce(self.sums.clone()).tolist()
        if count <= 0:  # nothing counted (every step of the window skipped): no loss, not 0
            return {"loss": None, "ppl": None, **({"accuracy": None} if self.has_correct else {})}
        loss = loss_sum / count
        out = {"loss": loss, "ppl": math.exp(min(loss, 50.0))}
        if self.has_correct:
            out["accuracy"] = correct / count
        return out


class MetricsEngine:
    def __init__(self, device: torch.device, flops_per_token: float | None = None,
                 world_size: int = 1, reduce: Callable = lambda t: t):
        self.device, self.flops_per_token = device, flops_per_token
        self.world_size, self.reduce = world_size, reduce
        self.peak = peak_flops(device)
        self.train = Accumulator(device)
        self.window_tokens = 0
        self.window_start = time.perf_counter()
        self.total_tokens = 0
        self.train_time = 0.0

    def add_train(self, out: LossOutput, tokens: int) -> None:
        self.train.add(out)
        self.window_tokens += tokens
        self.total_tokens += tokens * self.world_size

    def train_record(self) -> dict[str, float]:
        """Metrics of the steps since the last call (global over ranks); resets the window."""
        stats = self.train.read(self.reduce)
        elapsed = time.perf_counter() - self.window_start
        tokens = self.window_tokens * self.world_size
        self.train_time += elapsed
        tok_s = tokens / elapsed if elapsed > 0 else 0.0
        record = {"loss": stats["loss"], "ppl": stats["ppl"], "tokens_per_s": tok_s,
                  "mfu": self.mfu(tok_s), "peak_mem_gb": self.peak_memory_gb()}
        self.train.reset()
        self.window_tokens = 0
        self.window_start = time.perf_counter()
        return record

    def pause(self) -> None:
        """Exclude eval/checkpoint time from throughput: call before, `resume_clock` after."""
        self._paused_at = time.perf_counter()

    def resume_clock(self) -> None:
        self.window_start += time.perf_counter() - self._paused_at

    def mfu(self, tokens_per_s: float) -> float | None:
        if not (self.peak and self.flops_per_token):
            return None
        return tokens_per_s * self.flops_per_token / (self.peak * self.world_size)

    def peak_memory_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)

    def average_tokens_per_s(self) -> float:
        """Over every step of this process, the open (not yet logged) window included."""
        open_window = time.perf_counter() - self.window_start if self.window_tokens else 0.0
        elapsed = self.train_time + open_window
        return self.total_tokens / elapsed if elapsed else 0.0
