"""The Reporter seam: where metrics records, checkpoints and the summary go.

`LocalReporter(run_dir)` appends records to `run_dir/metrics.jsonl`, keeps checkpoints under
`run_dir/checkpoints/` and writes `summary.json`; only rank 0 writes. `SchedulerReporter` adds
one report per evaluation or checkpoint for a scheduler that watches the run (Ray Train, Ray
Tune: in `tengine.cluster`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tengine.files import (
    json_safe,
    write_json,  # noqa: F401 — re-exported: the engine's writers import it here
)


class Reporter:
    run_dir: Path
    is_main: bool = True

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def log(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def checkpoint_saved(self, path: Path, metrics: dict[str, Any]) -> None:
        """Called on every rank after a complete checkpoint is in place."""

    def finish(self, summary: dict[str, Any]) -> None:
        raise NotImplementedError


class LocalReporter(Reporter):
    def __init__(self, run_dir: str | Path, is_main: bool = True):
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self._fh = None  # nothing is created before the run starts (a bad config leaves no trace)

    def log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        if self._fh is None:
            self._fh = (self.run_dir / "metrics.jsonl").open("a", buffering=1)  # line-buffered
        self._fh.write(json.dumps(json_safe(record)) + "\n")

    def finish(self, summary: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "summary.json", summary)


REPORTED = ("val_loss", "val_ppl", "val_accuracy")


class SchedulerReporter(LocalReporter):
    """The local files plus `emit(metrics, checkpoint)` at every evaluation and every checkpoint.

    An evaluation and the checkpoint saved right after it at the same step go out as one report
    (the scheduler must see the checkpoint with the metric, or PBT would clone an older one): the
    eval is held until the next record, checkpoint or the end of the run, whichever comes first,
    so a report is late by at most `log_every_n_steps` steps. Every report has `step` (the one
    axis schedulers count budgets in), the val metrics of that step if it was evaluated, the
    latest `train_loss` and `lr`. Runs on every rank (a Ray Train report is a collective)."""

    def __init__(self, run_dir: str | Path, is_main: bool = True):
        super().__init__(run_dir, is_main=is_main)
        self._pending: dict[str, Any] | None = None
        self._train: dict[str, Any] = {}

    def emit(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """`metrics` holds no None (and no NaN: those became None and were dropped)."""
        raise NotImplementedError

    def _emit(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self.emit({k: v for k, v in json_safe(metrics).items() if v is not None}, checkpoint)

    def log(self, record: dict[str, Any]) -> None:
        super().log(record)
        if self._pending is not None and record.get("step") != self._pending["step"]:
            self._flush()
        if record.get("split") == "train":
            self._train = {"train_loss": record.get("loss"), "lr": record.get("lr")}
        elif record.get("split") == "val":
            self._pending = {"step": record["step"], "epoch": record.get("epoch"),
                             **{k: record[k] for k in REPORTED if record.get(k) is not None}}

    def checkpoint_saved(self, path: Path, metrics: dict[str, Any]) -> None:
        from tengine.engine.checkpoint import STEP_DIR

        step = int(STEP_DIR.match(path.name).group(1))
        base = self._pending if self._pending and self._pending["step"] == step else {"step": step}
        self._pending = None
        self._emit({**base, **self._train, "checkpoint_step": step}, path)

    def finish(self, summary: dict[str, Any]) -> None:
        self._flush()
        super().finish(summary)

    def _flush(self) -> None:
        if self._pending is not None:
            report, self._pending = {**self._pending, **self._train}, None
            self._emit(report, None)


class MemoryReporter(Reporter):
    """Keeps records in memory and writes nothing: for an evaluation, which has no run dir."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)  # only where checkpoints would be looked up
        self.records: list[dict[str, Any]] = []

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def finish(self, summary: dict[str, Any]) -> None:
        pass
