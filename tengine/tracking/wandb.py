"""Weights & Biases: the resolved config, and every train and val record at the optimizer step.

Offline unless told otherwise: `logging.wandb.mode` `auto` (the default) is `online` when
WANDB_API_KEY is set and `offline` otherwise; `offline` writes `RUN/wandb/offline-run-*/`
(upload it later with `wandb sync`), `disabled` logs nothing. The config W&B gets is the run's
resolved config (secret-looking values masked), nothing from the environment: W&B's own
snapshot of argv, git, host and code is off. Each checkpoint is logged as an artifact that
references its files (`logging.wandb.log_checkpoints`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tengine.engine.callbacks import Callback
from tengine.redact import redact_tree
from tengine.tracking.tensorboard import scalars

RUN_FILE = "tengine_run.json"  # RUN/wandb/: the W&B run's id, project, entity and mode


def settings():
    """W&B's own snapshot (argv, git state and diff, host, code) stays off: tengine's env.json
    and REPRODUCE.md record those with secrets masked."""
    import wandb

    return wandb.Settings(silent=True, console="off", disable_git=True, save_code=False,
                          disable_code=True, x_disable_meta=True, x_disable_machine_info=True,
                          disable_job_creation=True)


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
        mode = mode_of(w.mode)
        self.run = wandb.init(project=w.project, entity=w.entity, name=self.cfg.name,
                              dir=str(self.dir), mode=mode,
                              config=redact_tree(self.cfg.model_dump(mode="json")),
                              tags=list(dict.fromkeys([*self.cfg.logging.tags, *w.tags])),
                              settings=settings(), reinit="finish_previous")  # sweep trials
        if mode != "disabled":  # where a later export logs the run's bundle (tracking/bundles.py)
            from tengine.files import write_json

            write_json(self.dir / "wandb" / RUN_FILE, {"id": self.run.id, "project": w.project,
                                                      "entity": w.entity, "mode": mode})

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

        from tengine.files import sha256_file

        manifest = Path(path) / "manifest.json"
        art = wandb.Artifact(f"{self.cfg.name}-checkpoints", type="checkpoint", metadata={
            "step": trainer.state.step, "path": str(path),
            "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None})
        # not checksummed by W&B (hashing a large checkpoint on rank 0 would stall the other
        # ranks): its manifest, whose sha256 is above, holds every file's sha256
        art.add_reference(f"file://{Path(path).resolve()}", checksum=False)
        self.run.log_artifact(art, aliases=[Path(path).name])

    def on_fit_end(self, trainer, summary) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            try:
                run.summary.update({k: v for k, v in summary.items()
                                    if isinstance(v, (int, float, str)) and not isinstance(v, bool)})
            finally:
                run.finish(exit_code=0 if summary.get("status") in ("completed", "preempted")
                           else 1)
