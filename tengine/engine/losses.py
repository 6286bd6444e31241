"""Loss strategies: how a batch's outputs become a summed loss, an item count and accuracy.

A strategy returns the *sum* of the loss over its items and how many items it counted, so
gradient accumulation can divide by the true item count of the whole window (a short last
window is weighted correctly) and metrics can be reduced across ranks by summing.

    LOSSES.register("my_loss", MyLoss)      # or task.loss: "package.module:MyLoss"
    loss = build_loss(cfg.task)
    out = loss(outputs, batch)              # LossOutput(loss_sum, count, correct)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tengine.config.schema import TaskConfig
from tengine.data.collators import IGNORE_INDEX
from tengine.errors import ConfigError
from tengine.registry import Registry, import_path

LOSSES: Registry = Registry("loss", "task.loss")
DEFAULT_LOSS = {"language_modeling": "language_modeling", "classification": "classification",
                "vision_classification": "vision_classification", "segmentation": "segmentation",
                "multilabel": "multilabel"}


@dataclass
class LossOutput:
    loss_sum: torch.Tensor  # summed over counted items, on device
    count: torch.Tensor  # items counted (tokens, samples, pixels), on device
    correct: torch.Tensor | None = None  # correct predictions among them


class LossStrategy:
    """Base: subclasses implement `__call__`; `count` must match it, computed on the CPU batch."""

    def __init__(self, task: TaskConfig):
        self.task = task

    def __call__(self, outputs: torch.Tensor, batch: dict) -> LossOutput:
        raise NotImplementedError

    def count(self, batch: dict) -> float:
        return float(len(batch["labels"]))


@LOSSES.register("language_modeling")
class LanguageModelingLoss(LossStrategy):
    """Next-token cross-entropy summed over tokens whose label is not -100."""

    def __call__(self, logits: torch.Tensor, batch: dict) -> LossOutput:
        labels = batch["labels"]
        flat = logits.reshape(-1, logits.size(-1)).float()  # fp32 softmax: stable under bf16
        loss = F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
        mask = labels != IGNORE_INDEX
        correct = ((logits.argmax(-1) == labels) & mask).sum() if not torch.is_grad_enabled() else None
        return LossOutput(loss, mask.sum(), correct)

    def count(self, batch: dict) -> float:
        return float((batch["labels"] != IGNORE_INDEX).sum())


@LOSSES.register("classification")
class ClassificationLoss(LossStrategy):
    """Cross-entropy with optional class weights and label smoothing.

    With class weights the count is the summed weight of the targets, so the result equals
    PyTorch's weighted mean however the batch is split into micro-batches.
    """

    def __init__(self, task: TaskConfig):
        super().__init__(task)
        self.weights = torch.tensor(task.class_weights) if task.class_weights else None

    def __call__(self, logits: torch.Tensor, batch: dict) -> LossOutput:
        labels = batch["labels"]
        weight = self.weights.to(logits.device) if self.weights is not None else None
        loss = F.cross_entropy(logits.float(), labels, weight=weight, reduction="sum",
                               label_smoothing=self.task.label_smoothing)
        count = weight[labels].sum() if weight is not None else torch.tensor(
            float(len(labels)), device=logits.device)
        correct = (logits.argmax(-1) == labels).sum()
        return LossOutput(loss, count, correct)

    def count(self, batch: dict) -> float:
        if self.weights is None:
            return float(len(batch["labels"]))
        return float(self.weights[batch["labels"].cpu()].sum())


@LOSSES.register("vision_classification")
class VisionClassificationLoss(ClassificationLoss):
    """Image classification: the same objective over `pixel_values` batches."""


@LOSSES.register("segmentation")
class SegmentationLoss(LossStrategy):
    """Per-pixel cross-entropy: logits [B, C, H, W], labels [B, H, W] with -100 = ignore."""

    def __call__(self, logits: torch.Tensor, batch: dict) -> LossOutput:
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
        mask = labels != IGNORE_INDEX
        correct = ((logits.argmax(1) == labels) & mask).sum()
        return LossOutput(loss, mask.sum(), correct)

    def count(self, batch: dict) -> float:
        return float((batch["labels"] != IGNORE_INDEX).sum())


@LOSSES.register("multilabel")
class MultilabelLoss(LossStrategy):
    """Independent sigmoid per label: logits and labels [B, C] (labels 0/1)."""

    def __call__(self, logits: torch.Tensor, batch: dict) -> LossOutput:
        labels = batch["labels"].float()
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="sum")
        correct = ((logits > 0) == (labels > 0.5)).sum()
        return LossOutput(loss, torch.tensor(float(labels.numel()), device=logits.device), correct)

    def count(self, batch: dict) -> float:
        return float(batch["labels"].numel())


def resolve_loss(task: TaskConfig) -> type[LossStrategy]:
    name = task.loss or DEFAULT_LOSS[task.type]
    cls = import_path(name, "task.loss") if ":" in name else LOSSES.get(name)
    if not (isinstance(cls, type) and issubclass(cls, LossStrategy)):
        raise ConfigError(f"task.loss: '{name}' is not a LossStrategy subclass")
    return cls


def build_loss(task: TaskConfig) -> LossStrategy:
    return resolve_loss(task)(task)
