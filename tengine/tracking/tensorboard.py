"""TensorBoard event files under `RUN/tensorboard/`: every numeric field of the train and val
records as `train/<field>` / `val/<field>` scalars at the optimizer step.

A resumed run opens its writer with `purge_step` = the step it resumed from + 1, so TensorBoard
drops what an earlier attempt logged past that checkpoint: one value per step, as the resumed
run computed it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tengine.engine.callbacks import Callback


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """`split/field` → value for every numeric field but the step itself."""
    split = record["split"]
    return {f"{split}/{k.removeprefix(split + '_')}": float(v) for k, v in record.items()
            if k not in ("split", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardTracker(Callback):
    def __init__(self, run_dir: Path):
        from tengine.extras import require

        require("tensorboard", "tracking", "logging.trackers 'tensorboard'")
        self.dir, self.writer = Path(run_dir) / "tensorboard", None

    def on_fit_start(self, trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        resumed = trainer.state.step
        self.writer = SummaryWriter(str(self.dir), purge_step=resumed + 1 if resumed else None)

    def _write(self, record: dict[str, Any] | None) -> None:
        if record and self.writer is not None:
            for tag, value in scalars(record).items():
                self.writer.add_scalar(tag, value, global_step=record["step"])

    def on_step_end(self, trainer, record) -> None:
        self._write(record)

    def on_eval_end(self, trainer, record) -> None:
        if self.writer is not None:  # None outside a fit (`tengine evaluate`): nothing to write
            self._write(record)
            self.writer.flush()

    def on_fit_end(self, trainer, summary) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
