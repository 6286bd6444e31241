"""Optimizer groups and LR schedules; torch.compile gives the eager loss curve."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tengine.config.schema import ModelConfig, OptimConfig, ScheduleConfig
from tengine.engine import run
from tengine.engine.optim import build_optimizer, build_scheduler, lr_factor
from tengine.models import build_model
from tests.conftest import read_jsonl


def test_no_decay_for_biases_norms_and_embeddings():
    model = build_model(ModelConfig(), vocab_size=20, seq_len=8)
    decay, no_decay = build_optimizer(model, OptimConfig(weight_decay=0.1), torch.device("cpu")).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and p.ndim == 2 for p in decay["params"])
    assert {"tok_emb.weight", "pos_emb.weight", "ln_f.weight", "ln_f.bias"} <= {names[id(p)] for p in no_decay["params"]}
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(no_decay["params"]) == n_unique  # tied head counted once


@pytest.mark.parametrize("name", ["cosine", "linear", "constant"])
def test_schedules_warm_up_then_decay_to_the_floor(name):
    cfg = ScheduleConfig(name=name, warmup_steps=10, min_lr_ratio=0.1)
    f = [lr_factor(s, 100, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b + 1e-12 for a, b in zip(f[:10], f[1:10], strict=False))
    if name == "constant":
        assert f[-1] == 1.0
    else:
        assert f[-1] == pytest.approx(0.1, abs=0.02) and all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    mid = lr_factor(55, 100, cfg)
    expected = {"cosine": 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), "linear": 0.55, "constant": 1}
    assert mid == pytest.approx(expected[name])
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, cfg, 100)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * f[0])
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * f[1])


def test_compiled_model_follows_the_eager_curve(tiny_config):
    args = ("training.max_steps=6", "model.n_layers=1", "training.eval_every_n_steps=0")
    eager = run(tiny_config(*args, name="eager"))
    compiled = run(tiny_config(*args, "compile=true", name="compiled"))
    a = [r["step_loss"] for r in read_jsonl(Path(eager["run_dir"]) / "metrics.jsonl")]
    b = [r["step_loss"] for r in read_jsonl(Path(compiled["run_dir"]) / "metrics.jsonl")]
    assert len(a) == 6 and a == pytest.approx(b, abs=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-4)
