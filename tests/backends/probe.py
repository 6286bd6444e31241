"""Run by tests under torchrun: train one config and dump what each rank really holds.

    torchrun --nproc_per_node 2 tests/backends/probe.py OUT_DIR KEY=VALUE ...
Writes OUT_DIR/rank{r}.json: parameter and optimizer-state fractions held by the rank.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from tengine.backends import build_strategy
from tengine.backends.process_group import exit_cleanly
from tengine.config import load_config
from tengine.engine import run


def _numel(t: torch.Tensor) -> int:
    return t.to_local().numel() if isinstance(t, DTensor) else t.numel()


def main() -> None:
    out = Path(sys.argv[1])
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/quickstart.yaml", sys.argv[2:])
    strategy = build_strategy(cfg)
    summary = run(cfg, strategy=strategy)
    params = list(strategy.model.parameters())
    state = [t for s in strategy.optimizer.state.values() for t in s.values()
             if torch.is_tensor(t) and t.ndim > 0]
    (out / f"rank{strategy.rank}.json").write_text(json.dumps({
        "rank": strategy.rank, "world_size": strategy.world_size, "status": summary["status"],
        "param_fraction": sum(map(_numel, params)) / sum(p.numel() for p in params),
        "optim_fraction": sum(map(_numel, state)) / sum(t.numel() for t in state),
    }))
    exit_cleanly(0)


if __name__ == "__main__":
    main()
