"""Exact resume: N steps straight vs N/2, stop, `--resume auto` to N give the same loss curve."""

from __future__ import annotations

import json

from tengine.cli import main
from tengine.data import build_data
from tests.conftest import REPO, TINY, read_jsonl

N = 60
ARGS = [*TINY, "training.max_steps=60", "training.grad_accum_steps=2", "model.dropout=0.1",
        "data.markov.num_tokens=18000", "checkpoint.every_n_steps=10"]


def _train(run_dir, *extra: str) -> int:
    sets = [x for a in ARGS + list(extra) for x in ("--set", a)]
    return main(["train", str(REPO / "configs/quickstart.yaml"), "--run-dir", str(run_dir), *sets])


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["step_loss"] for r in read_jsonl(run_dir / "metrics.jsonl")}


def test_resume_mid_epoch_continues_the_same_curve(tmp_path):
    from tengine.config import load_config

    cfg = load_config(REPO / "configs/quickstart.yaml", ARGS)
    train = build_data(cfg.data, cfg.task).train
    batches = len(train) // cfg.training.micro_batch_size
    steps_per_epoch = -(-batches // 2)
    # The break must fall mid-epoch, the run must cross an epoch boundary, and that epoch must
    # end on a short window (odd number of micro-batches), or the test proves less than it says.
    assert N // 2 % steps_per_epoch != 0 and N > steps_per_epoch and batches % 2 == 1

    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert _train(straight) == 0
    assert _train(broken, f"training.halt_at_step={N // 2}") == 0
    halted = json.loads((broken / "summary.json").read_text())
    assert halted["status"] == "halted" and halted["steps"] == N // 2
    assert _train(broken, "checkpoint.resume=auto") == 0

    a, b = _losses(straight), _losses(broken)
    assert sorted(a) == sorted(b) == list(range(1, N + 1))
    diffs = {step: abs(a[step] - b[step]) for step in a}
    assert max(diffs.values()) <= 1e-6, {s: d for s, d in diffs.items() if d > 1e-6}
    sa = json.loads((straight / "summary.json").read_text())
    sb = json.loads((broken / "summary.json").read_text())
    assert sb["resumed_from"].endswith(f"step_{N // 2:08d}")
    assert abs(sa["val_loss"] - sb["val_loss"]) <= 1e-6
    assert sa["steps"] == sb["steps"] == N


def test_resume_with_a_new_learning_rate_trains_with_it_not_the_checkpoints(tmp_path):
    """A run resumed from a checkpoint with another optim.lr (what a PBT exploit does) must use
    its own lr: loading the optimizer and schedule state would otherwise put the old one back."""
    from tengine.engine.optim import lr_factor

    run_dir = tmp_path / "run"
    assert _train(run_dir, "training.halt_at_step=20") == 0
    assert _train(run_dir, "checkpoint.resume=auto", "optim.lr=1e-4") == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resume = next(i for i, r in enumerate(records) if r["split"] == "resume")
    assert records[resume]["step"] == 20 and records[resume]["from"].endswith("step_00000020")
    after = [r for r in records[resume:] if r["split"] == "train"]
    from tengine.config import load_config

    schedule = load_config(REPO / "configs/quickstart.yaml", ARGS).schedule
    assert after[0]["step"] == 21
    for r in after:  # logged after the scheduler stepped: the lr of the next update
        assert abs(r["lr"] - 1e-4 * lr_factor(r["step"], N, schedule)) <= 1e-12, r
    before = [r for r in records[:resume] if r["split"] == "train"]
    assert before[-1]["lr"] > 1e-3  # the first run really had another lr (3e-3 × schedule)
