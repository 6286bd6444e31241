"""Callbacks observe the run at a few boundaries; they never change it.

Hooks: on_fit_start, on_step_end(record), on_eval_end(record), on_checkpoint_saved(path),
on_epoch_end(epoch), on_fit_end(summary). Built in: a tqdm progress bar and the PNG plots.
Metrics JSONL is the Reporter's job (it must also work under Ray).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tengine.files import read_metrics  # noqa: F401 — re-exported: readers of run dirs import it here

if TYPE_CHECKING:
    from tengine.engine.trainer import Trainer


class Callback:
    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer, record: dict[str, Any] | None) -> None: ...
    def on_eval_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_checkpoint_saved(self, trainer: Trainer, path: Path) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None: ...
    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...

    @property
    def state_key(self) -> str:
        """The name its state is saved under in a checkpoint (restored by name, not position)."""
        return type(self).__name__

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def progress_enabled(setting: str) -> bool:
    if setting != "auto":
        return setting == "on"
    return sys.stderr.isatty() and not os.environ.get("CI")


class ProgressBar(Callback):
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.enabled and trainer.strategy.is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=trainer.max_steps, initial=trainer.state.step, desc="train",
                            unit="step", dynamic_ncols=True)

    def on_step_end(self, trainer: Trainer, record: dict[str, Any] | None) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if record and record["loss"] is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")

    def on_eval_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.write(f"step {record['step']}: val_loss {record['val_loss']:.4f}")

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Plots(Callback):
    """loss.png, lr.png, throughput.png under `run_dir/plots/`, from the whole metrics.jsonl."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        if trainer.strategy.is_main:
            plot_run(self.run_dir, summary.get("loss_floor"))


def plot_run(run_dir: Path, loss_floor: float | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # as before for pyplot users in this process; cheap without pyplot
    # Figures without pyplot: savefig renders the PNGs with Agg all the same, and pyplot's import
    # (~0.2 s at the end of every run, on rank 0) and global figure list are not needed.
    from matplotlib.figure import Figure

    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = {
        "loss.png": ("loss (nats/token)", [("train", train, "loss"), ("val", val, "val_loss")]),
        "lr.png": ("learning rate", [("lr", train, "lr")]),
        "throughput.png": ("tokens/s", [("tokens/s", train, "tokens_per_s")]),
    }
    written = []
    for name, (ylabel, series) in panels.items():
        fig = Figure(figsize=(6, 3.5), dpi=110)
        ax = fig.subplots()
        for label, recs, key in series:
            pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=label, marker="." if len(pts) < 30 else None)
        if name == "loss.png" and loss_floor is not None:
            ax.axhline(loss_floor, color="gray", linestyle="--", label="loss floor")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name)
        written.append(out_dir / name)
    return written


class KillRankAtStep(Callback):
    """Test-only fault injection (`distributed.kill_rank_at_step`): the last rank kills itself
    with SIGKILL after `step`, once per run dir (a marker file keeps the restart alive)."""

    def __init__(self, step: int, run_dir: Path):
        self.step, self.marker = step, Path(run_dir) / ".killed_once"

    def on_step_end(self, trainer: Trainer, record: dict[str, Any] | None) -> None:
        s = trainer.strategy
        if trainer.state.step == self.step and s.rank == s.world_size - 1 and not self.marker.exists():
            import signal

            self.marker.write_text(str(self.step))
            os.kill(os.getpid(), signal.SIGKILL)
