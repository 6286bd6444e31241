"""RayReporter: the local reporter plus a `ray.train.report` at every evaluation and checkpoint.

    reporter = RayReporter(run_dir, is_main=rank == 0, durable=bool(cfg.distributed.storage_path))

Every evaluation and every checkpoint is reported to Ray Train (metrics with `step`; one report
when both fall on the same step), so whatever watches the run sees them: a Tune trial that
drives this run relays them to its scheduler (`tune_trial.py`). Every rank calls `report` (Ray
makes it a collective); each costs about RAY_TRAIN_HEALTH_CHECK_INTERVAL_S.

With `distributed.storage_path` set (`durable`; a directory, or a URI Ray's pyarrow filesystem
writes: `s3://bucket/prefix`, `gs://…`), the report of a checkpoint also hands Ray its directory,
which Ray uploads under `<storage_path>/<run name>/step_…` and keeps `keep_last + keep_best` of,
ranked by the monitored metric (Ray's CheckpointConfig); rank 0 passes the directory, which on
the shared run dir already holds every rank's shard. Without it only the path is reported
(`tengine_checkpoint`). `fetch_newest` brings Ray's newest checkpoint back into a run dir that
lacks it (a new cluster, a lost disk), so "resume auto" finds it. The copy costs one upload of
each checkpoint, at the step it is saved.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from tengine.engine.checkpoint import MANIFEST, STEP_DIR
from tengine.engine.reporter import SchedulerReporter

log = logging.getLogger("tengine")


class RayReporter(SchedulerReporter):
    def __init__(self, run_dir: str | Path, is_main: bool, monitor: str, mode: str,
                 durable: bool = False):
        super().__init__(run_dir, is_main=is_main)
        self.monitor, self.mode, self.durable = monitor, mode, durable

    def emit(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        import ray.train

        report = dict(metrics)
        if checkpoint is not None:
            report["tengine_checkpoint"] = str(checkpoint)
        if checkpoint is None or not self.durable:
            ray.train.report(report)
            return
        # a checkpoint saved before the first evaluation ranks worst (finite: Ray keeps its ranking
        # in JSON, where inf comes back as null and breaks the ranking of the next run)
        report.setdefault(self.monitor, sys.float_info.max * (1 if self.mode == "min" else -1))
        copy = ray.train.Checkpoint.from_directory(str(checkpoint)) if self.is_main else None
        ray.train.report(report, checkpoint=copy, checkpoint_dir_name=checkpoint.name)


def fetch_newest(checkpoint_root: Path) -> None:
    """Copy Ray's newest reported checkpoint into `checkpoint_root` when the run dir has no copy
    of it (a new cluster, a lost disk). Not hashed here: resume (`auto`) verifies the newest
    checkpoint against its manifest and falls back to an older one if it is bad. Call on one rank."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return
    name = Path(checkpoint.path).name
    target = checkpoint_root / name
    if not STEP_DIR.match(name) or (target / MANIFEST).is_file():
        return  # not one of ours, or already here
    tmp = checkpoint_root / f".fetch-{name}"
    checkpoint_root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.to_directory(str(tmp))
    shutil.rmtree(target, ignore_errors=True)  # an incomplete copy without its manifest
    tmp.rename(target)
    log.info("fetched checkpoint %s from Ray storage %s", name, checkpoint.path)
