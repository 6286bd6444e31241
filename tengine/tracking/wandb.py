"""Weights & Biases: the resolved config, and every train and val record at the optimizer step.

Offline unless told otherwise: `logging.wandb.mode` `auto` (the default) is `online` when
WANDB_API_KEY is set and `offline` otherwise; `offline` writes `RUN/wandb/offline-run-*/`
(upload it later with `wandb sync`), `disabled` logs nothing. The config W&B gets is the run's
resolved config, nothing from the environment. Each checkpoint is logged as an artifact that
references its files (`logging.wandb.log_checkpoints`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tengine.engine.callbacks import Callback
from tengine.tracking.tensorboard import scalars


def mode_of(setting: str) -> str:
    if setting != "auto":
        return setting
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbTracker(Callback):
    def __init__(self, cfg: Any, run_dir: Path):
        from tengine.extras import require

        require("wandb", "tracking", "logging.trackers 'wandb'")
        self.cfg, self.dir, self.run = cfg, Path(run_dir), None

    def on_fit_start(self, trainer) -> None:
        import wandb

        w = self.cfg.logging.wandb
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=w.project, entity=w.entity, name=self.cfg.name,
                              dir=str(self.dir), mode=mode_of(w.mode),
                              config=self.cfg.model_dump(mode="json"), tags=list(w.tags),
                              settings=wandb.Settings(silent=True, console="off"))

    def _log(self, record: dict[str, Any] | None) -> None:
        if record and self.run is not None:
            self.run.log(scalars(record), step=record["step"])

    def on_step_end(self, trainer, record) -> None:
        self._log(record)

    def on_eval_end(self, trainer, record) -> None:
        self._log(record)

    def on_checkpoint_saved(self, trainer, path: Path) -> None:
        """The checkpoint as a W&B artifact that references its files (checksummed, not
        uploaded: the bytes stay in the run dir), aliased `step_XXXXXXXX`."""
        if self.run is None or not self.cfg.logging.wandb.log_checkpoints:
            return
        import wandb

        art = wandb.Artifact(f"{self.cfg.name}-checkpoints", type="checkpoint",
                             metadata={"step": trainer.state.step, "path": str(path)})
        art.add_reference(f"file://{Path(path).resolve()}")
        self.run.log_artifact(art, aliases=[Path(path).name])

    def on_fit_end(self, trainer, summary) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in summary.items()
                                     if isinstance(v, (int, float, str)) and not isinstance(v, bool)})
            self.run.finish()
            self.run = None
