"""Loss strategies: sums and counts that make accumulation exact; registry with did-you-mean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tengine.config.schema import TaskConfig
from tengine.engine.losses import LOSSES, LossOutput, LossStrategy, build_loss
from tengine.errors import ConfigError, UnknownNameError


def test_weighted_classification_split_in_windows_equals_the_full_batch():
    task = TaskConfig(type="classification", num_classes=3, class_weights=[1.0, 2.0, 5.0],
                      label_smoothing=0.1)
    loss = build_loss(task)
    logits, labels = torch.randn(8, 3), torch.tensor([0, 1, 2, 2, 1, 0, 2, 1])
    full = F.cross_entropy(logits, labels, weight=torch.tensor([1.0, 2.0, 5.0]), label_smoothing=0.1)
    parts = [(logits[:5], labels[:5]), (logits[5:], labels[5:])]  # a 5 + 3 window
    total = sum(loss.count({"labels": y}) for _, y in parts)
    windowed = sum(loss(x, {"labels": y}).loss_sum for x, y in parts) / total
    assert windowed.item() == pytest.approx(full.item(), rel=1e-6)


def test_lm_loss_ignores_padding_and_counts_tokens():
    loss = build_loss(TaskConfig())
    logits = torch.randn(2, 4, 10)
    labels = torch.tensor([[1, 2, 3, -100], [4, -100, -100, -100]])
    out = loss(logits, {"labels": labels})
    ref = F.cross_entropy(logits.reshape(-1, 10), labels.reshape(-1), ignore_index=-100)
    assert (out.loss_sum / out.count).item() == pytest.approx(ref.item(), rel=1e-6)
    assert loss.count({"labels": labels}) == 4.0


def test_segmentation_and_multilabel():
    seg = build_loss(TaskConfig(type="segmentation"))
    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    labels[0, 0, 0] = -100
    out = seg(logits, {"labels": labels})
    assert out.count.item() == 31 and out.correct <= 31
    ml = build_loss(TaskConfig(type="multilabel"))
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = ml(torch.tensor([[5.0, -5.0], [-5.0, 5.0]]), {"labels": y})
    assert out.correct.item() == 4 and (out.loss_sum / out.count).item() < 0.01


def test_unknown_and_custom_losses():
    with pytest.raises(UnknownNameError, match="did you mean 'classification'"):
        build_loss(TaskConfig(loss="clasification"))

    class Doubled(LossStrategy):
        def __call__(self, outputs, batch):
            base = LOSSES.get("language_modeling")(self.task)(outputs, batch)
            return LossOutput(2 * base.loss_sum, base.count)

    LOSSES.register("doubled_test_loss", Doubled, overwrite=True)
    assert isinstance(build_loss(TaskConfig(loss="doubled_test_loss")), Doubled)
    with pytest.raises(ConfigError, match="not a LossStrategy"):
        build_loss(TaskConfig(loss="tests.engine.helpers:poisoned_gpt"))
