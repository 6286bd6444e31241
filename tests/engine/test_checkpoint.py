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
    # 6 steps of 2 micro-batches; callbacks' states by name (the progress bar, the db tracker,
    # the profile writer and the alert rules, on by default; no plots here): the alert rules
    # keep their windows, so a resumed run does not alert twice
    assert state["step"] == 6 and state["batch_in_epoch"] == 12 and state["global_batch"] == 8
    assert set(state["callbacks"]) == {"ProgressBar", "DbTracker", "ProfileWriter", "alerts"}
    assert state["callbacks"]["alerts"]["nonfinite"]["firing"] is False
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


def test_the_manifest_holds_every_ranks_files_even_those_rank_0_cannot_see(tmp_path):
    """Two ranks (threads sharing the checkpoint dir, as two nodes share NFS). Rank 0's listing
    misses rank 1's shard, as a node's cached view of NFS can: the manifest still has it, with
    the hash rank 1 computed, and the hashing is spread over both ranks."""
    import threading

    import tengine.engine.checkpoint as ckpt

    barrier = threading.Barrier(2)
    gathered: dict[int, list] = {}
    lock = threading.Lock()
    rounds = [0, 0]

    def all_gather_for(rank):
        def all_gather(obj):
            with lock:
                gathered.setdefault(rounds[rank], [None, None])[rank] = obj
            barrier.wait()
            out = list(gathered[rounds[rank]])
            barrier.wait()
            rounds[rank] += 1
            return out
        return all_gather

    class Rank0View(CheckpointManager):  # a stale listing: rank 1's files are not there yet
        def _list(self, directory):
            return [f for f in super()._list(directory) if "rank1" not in f]

    hashed: dict[int, list[str]] = {0: [], 1: []}
    real_sha = ckpt.sha256_file

    def counting_sha(path):
        hashed[int(threading.current_thread().name[-1])].append(path.name)
        return real_sha(path)

    def write_for(rank):
        def write(directory):
            for i in range(4):
                (directory / f"shard_rank{rank}_{i}.bin").write_bytes(bytes([rank, i]) * 100)
        return write

    managers = {0: Rank0View(tmp_path, is_main=True, rank=0, barrier=barrier.wait,
                             all_gather=all_gather_for(0)),
                1: CheckpointManager(tmp_path, is_main=False, rank=1, barrier=barrier.wait,
                                     all_gather=all_gather_for(1))}
    errors = []

    def save(rank):
        try:
            managers[rank].save(3, write_for(rank), {"val_loss": 1.0})
        except Exception as err:  # noqa: BLE001
            errors.append(err)
            barrier.abort()

    ckpt.sha256_file = counting_sha
    try:
        threads = [threading.Thread(target=save, args=(r,), name=f"rank{r}") for r in (0, 1)]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
    finally:
        ckpt.sha256_file = real_sha
    assert not errors, errors
    final = tmp_path / "step_00000003"
    files = json.loads((final / "manifest.json").read_text())["files"]
    assert sorted(files) == sorted(f"shard_rank{r}_{i}.bin" for r in (0, 1) for i in range(4))
    assert verify(final) is None  # every hash right
    assert all(name.startswith("shard_rank1") for name in hashed[1] if "rank1" in name)
    assert hashed[0] and hashed[1]  # both ranks hashed: the work is spread
    assert not set(hashed[0]) & set(hashed[1])  # each file once


def test_callback_states_are_restored_by_name_when_plots_are_toggled(tiny_config):
    """A checkpoint saved with plots off, resumed with plots on (one more callback before the
    user's): the user's callback gets its own state back, not the next one's."""
    from tengine.engine.callbacks import Callback
    from tengine.engine.trainer import TrainState

    class Counter(Callback):
        def __init__(self):
            self.steps = 0

        def on_step_end(self, trainer, record):
            self.steps += 1

        def state_dict(self):
            return {"steps": self.steps}

        def load_state_dict(self, state):
            self.steps = state["steps"]

    from tengine import TaskSpec, Trainer
    from tengine.data import build_data
    from tengine.models import build_model

    def train(cfg, counter):
        data = build_data(cfg.data, cfg.task)
        model = build_model(cfg.model, data.vocab_size, seq_len=cfg.data.seq_len)
        return Trainer(model, cfg, TaskSpec.language_modeling(), callbacks=[counter]).train(
            data.train, data.val)

    first = Counter()
    train(tiny_config("training.max_steps=10", "training.halt_at_step=6", "logging.plots=false"), first)
    second = Counter()
    train(tiny_config("training.max_steps=10", "logging.plots=true"), second)
    assert first.steps == 6 and second.steps == 10  # 6 restored + 4 more
    # a field a newer version wrote is ignored; one an older checkpoint lacks has its default
    state = TrainState.from_saved({"step": 3, "epoch": 1, "a_future_field": 7})
    assert state.step == 3 and state.epoch == 1 and state.tokens == 0


def test_a_checkpoint_of_another_model_is_a_clear_error(tiny_config):
    from tengine.engine import run
    from tengine.errors import CheckpointError

    run(tiny_config("training.max_steps=2"))
    with pytest.raises(CheckpointError, match=r"does not fit this model or optimizer.*"
                                              r"checkpoint.resume: never"):
        run(tiny_config("training.max_steps=4", "model.d_model=32"))
