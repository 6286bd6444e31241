"""Test models for export failures: an op the ONNX exporter cannot translate, and a forward
that changes under export (so parity, not the exporter, must catch it)."""

from __future__ import annotations

import torch

from tengine.models.gpt import GPT


class CummaxGPT(GPT):
    """Adds a running maximum (`torch.cummax`: torch.export takes it, ONNX has no translation)."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = super().forward(input_ids)
        return logits + 0.01 * torch.cummax(logits, dim=1).values


class ShiftedGPT(GPT):
    """Outputs shifted by 1e-3 whenever torch is tracing it for export (torch.export, the ONNX
    dynamo exporter): a bundle whose formats run fine but do not match PyTorch."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = super().forward(input_ids)
        return logits + 1e-3 if torch.compiler.is_compiling() else logits


def cummax_gpt(vocab_size: int, max_seq_len: int) -> CummaxGPT:
    return CummaxGPT(vocab_size, 32, 1, 2, max_seq_len=max_seq_len)


def shifted_gpt(vocab_size: int, max_seq_len: int) -> ShiftedGPT:
    return ShiftedGPT(vocab_size, 32, 1, 2, max_seq_len=max_seq_len)
