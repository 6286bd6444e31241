"""RayReporter: the local reporter plus a durable copy of every checkpoint in Ray Train's storage.

    reporter = RayReporter(run_dir, is_main=rank == 0, monitor="val_loss", mode="min")

With `distributed.storage_path` set (a directory, or a URI Ray's pyarrow filesystem writes:
`s3://bucket/prefix`, `gs://…`), every checkpoint the engine completes in the run dir is also
handed to `ray.train.report`, which uploads it under `<storage_path>/<run name>/step_…` and keeps
`keep_last + keep_best` of them ranked by the monitored metric (Ray's CheckpointConfig). Every
rank calls `report` (Ray makes it a collective); rank 0 passes the directory, which on the
shared run dir already holds every rank's shard. `fetch_newest` brings Ray's newest checkpoint
back into a run dir that lacks it (a new cluster, a lost disk), so "resume auto" finds it. The
copy costs one upload of each checkpoint, at the step it is saved.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from tengine.engine.checkpoint import MANIFEST, STEP_DIR
from tengine.engine.reporter import LocalReporter

log = logging.getLogger("tengine")


class RayReporter(LocalReporter):
    def __init__(self, run_dir: str | Path, is_main: bool, monitor: str, mode: str):
        super().__init__(run_dir, is_main=is_main)
        self.monitor, self.mode = monitor, mode

    def checkpoint_saved(self, path: Path, metrics: dict[str, Any]) -> None:
        import ray.train

        report = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and math.isfinite(v)}
        # a checkpoint saved before the first evaluation ranks worst (finite: Ray keeps its ranking
        # in JSON, where inf comes back as null and breaks the ranking of the next run)
        report.setdefault(self.monitor, sys.float_info.max * (1 if self.mode == "min" else -1))
        report["step"] = int(STEP_DIR.match(path.name).group(1))
        checkpoint = ray.train.Checkpoint.from_directory(str(path)) if self.is_main else None
        ray.train.report(report, checkpoint=checkpoint, checkpoint_dir_name=path.name)


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
