"""Run by tests under torchrun: train one config and dump what each rank really stores.

    torchrun --nproc_per_node 2 tests/backends/probe.py OUT_DIR KEY=VALUE ...
Writes OUT_DIR/rank{r}.json with the strategy's shard fractions, read from the live objects.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tengine.backends import build_strategy
from tengine.backends.process_group import exit_cleanly
from tengine.config import load_config
from tengine.engine import run


def main() -> None:
    out = Path(sys.argv[1])
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/quickstart.yaml", sys.argv[2:])
    strategy = build_strategy(cfg)
    summary = run(cfg, strategy=strategy)
    (out / f"rank{strategy.rank}.json").write_text(json.dumps({
        "rank": strategy.rank, "world_size": strategy.world_size, "status": summary["status"],
        # ZeRO's own flag: its optimizer partitions live on (and step on) the CPU
        "cpu_offload": getattr(getattr(strategy, "zero_optimizer", None), "cpu_offload", None),
        **strategy.shard_fractions()}))
    exit_cleanly(0)


if __name__ == "__main__":
    main()
