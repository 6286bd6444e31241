"""Checkpoints: atomic, verified, retention best-K ∪ last-N, corrupted newest skipped."""

from __future__ import annotations

import json
import logging

import pytest

from tengine.engine import run
from tengine.engine.checkpoint import CheckpointManager, verify
from tengine.errors import CheckpointError
from tests.conftest import read_jsonl


def _fake_write(payload: bytes):
    def write(directory):
        (directory / "weights.bin").write_bytes(payload)
    return write


def test_retention_keeps_last_n_and_best_k(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2, keep_best=1, monitor="val_loss", mode="min")
    losses = {10: 3.0, 20: 1.0, 30: 2.0, 40: 2.5, 50: 2.7}
    for step, loss in losses.items():
        mgr.save(step, _fake_write(b"x" * step), {"val_loss": loss})
    assert [p.name for p in mgr.checkpoints()] == ["step_00000020", "step_00000040", "step_00000050"]
    assert mgr.best().name == "step_00000020"


def test_failed_write_leaves_no_checkpoint(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _fake_write(b"ok"), {})

    def crash(directory):
        (directory / "half.bin").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        mgr.save(2, crash, {})
    assert [p.name for p in mgr.checkpoints()] == ["step_00000001"]
    assert mgr.latest_valid().name == "step_00000001"


def test_verify_detects_truncation_corruption_and_missing_manifest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=5)
    path = mgr.save(1, _fake_write(b"0123456789"), {})
    assert verify(path) is None
    (path / "weights.bin").write_bytes(b"01234")
    assert "truncated" in verify(path)
    (path / "weights.bin").write_bytes(b"0123456780")
    assert "sha256" in verify(path)
    (path / "manifest.json").unlink()
    assert "manifest" in verify(path)


def test_corrupted_newest_checkpoint_is_skipped_on_resume(tiny_config, caplog):
    cfg = tiny_config("training.max_steps=20", "checkpoint.every_n_steps=10", "checkpoint.keep_last=3")
    run(cfg)
    ckpts = cfg.run_dir() + "/checkpoints"
    newest = f"{ckpts}/step_00000020/model.safetensors"
    with open(newest, "r+b") as fh:  # flip bytes in the middle: same size, wrong hash
        fh.seek(200)
        fh.write(b"\x00\xff" * 8)
    with caplog.at_level(logging.WARNING, logger="tengine"):
        summary = run(tiny_config("training.max_steps=30", "checkpoint.every_n_steps=10",
                                  "checkpoint.keep_last=3", "checkpoint.resume=auto"))
    assert summary["resumed_from"].endswith("step_00000010")
    assert any("step_00000020" in r.message and "sha256" in r.message for r in caplog.records)
    assert summary["status"] == "completed" and summary["steps"] == 30


def test_truncated_checkpoint_asked_for_by_path_is_an_error(tiny_config):
    cfg = tiny_config("training.max_steps=10")
    summary = run(cfg)
    ckpt = summary["last_checkpoint"]
    data = open(f"{ckpt}/optim.pt", "rb").read()
    open(f"{ckpt}/optim.pt", "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        run(tiny_config("training.max_steps=20", f"checkpoint.resume={ckpt}"))


def test_resume_never_moves_the_old_run_aside(tiny_config, tmp_path):
    run(tiny_config("training.max_steps=5"))
    summary = run(tiny_config("training.max_steps=5", "checkpoint.resume=never"))
    assert summary["resumed_from"] is None
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("t-")]
    assert len(archived) == 1 and (archived[0] / "summary.json").is_file()
    records = read_jsonl(tmp_path / "t" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]


def test_checkpoint_holds_the_full_training_state(tiny_config):
    summary = run(tiny_config("training.max_steps=6", "training.grad_accum_steps=2"))
    ckpt = summary["last_checkpoint"]
    manifest = json.load(open(f"{ckpt}/manifest.json"))
    assert set(manifest["files"]) == {"model.safetensors", "optim.pt", "rng_rank0.pt",
                                      "trainer_state.json"}
    state = json.load(open(f"{ckpt}/trainer_state.json"))
    # 6 steps of 2 micro-batches; callbacks' states by name (the progress bar, no plots here)
    assert state["step"] == 6 and state["batch_in_epoch"] == 12 and state["global_batch"] == 8
    assert state["callbacks"] == {"ProgressBar": {}}
    import torch

    optim = torch.load(f"{ckpt}/optim.pt", weights_only=True)
    assert optim["optimizer"]["state"] and optim["extra"]["scheduler"]["last_epoch"] == 6


def test_only_rank_0_reads_checkpoints_to_choose_one(tmp_path, monkeypatch):
    """Other ranks take rank 0's choice (or its error) instead of hashing every file again."""
    import tengine.engine.checkpoint as ckpt

    main = CheckpointManager(tmp_path)
    main.save(1, _fake_write(b"x"), {})
    told: list = []

    def broadcast(choice):
        told.append(choice)
        return choice

    assert CheckpointManager(tmp_path, broadcast=broadcast).resolve("auto").name == "step_00000001"
    monkeypatch.setattr(ckpt, "verify", lambda path: pytest.fail("a non-main rank hashed files"))
    other = CheckpointManager(tmp_path, is_main=False, broadcast=lambda _: told[-1])
    assert other.resolve("auto").name == "step_00000001"
    failing = CheckpointManager(tmp_path, is_main=False, broadcast=lambda _: (None, "bad path"))
    with pytest.raises(CheckpointError, match="bad path"):
        failing.resolve("/nope")


def test_resuming_from_an_earlier_checkpoint_drops_the_replaced_timeline(tiny_config, tmp_path):
    """`--resume PATH` to an older step (what a PBT exploit does): the run dir's newer
    checkpoints belong to the run being replaced; left in place, retention would keep them as
    the newest and delete the new run's checkpoints, and `resume auto` would go back to them."""
    from tengine.engine import run

    cfg = tiny_config("training.max_steps=30", "checkpoint.every_n_steps=10", "checkpoint.keep_last=3",
                      "checkpoint.keep_best=0")
    run(cfg)
    root = tmp_path / "t" / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000010", "step_00000020", "step_00000030"]
    first_20 = (root / "step_00000020" / "manifest.json").read_text()
    again = cfg.model_copy(update={
        "checkpoint": cfg.checkpoint.model_copy(update={"resume": str(root / "step_00000010"), "keep_last": 1}),
        "training": cfg.training.model_copy(update={"max_steps": 40, "halt_at_step": 20})})
    summary = run(again)
    assert summary["status"] == "halted" and summary["steps"] == 20
    # the new step 20 is kept (newest), the old 20 and 30 are gone, 10 fell to keep_last=1
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000020"]
    assert (root / "step_00000020" / "manifest.json").read_text() != first_20
