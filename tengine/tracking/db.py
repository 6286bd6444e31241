"""The `db` tracker: the run, its resolved config and every train/val record in the experiment
DB (tengine/control/experiments.py), read back by `tengine runs list|show|compare|best`.

The store is `logging.db.store`, else the runs root's embedded store
`sqlite:///<abs logging.root>/control/tengine.db` (the default of `tengine runs` and `tengine
jobs` too). The run's DB id is kept in `RUN/db_run.json`, so a run that resumes in its run dir
continues the same DB run: at its start everything logged past the checkpoint it resumed from
is marked superseded, the steps it redoes are logged once more (every step has one current
value), and the start is recorded as a `resume` artifact naming the checkpoint. A PBT trial
that exploits another trial's checkpoint continues its own DB run the same way; the `resume`
artifact names the donor's checkpoint. A run started afresh in the same run dir is a new DB run,
and the earlier one follows its files to where they were moved (`<dir>-<time>`), `interrupted`
if it never ended.

Rows are buffered and written in one transaction per flush: at every evaluation, checkpoint and
the end, and otherwise every FLUSH_ROWS rows or FLUSH_S seconds, so a long run between
evaluations costs one small write every few seconds, not one per step. A record the trainer
logged between the last flush and a crash is in metrics.jsonl but not in the DB.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tengine.engine.callbacks import Callback

FLUSH_ROWS, FLUSH_S = 500, 5.0
ID_FILE = "db_run.json"  # {"run_id", "store"}: which DB run this run dir is
JOB_ID_ENV = "TENGINE_JOB_ID"  # set by a control-plane job's runner for its child


def metric_rows(record: dict[str, Any]) -> list[tuple[int, str, float]]:
    """`(step, key, value)` of every numeric field: `val_loss` stays, a train record's `loss`
    is `train_loss` (the names of summary.json and `checkpoint.monitor`)."""
    split, step = record["split"], record["step"]
    return [(step, key if key.startswith(split + "_") else f"{split}_{key}", float(value))
            for key, value in record.items()
            if key not in ("split", "step") and isinstance(value, (int, float))
            and not isinstance(value, bool)]


def store_uri(cfg: Any) -> str:
    """The experiment DB of `cfg`; a relative SQLite path is made absolute here."""
    from tengine.control.store import default_store_uri

    uri = cfg.logging.db.store or default_store_uri(cfg.logging.root)
    if uri.startswith("sqlite://") and not uri.startswith("sqlite:///"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite://')).resolve()}"
    return uri


def pin_store(cfg: Any) -> Any:
    """`cfg` with its experiment DB's URI resolved here: a Ray Train worker runs in a directory
    of Ray's own, where a relative `logging.root` would name another store."""
    if "db" not in cfg.logging.trackers or cfg.logging.db.store:
        return cfg
    db = cfg.logging.db.model_copy(update={"store": store_uri(cfg)})
    return cfg.model_copy(update={"logging": cfg.logging.model_copy(update={"db": db})})


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


class DbTracker(Callback):
    def __init__(self, cfg: Any, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.db = self.run_id = None
        self.buffer: list[tuple[int, str, float]] = []
        self.flushed = time.monotonic()
        self.incomplete = False  # a flush failed: the DB misses rows metrics.jsonl has

    def on_fit_start(self, trainer) -> None:
        from tengine.control.experiments import ExperimentDB
        from tengine.control.store import open_store, redact_uri
        from tengine.files import config_hash, write_json

        uri = store_uri(self.cfg)
        self.db = ExperimentDB(open_store(uri))
        known = self.run_dir / ID_FILE
        previous = _read(known)
        resumed = trainer.resumed_from is not None and previous.get("store") == redact_uri(uri)
        env_file = self.run_dir / "env.json"
        params = self.cfg.model_dump(mode="json")
        self.run_id = self.db.log_run(
            self.cfg.name, params, run_id=previous.get("run_id") if resumed else None,
            run_dir=str(self.run_dir.resolve()), tags=self.cfg.logging.tags,
            sweep=self.cfg.logging.sweep, job_id=os.environ.get(JOB_ID_ENV),
            env=json.loads(env_file.read_text()) if env_file.is_file() else None,
            config_hash=config_hash(params))
        write_json(known, {"run_id": self.run_id, "store": redact_uri(uri)})
        if resumed:
            self.db.supersede_after(self.run_id, trainer.state.step)
            self.db.log_artifact(self.run_id, "resume", str(trainer.resumed_from),
                                 step=trainer.state.step)
            return
        # a fresh start: the run dir's earlier DB run is not this one. Moved aside with its
        # files (`trainer.archived`), its record follows them; one that never ended is
        # `interrupted` (move_run)
        archived = trainer.archived
        for where, prior in ((archived, _read(archived / ID_FILE) if archived else {}),
                             (self.run_dir, previous)):
            if prior.get("run_id") and prior.get("store") == redact_uri(uri):
                self.db.move_run(prior["run_id"], str(Path(where).resolve()))

    def on_step_end(self, trainer, record) -> None:
        if record and self.db is not None:
            self.buffer += metric_rows(record)
            if len(self.buffer) >= FLUSH_ROWS or time.monotonic() - self.flushed > FLUSH_S:
                self.flush()

    def on_eval_end(self, trainer, record) -> None:
        if self.db is not None:  # None outside a fit (an evaluation tracks nothing)
            self.buffer += metric_rows(record)
            self.flush()

    def on_checkpoint_saved(self, trainer, path: Path) -> None:
        if self.db is None:
            return
        from tengine.files import sha256_file

        self.flush()
        manifest = Path(path) / "manifest.json"
        self.db.log_artifact(self.run_id, "checkpoint", str(Path(path).resolve()),
                             sha256=sha256_file(manifest) if manifest.is_file() else None,
                             step=trainer.state.step, meta={"manifest": "manifest.json"})

    def on_fit_end(self, trainer, summary) -> None:
        if self.db is None:
            return
        try:
            self.flush()
            if self.incomplete:
                summary = {**summary, "db_incomplete": True}
            self.db.update_run_status(self.run_id, summary["status"], summary)
        finally:
            self.db.store.close()
            self.db = None

    def flush(self) -> None:
        rows, self.buffer = self.buffer, []
        self.flushed = time.monotonic()
        if rows:
            try:
                self.db.log_metric_rows(self.run_id, rows)
            except Exception:
                self.incomplete = True  # said in the run's summary, if the DB takes that
                raise
