"""Small classifiers: a bag-of-embeddings text classifier and a CNN for images."""

from __future__ import annotations

import torch
from torch import nn


class TextClassifier(nn.Module):
    """Mean-pooled token embeddings → MLP. Inputs: input_ids [B, L], attention_mask [B, L]."""

    def __init__(self, vocab_size: int, num_classes: int, d_model: int = 64, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(d_model, num_classes))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        x = self.embed(input_ids)
        if attention_mask is None:
            pooled = x.mean(1)
        else:
            m = attention_mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.head(pooled)


class VisionCNN(nn.Module):
    """Three conv blocks → global average pool → linear. Input: pixel_values [B, C, H, W]."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, dropout: float = 0.0):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width),
                                      block(2 * width, 2 * width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(2 * width, num_classes))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))
