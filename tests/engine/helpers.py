"""Test models: a GPT whose training forward goes non-finite on chosen calls."""

from __future__ import annotations

import torch

from tengine.models.gpt import GPT


class _NaNGrad(torch.autograd.Function):
    """Identity forward; NaN gradient backward: a finite loss whose gradients are poisoned."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


class PoisonedGPT(GPT):
    """On the training forwards listed in `poison` (1-based call count, per process), or all
    from `poison_from` on, returns NaN logits; on those in `nan_grads` the loss stays finite and
    only the backward pass turns NaN."""

    def __init__(self, *args, poison: set[int] | None = None, poison_from: int | None = None,
                 nan_grads: set[int] | None = None, **kw):
        super().__init__(*args, **kw)
        self.poison, self.poison_from, self.calls = poison or set(), poison_from, 0
        self.nan_grads = nan_grads or set()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = super().forward(input_ids)
        if self.training:
            self.calls += 1
            if self.calls in self.poison or (self.poison_from and self.calls >= self.poison_from):
                return logits * float("nan")
            if self.calls in self.nan_grads:
                return _NaNGrad.apply(logits)
        return logits


def poisoned_gpt(vocab_size: int, max_seq_len: int, poison_from: int | None = None,
                 poison: list[int] | None = None, nan_grads: list[int] | None = None) -> PoisonedGPT:
    return PoisonedGPT(vocab_size, 32, 1, 2, max_seq_len=max_seq_len, poison_from=poison_from,
                       poison=set(poison or []), nan_grads=set(nan_grads or []))


class SlowGPT(GPT):
    """A GPT whose training forward also sleeps, so a test can signal a run mid-way."""

    def __init__(self, *args, delay_s: float = 0.02, **kw):
        super().__init__(*args, **kw)
        self.delay_s = delay_s

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.training:
            import time

            time.sleep(self.delay_s)
        return super().forward(input_ids)


def slow_gpt(vocab_size: int, max_seq_len: int, delay_s: float = 0.02) -> SlowGPT:
    return SlowGPT(vocab_size, 32, 1, 2, max_seq_len=max_seq_len, dropout=0.1, delay_s=delay_s)


class BranchyGPT(GPT):
    """A GPT with a head that never gets a gradient (DDP needs find_unused_parameters)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.unused_head = torch.nn.Linear(self.d_model, 3)


def branchy_gpt(vocab_size: int, max_seq_len: int) -> BranchyGPT:
    return BranchyGPT(vocab_size, 32, 1, 2, max_seq_len=max_seq_len)
