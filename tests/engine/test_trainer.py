"""The Trainer end to end on CPU: accumulation, precision, tasks, early stopping, the run dir."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tengine.cli import main
from tengine.engine import run
from tests.conftest import REPO, read_jsonl


def _step_losses(summary) -> list[float]:
    return [r["step_loss"] for r in read_jsonl(Path(summary["run_dir"]) / "metrics.jsonl")]


def test_grad_accumulation_equals_the_big_batch(tiny_config):
    big = run(tiny_config("training.max_steps=10", "training.micro_batch_size=16", name="big"))
    acc = run(tiny_config("training.max_steps=10", "training.micro_batch_size=8",
                          "training.grad_accum_steps=2", name="acc"))
    for a, b in zip(_step_losses(big), _step_losses(acc), strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_epochs_set_the_step_count_with_a_short_last_window(tiny_config):
    from tengine.data import build_data

    cfg = tiny_config("training.max_steps=null", "training.epochs=2", "training.grad_accum_steps=3",
                      "data.markov.num_tokens=6400")
    batches = len(build_data(cfg.data, cfg.task).train) // 8  # drop_last micro-batches
    assert batches % 3 != 0  # so every epoch ends on a short window
    summary = run(cfg)
    assert summary["steps"] == 2 * math.ceil(batches / 3) and summary["epochs"] == 2.0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_tracks_fp32_on_cpu(tiny_config, precision):
    text = ["data.source=text_files", "data.max_bytes=200000", "training.max_steps=40"]
    ref = _step_losses(run(tiny_config(*text, "precision=fp32", name="fp32")))
    summary = run(tiny_config(*text, f"precision={precision}", name=precision))
    losses = _step_losses(summary)
    assert summary["precision"] == precision and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 1.0  # bytes: from ~log(258) down fast
    assert abs(losses[-1] - ref[-1]) < 0.1


def test_early_stopping_stops_when_val_loss_stalls(tiny_config):
    summary = run(tiny_config("optim.lr=1e-9", "training.max_steps=50", "training.eval_every_n_steps=2",
                              "training.early_stopping.patience=2",
                              "training.early_stopping.min_delta=0.01"))
    assert summary["status"] == "early_stopped" and summary["steps"] == 6
    assert summary["last_checkpoint"].endswith("step_00000006")


def test_text_classification_learns(tiny_config):
    summary = run(tiny_config("data.source=synthetic_classification", "task.type=classification",
                              "task.num_classes=4", "model.name=classifier", "data.num_samples=1024",
                              "training.max_steps=60", "optim.lr=1e-2", "checkpoint.monitor=val_accuracy",
                              "checkpoint.mode=max", "training.eval_batches=null"))
    assert summary["val_accuracy"] > 0.9


def test_vision_classification_learns(tiny_config):
    summary = run(tiny_config("data.source=synthetic_images", "task.type=vision_classification",
                              "task.num_classes=4", "model.name=vision_cnn", "data.num_samples=512",
                              "training.max_steps=40", "optim.lr=1e-2", "training.eval_batches=null"))
    assert summary["val_accuracy"] > 0.9


def test_the_run_directory_contract(tmp_path, capsys):
    run_dir = tmp_path / "run"
    quick = str(REPO / "configs/quickstart.yaml")
    sets = ["distributed.workers=0", "distributed.backend=single", "training.micro_batch_size=32",
            "training.max_steps=20", "data.markov.num_tokens=20000", "data.seq_len=32",
            "training.eval_every_n_steps=10", "checkpoint.every_n_steps=10"]
    assert main(["train", quick, "--run-dir", str(run_dir), *[x for s in sets for x in ("--set", s)]]) == 0
    assert "completed: 20 steps" in capsys.readouterr().out
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["max_steps"] == 20
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("status", "steps", "tokens", "train_loss", "val_loss", "best_val_loss",
                "best_checkpoint", "tokens_per_s", "mfu", "wall_s", "loss_floor"):
        assert key in summary
    assert summary["tokens"] == 20 * 32 * 32  # steps × micro-batch × seq_len
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = {r["step"]: r["val_loss"] for r in records if r["split"] == "val"}
    best = min(vals, key=vals.get)  # the best checkpoint is the one at the lowest val_loss
    assert summary["best_checkpoint"] == str(run_dir / f"checkpoints/step_{best:08d}")
    assert json.loads((Path(summary["best_checkpoint"]) / "manifest.json").read_text())[
        "metrics"]["val_loss"] == vals[best]
    assert {"step", "epoch", "split", "loss", "lr", "tokens_per_s", "grad_norm"} <= set(records[0])
    assert [r["step"] for r in records if r["split"] == "val"] == [10, 20]
    for png in ("loss.png", "lr.png", "throughput.png"):
        assert (run_dir / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["torch"] and "python" in env


def test_summary_counts_every_token_even_after_the_last_log(tiny_config):
    summary = run(tiny_config("training.max_steps=25", "training.log_every_n_steps=10"))
    assert summary["tokens"] == 25 * 8 * 32 and summary["tokens_per_s"] > 0


def test_python_api_with_a_classification_taskspec_and_own_model(tmp_path):
    import torch

    from tengine import TaskSpec, Trainer, TrainingConfigBuilder
    from tengine.data.datasets import ClassificationDataset
    from tengine.models import TextClassifier

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (256,), generator=g).tolist()
    seqs = [[1 + y] * 4 + torch.randint(3, 20, (6,), generator=g).tolist() for y in labels]
    cfg = (TrainingConfigBuilder().with_training(max_steps=30, micro_batch_size=16)
           .with_optimizer(lr=1e-2).with_logging(root=str(tmp_path), plots=False).build())
    trainer = Trainer(TextClassifier(20, 2), cfg, TaskSpec.classification(num_classes=2))
    summary = trainer.train(ClassificationDataset(seqs[:200], labels[:200], 10),
                            ClassificationDataset(seqs[200:], labels[200:], 10))
    assert summary["val_accuracy"] > 0.95 and trainer.cfg.task.type == "classification"
