"""Trackers: where a run's records go besides its own metrics.jsonl (rank 0 only).

    logging: {trackers: [jsonl, tensorboard, wandb], callbacks: ["mypkg.cb:MyCallback"]}

`jsonl` is the run dir's metrics.jsonl, which the Reporter always writes (every other tool in
tengine reads it); `tensorboard` writes event files under `RUN/tensorboard/`; `wandb` logs to
Weights & Biases, offline unless `logging.wandb.mode` or WANDB_API_KEY say otherwise. Every
sink gets the engine's optimizer step as its step. `logging.callbacks` adds your own callbacks
by import path. A tracker or callback that raises is a warning, never a failed run
(`Guarded`): its first failure is logged once and it is switched off for the rest of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tengine.registry import Registry
from tengine.tracking.base import Guarded

TRACKERS: Registry = Registry("tracker", "logging.trackers")


@TRACKERS.register("jsonl")
def _jsonl(cfg: Any, run_dir: Path):
    return None  # the Reporter's metrics.jsonl: always written


@TRACKERS.register("tensorboard")
def _tensorboard(cfg: Any, run_dir: Path):
    from tengine.tracking.tensorboard import TensorBoardTracker

    return TensorBoardTracker(run_dir)


@TRACKERS.register("wandb")
def _wandb(cfg: Any, run_dir: Path):
    from tengine.tracking.wandb import WandbTracker

    return WandbTracker(cfg, run_dir)


def build_callbacks(cfg: Any, run_dir: Path, is_main: bool) -> list:
    """The config's trackers and import-path callbacks, each `Guarded`; none off rank 0."""
    if not is_main:
        return []
    from tengine.registry import import_path

    out = []
    for name in dict.fromkeys(cfg.logging.trackers):
        tracker = TRACKERS.get(name)(cfg, Path(run_dir))
        if tracker is not None:
            out.append(Guarded(tracker, f"tracker '{name}'"))
    for spec in cfg.logging.callbacks:
        made = import_path(spec, "logging.callbacks")
        out.append(Guarded(made() if isinstance(made, type) or callable(made) else made,
                           f"callback '{spec}'"))
    return out


__all__ = ["TRACKERS", "Guarded", "build_callbacks"]
