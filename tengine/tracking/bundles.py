"""A bundle exported from a tracked run is recorded where the run is: an artifact of its run in
the experiment DB (the run had the `db` tracker) and an artifact of its W&B run (`wandb`).

    record_bundle(run_dir, bundle_dir, metadata, step)   # called by `tengine export`

Both reference the bundle's directory (nothing is copied or uploaded) and carry the sha256 of
its metadata.json, which lists every file's sha256. A W&B run is resumed by the id its tracker
left in `RUN/wandb/tengine_run.json`, in the mode it ran in (offline: one more offline segment
of the same run for `wandb sync`). Failing to record is a warning: the bundle is in place.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("tengine")


def record_bundle(run_dir: str | Path | None, bundle: Path, meta: dict[str, Any],
                  step: int) -> list[str]:
    """Record `bundle` with the run in `run_dir`; returns where it was recorded."""
    if not run_dir or not (Path(run_dir) / "config.yaml").is_file():
        return []
    from tengine.config import load_config

    run_dir = Path(run_dir)
    try:
        cfg = load_config(run_dir / "config.yaml")
    except Exception as err:  # noqa: BLE001 — an older run's config: the bundle stands
        log.warning("export: %s/config.yaml no longer loads (%s); the bundle is not recorded "
                    "with its run", run_dir, err)
        return []
    info = {"step": step, "formats": list(meta.get("formats", {})),
            "metadata_sha256": _sha256(bundle / "metadata.json")}
    done = []
    for name, record in (("db", _db), ("wandb", _wandb)):
        if name not in cfg.logging.trackers:
            continue
        try:
            if record(cfg, run_dir, bundle, info):
                done.append(name)
        except Exception as err:  # noqa: BLE001 — tracking is worth less than the bundle
            log.warning("export: could not record the bundle in the run's %s (%s: %s); the "
                        "bundle is in place", name, type(err).__name__, err)
    return done


def _sha256(path: Path) -> str:
    from tengine.files import sha256_file

    return sha256_file(path)


def _db(cfg: Any, run_dir: Path, bundle: Path, info: dict[str, Any]) -> bool:
    from tengine.control.experiments import ExperimentDB
    from tengine.control.store import open_store
    from tengine.tracking.db import ID_FILE

    known = run_dir / ID_FILE
    if not known.is_file():
        return False
    recorded = json.loads(known.read_text())  # the store the run was recorded in (no password:
    store = open_store(recorded["store"])     # logging.db.store refuses one)
    try:
        ExperimentDB(store).log_artifact(recorded["run_id"], "bundle",
                                         str(bundle.resolve()), sha256=info["metadata_sha256"],
                                         step=info["step"], meta={"formats": info["formats"]})
    finally:
        store.close()
    return True


def _wandb(cfg: Any, run_dir: Path, bundle: Path, info: dict[str, Any]) -> bool:
    from tengine.tracking.wandb import RUN_FILE, settings

    known = run_dir / "wandb" / RUN_FILE
    if not known.is_file():
        return False
    import wandb

    w = json.loads(known.read_text())
    run = wandb.init(project=w["project"], entity=w["entity"], id=w["id"], resume="allow",
                     dir=str(run_dir), mode=w["mode"], job_type="export", settings=settings(),
                     reinit="finish_previous")
    try:
        art = wandb.Artifact(f"{cfg.name}-bundle", type="bundle", metadata=info)
        art.add_reference(f"file://{bundle.resolve()}", checksum=False)
        run.log_artifact(art, aliases=[f"step_{info['step']:08d}"])
    finally:
        run.finish()
    return True
