"""What `tengine export` exports: a run, a checkpoint, a registry artifact or a registered version,
always turned into one verified registry artifact (consolidated weights, config, tokenizer).

    with resolve("runs/quickstart") as src:          # the run's best (else last) checkpoint
        src.artifact, src.step, src.origin
    with resolve(None, version=client.registry.get("m", "production")):  # sha256 checked first

A checkpoint of any backend (single, ddp, fsdp, deepspeed ZeRO) is packed into a temporary
artifact with the registry's own packer, so an export and a registered model read the same
consolidated weights; the temporary copy goes when the export ends.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tengine.engine.checkpoint import MANIFEST, CheckpointManager, read_manifest
from tengine.errors import ConfigError


@dataclass
class Source:
    artifact: Path  # a verified registry artifact directory
    step: int
    metrics: dict[str, Any]
    origin: dict[str, Any] = field(default_factory=dict)  # what was asked for, for metadata.json
    name: str = "model"  # default bundle name: the run's or the registered model's


def _best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint by its own `checkpoint.monitor` / `mode` (read from each
    manifest under this run dir, wherever the run was started from), else its newest."""
    import yaml

    ck = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("checkpoint") or {}
    manager = CheckpointManager(run_dir / "checkpoints", monitor=ck.get("monitor", "val_loss"),
                                mode=ck.get("mode", "min"))
    steps = manager.checkpoints()  # oldest first
    if not steps:
        raise ConfigError(f"export: the run dir {run_dir} has no checkpoint; train it first or "
                          "give a checkpoint directory")
    return manager.best() or steps[-1]


@contextlib.contextmanager
def resolve(path: str | Path | None, version: Any = None) -> Iterator[Source]:
    """A run dir, a step_XXXXXXXX checkpoint, a registry artifact, or (`version`) a registered
    model version, as a verified artifact."""
    from tengine.engine.artifact import is_artifact, pack
    from tengine.files import verify_artifact

    if version is not None:
        from tengine.control.artifacts import use_version

        artifact = use_version(version)  # refuses a version whose files changed
        yield Source(artifact, version.step or 0, dict(version.metrics),
                     {"kind": "registry", "name": version.name, "version": version.version,
                      "sha256": version.sha256, "artifact_uri": version.artifact_uri,
                      "run_dir": version.source_run},
                     name=f"{version.name}-v{version.version}")
        return
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"export: '{path}' does not exist; give a run dir, a checkpoint "
                          "(RUN/checkpoints/step_XXXXXXXX), a registry artifact or --model NAME:REF")
    if is_artifact(path):
        verify_artifact(path)
        m = read_manifest(path)
        yield Source(path, m["step"], m.get("metrics", {}), {"kind": "artifact", "path": str(path)},
                     name=path.parent.name)
        return
    if (path / MANIFEST).is_file():
        checkpoint, run_dir = path, path.parent.parent
    elif (path / "config.yaml").is_file():
        checkpoint, run_dir = _best_checkpoint(path), path
    else:
        raise ConfigError(f"export: '{path}' is not a run dir (no config.yaml), a checkpoint or "
                          "a registry artifact (no manifest.json)")
    with tempfile.TemporaryDirectory(prefix="tengine-export-src-") as tmp:
        info = pack(checkpoint, Path(tmp), run_dir)  # verifies the checkpoint first
        yield Source(Path(info["artifact_uri"]), info["step"], info["metrics"],
                     {"kind": "checkpoint", "path": str(checkpoint.resolve()),
                      "run_dir": str(run_dir.resolve())}, name=run_dir.resolve().name)
