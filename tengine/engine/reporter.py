"""The Reporter seam: where metrics records, checkpoints and the summary go.

`LocalReporter(run_dir)` appends records to `run_dir/metrics.jsonl`, keeps checkpoints under
`run_dir/checkpoints/` and writes `summary.json`; only rank 0 writes. A Ray reporter (in
`tengine.cluster`) implements the same three calls on top of `ray.train.report`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON readers reject them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(_clean(data), indent=2, sort_keys=False))
    os.replace(tmp, path)


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
        self._fh.write(json.dumps(_clean(record)) + "\n")

    def finish(self, summary: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "summary.json", summary)


class MemoryReporter(Reporter):
    """Keeps records in memory and writes nothing: for an evaluation, which has no run dir."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)  # only where checkpoints would be looked up
        self.records: list[dict[str, Any]] = []

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def finish(self, summary: dict[str, Any]) -> None:
        pass
