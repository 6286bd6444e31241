"""Trackers: where a run's records go besides its own metrics.jsonl (rank 0 only).

    logging: {trackers: [jsonl, db, tensorboard, wandb], callbacks: ["mypkg.cb:MyCallback"]}

`jsonl` is the run dir's metrics.jsonl, which the Reporter always writes (every other tool in
tengine reads it); `db` records the run in the experiment DB (`tengine runs`); `tensorboard` writes event files under `RUN/tensorboard/`; `wandb` logs to
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


@TRACKERS.register("db")
def _db(cfg: Any, run_dir: Path):
    from tengine.tracking.db import DbTracker

    return DbTracker(cfg, run_dir)


@TRACKERS.register("tensorboard")
def _tensorboard(cfg: Any, run_dir: Path):
    from tengine.tracking.tensorboard import TensorBoardTracker

    return TensorBoardTracker(run_dir)


@TRACKERS.register("wandb")
def _wandb(cfg: Any, run_dir: Path):
    from tengine.tracking.wandb import WandbTracker

    return WandbTracker(cfg, run_dir)


# the package each tracker needs (checked at preflight: exit 2 before any work)
REQUIRES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_trackers(cfg: Any) -> None:
    """Preflight: each tracker's package installed, each callback's import path importable,
    the experiment DB's URI one tengine can open (it is not connected to here)."""
    from tengine.extras import require
    from tengine.registry import import_path

    for name in cfg.logging.trackers:
        if name in REQUIRES:
            require(REQUIRES[name], "tracking", f"logging.trackers '{name}'",
                    otherwise=f"leave '{name}' out of logging.trackers")
    for spec in cfg.logging.callbacks:
        import_path(spec, "logging.callbacks")
    _check_alert_sinks(cfg)
    store = cfg.logging.db.store
    if "db" in cfg.logging.trackers and store:
        from tengine.control.store import redact_uri
        from tengine.errors import ConfigError

        if store.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            if redact_uri(store) != store:  # it would be written down in config.yaml
                raise ConfigError(f"logging.db.store: '{redact_uri(store)}' has a password; "
                                  "leave it out and set PGPASSWORD or ~/.pgpass")
            require("psycopg", "postgres", "logging.db.store (a PostgreSQL store)")
        elif not store.startswith("sqlite://"):
            raise ConfigError(f"logging.db.store: '{redact_uri(store)}' is not a store URI a "
                              "run can record into; use sqlite:///abs/path/tengine.db or "
                              "postgresql://user@host/db")


def _check_alert_sinks(cfg: Any) -> None:
    """Preflight: an alert sink that could not send is a config error now, not a warning later."""
    import os

    from tengine.errors import ConfigError
    from tengine.extras import check

    alerts = cfg.monitoring.alerts
    if not alerts.enabled:
        return
    for i, sink in enumerate(alerts.sinks):
        where = f"monitoring.alerts.sinks[{i}]"
        if sink.kind == "wandb":
            check("wandb", "tracking", f"{where} (wandb)", otherwise="leave the wandb sink out")
        for field in ("url_env", "secret_env"):
            name = getattr(sink, field)
            if sink.kind == "webhook" and name and not os.environ.get(name):
                raise ConfigError(f"{where}.{field}: the environment variable {name} is not set; "
                                  "set it where the run starts, or leave the field out")


def build_callbacks(cfg: Any, run_dir: Path, is_main: bool) -> list:
    """The config's trackers and import-path callbacks, each `Guarded`; none off rank 0. One
    that cannot even be made is a warning too, and is left out."""
    if not is_main:
        return []
    from tengine.registry import import_path

    makers = [(f"tracker '{n}'", lambda n=n: TRACKERS.get(n)(cfg, Path(run_dir)))
              for n in dict.fromkeys(cfg.logging.trackers)]
    makers += [(f"callback '{spec}'", lambda spec=spec: import_path(spec, "logging.callbacks")())
               for spec in cfg.logging.callbacks]
    makers += _monitoring(cfg, Path(run_dir))
    out = []
    for name, make in makers:
        made = Guarded.make(make, name)
        if made is not None:
            out.append(made)
    return out


def _monitoring(cfg: Any, run_dir: Path) -> list:
    """The data profile writer and the alert rules (`monitoring`), guarded like a tracker."""
    from tengine.monitoring.callbacks import AlertCallback, ProfileWriter

    m = cfg.monitoring
    return [*([("the data profile", lambda: ProfileWriter(cfg, run_dir))] if m.profile else []),
            *([("the alert rules", lambda: AlertCallback(cfg, run_dir))]
              if m.alerts.enabled and m.alerts.rules else [])]


__all__ = ["TRACKERS", "Guarded", "build_callbacks"]
