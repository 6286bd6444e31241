"""Non-finite steps are skipped and counted; three in a row stop the run, checkpoint untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tengine import TaskSpec, Trainer
from tengine.data import build_data
from tengine.engine.checkpoint import verify
from tengine.errors import NonFiniteError
from tests.engine.helpers import PoisonedGPT


def _trainer(cfg, **poison):
    torch.manual_seed(0)
    data = build_data(cfg.data, cfg.task)
    model = PoisonedGPT(data.vocab_size, 32, 1, 2, max_seq_len=cfg.data.seq_len, **poison)
    return Trainer(model, cfg, TaskSpec.language_modeling()), data


def test_one_nan_step_is_skipped_and_training_goes_on(tiny_config):
    trainer, data = _trainer(tiny_config("training.max_steps=12"), poison={5})
    summary = trainer.train(data.train, data.val)
    assert summary["status"] == "completed" and summary["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    records = [json.loads(x) for x in Path(summary["run_dir"], "metrics.jsonl").read_text().splitlines()]
    assert records[4]["step"] == 5 and records[4]["step_loss"] is None  # NaN written as null
    assert records[4]["skipped_steps"] == 1 and records[5]["step_loss"] is not None


def test_three_consecutive_nan_steps_stop_and_keep_the_last_good_checkpoint(tiny_config):
    cfg = tiny_config("training.max_steps=30", "checkpoint.every_n_steps=5")
    trainer, data = _trainer(cfg, poison_from=13)
    with pytest.raises(NonFiniteError, match="3 consecutive non-finite steps"):
        trainer.train(data.train, data.val)
    ckpts = sorted(p.name for p in Path(cfg.run_dir(), "checkpoints").iterdir())
    assert ckpts == ["step_00000005", "step_00000010"]
    assert verify(Path(cfg.run_dir(), "checkpoints", "step_00000010")) is None
    summary = json.loads(Path(cfg.run_dir(), "summary.json").read_text())
    assert summary["status"] == "failed" and summary["steps"] == 14 and "consecutive" in summary["error"]


def test_gradient_norm_is_the_global_l2_norm(tiny_config):
    from tengine.engine.gradients import GradientMonitor

    trainer, data = _trainer(tiny_config("training.max_steps=1", "optim.grad_clip=null"))
    model = trainer.model
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    norm = trainer.strategy.clip_grad_norm(None)
    expected = 0.5 * sum(p.numel() for p in model.parameters()) ** 0.5
    assert norm.item() == pytest.approx(expected, rel=1e-5)
    health = GradientMonitor().observe(torch.tensor(1.0), norm, step=1)
    assert health.ok and health.grad_norm == pytest.approx(expected, rel=1e-5)


def test_a_window_of_only_skipped_steps_logs_no_loss_and_is_never_the_best(tiny_config):
    """Steps 3 and 4 are both non-finite: the record for that window has no loss (it read
    0.0, perplexity 1.0 before), and its checkpoint cannot be the best by train_loss."""
    cfg = tiny_config("training.max_steps=8", "training.log_every_n_steps=2",
                      "checkpoint.every_n_steps=2", "checkpoint.monitor=train_loss",
                      "checkpoint.keep_last=1", "checkpoint.keep_best=1")
    trainer, data = _trainer(cfg, poison={3, 4})
    summary = trainer.train(data.train, data.val)
    records = {r["step"]: r for r in map(json.loads, Path(summary["run_dir"], "metrics.jsonl")
                                         .read_text().splitlines()) if r["split"] == "train"}
    assert records[4]["loss"] is None and records[4]["ppl"] is None
    assert records[2]["loss"] > 0 and records[6]["loss"] > 0
    manifest = json.loads(Path(cfg.run_dir(), "checkpoints/step_00000004/manifest.json").read_text()) \
        if Path(cfg.run_dir(), "checkpoints/step_00000004").exists() else None
    assert manifest is None  # not kept as the best: it has no train_loss to rank by
    best = summary["best_checkpoint"]
    assert best is not None and not best.endswith("step_00000004")
