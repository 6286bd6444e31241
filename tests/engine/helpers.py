"""Test models: a GPT whose training forward goes non-finite on chosen calls."""

from __future__ import annotations

import torch

from tengine.models.gpt import GPT


class PoisonedGPT(GPT):
    """Returns NaN logits on the training forwards listed in `poison` (1-based call count)."""

    def __init__(self, *args, poison: set[int] | None = None, poison_from: int | None = None, **kw):
        super().__init__(*args, **kw)
        self.poison, self.poison_from, self.calls = poison or set(), poison_from, 0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = super().forward(input_ids)
        if self.training:
            self.calls += 1
            if self.calls in self.poison or (self.poison_from and self.calls >= self.poison_from):
                return logits * float("nan")
        return logits


def poisoned_gpt(vocab_size: int, max_seq_len: int, poison_from: int = 1) -> PoisonedGPT:
    return PoisonedGPT(vocab_size, 32, 1, 2, max_seq_len=max_seq_len, poison_from=poison_from)
