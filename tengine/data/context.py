"""What data building needs to know about the run it builds for (`DataContext`).

    ctx = DataContext(run_dir=Path("runs/x"), saved=Path("runs/x"), is_main=strategy.is_main,
                      broadcast=strategy.broadcast)
    bundle = build_data(cfg.data, cfg.task, ctx)

`engine.run` makes one per rank: rank 0 trains the BPE tokenizer once and saves it as
`run_dir/tokenizer.json`; the other ranks wait (`broadcast` doubles as the barrier and carries
rank 0's error, so no rank hangs when it fails) and load that file. `saved` is the run whose
tokenizer a resumed run (or `tengine evaluate`) reuses instead of training it again. Without a
context (the Python API's `build_data(cfg.data, cfg.task)`) nothing is saved or reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _same(obj: Any) -> Any:
    return obj


@dataclass
class DataContext:
    run_dir: Path | None = None  # where rank 0 saves the tokenizer; None = save nothing
    saved: Path | None = None  # a run dir whose tokenizer.json is reused; None = a fresh run
    is_main: bool = True
    broadcast: Callable[[Any], Any] = _same  # rank 0's object to every rank (a barrier too)
    progress: bool = False  # tqdm bars for tokenizing (rank 0, on a TTY)
