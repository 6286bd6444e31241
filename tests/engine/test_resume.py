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
