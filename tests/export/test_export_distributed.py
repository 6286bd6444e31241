"""Sharded checkpoints export to the weights a one-process evaluation of them uses: FSDP (DCP
shards) and DeepSpeed ZeRO-3 (partitions), each trained by 2 gloo workers under torchrun."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tengine.config import TaskSpec, load_config
from tengine.engine.run import evaluate
from tengine.export import export
from tests.backends.test_distributed import torchrun


def _bundle_val_loss(bundle: Path, meta: dict, step: int) -> float:
    """The bundle's safetensors, evaluated by the engine in one process on the run's val split."""
    from tengine.data import build_data
    from tengine.data.context import DataContext
    from tengine.engine.reporter import MemoryReporter
    from tengine.engine.trainer import Trainer
    from tengine.export.model import rebuild

    cfg = load_config(bundle / "config.yaml")
    data = build_data(cfg.data, cfg.task, DataContext(run_dir=None, saved=bundle))
    trainer = Trainer(rebuild(bundle, meta), cfg, TaskSpec.from_config(cfg.task),
                      reporter=MemoryReporter(bundle), pad_id=data.pad_id)
    return trainer.evaluate_weights(data.val, step)["val_loss"]


@pytest.mark.parametrize("backend", [["distributed.backend=fsdp"],
                                     ["distributed.backend=deepspeed", "distributed.zero_stage=3"]],
                         ids=["fsdp", "zero3"])
def test_a_sharded_checkpoint_exports_the_weights_a_one_process_evaluation_uses(tmp_path, backend):
    from safetensors.torch import load_file

    from tengine.engine.weights import load_weights

    run_dir = tmp_path / "run"
    torchrun(2, run_dir, *backend, "training.micro_batch_size=8", "training.max_steps=10")
    checkpoint = run_dir / "checkpoints" / "step_00000010"
    assert not (checkpoint / "model.safetensors").exists()  # sharded: no one-file weights
    meta = export(checkpoint, tmp_path / "bundle", formats=["safetensors", "onnx"],
                  latency_iters=0, progress=lambda *a: None)
    bundle = Path(meta["bundle"])
    assert all(c["ok"] for p in meta["parity"].values() for c in p["cases"].values())

    # the same tensors as the engine's one-rank gather of the shards (tied ones stored once)
    saved, gathered = load_file(str(bundle / "model.safetensors")), load_weights(checkpoint)
    assert saved and set(saved) <= set(gathered)
    assert all(torch.equal(saved[k], gathered[k].cpu()) for k in saved)
    # and the same model: `tengine evaluate` of the checkpoint in one process (its own backend,
    # resharded to one rank) gives the val loss the bundle's weights give
    cfg = load_config(run_dir / "config.yaml")
    before = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    one_process = evaluate(cfg, checkpoint)["val_loss"]
    # its one-rank group is gone with it: this process is no rank of a leftover group (the
    # CLI's main() would end such a process with os._exit after its next command)
    assert not torch.distributed.is_initialized()
    assert {k: os.environ.get(k) for k in before} == before
    assert _bundle_val_loss(bundle, meta, 10) == pytest.approx(one_process, rel=1e-6)
