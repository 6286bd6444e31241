"""Registering a checkpoint: pack it into the registry's artifact root, then record the version.

    v = register_checkpoint(client.registry, "mymodel", Path(".../step_00000400"), pack=pack_fn,
                            job_id=..., config_hash=..., tags={...})

The registry owns what it registers: `pack` (tengine.engine.artifact.pack in a process with
torch, or `tengine registry pack` as a child of a job runner, which imports no torch) copies the
checkpoint's consolidated weights, the run's config and tokenizer into
`<artifact root>/<name>/<sha256>/`, and the version records that copy, its sha256 and the
metrics and step of that checkpoint. Deleting or archiving the run dir later changes nothing.
Before any use (evaluate, init_from, a retrain's warm start) `use_version` checks the copy
against the recorded sha256 and refuses a mismatch. The artifact root may be a directory every
node mounts or an object-store URI (`s3://bucket/prefix`; `tengine/remote.py`), from which a
version is fetched into a local cache before its check.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tengine.files import verify_artifact
from tengine.remote import download_dir, is_remote

CACHE_ENV = "TENGINE_ARTIFACT_CACHE"
Pack = Callable[[Path, str | Path, Path | None], dict[str, Any]]


def register_checkpoint(registry: Any, name: str, checkpoint: Path, *, pack: Pack,
                        run_dir: Path | None = None, **fields: Any):
    """Pack `checkpoint` and register the copy as a new version of `name` (`fields`: job_id,
    config_hash, source_run, parent_version, tags, idempotency_key)."""
    from tengine.control.registry import check_name

    check_name(name, "model name")  # before anything is written under the artifact root
    root = registry.artifact_root()
    into = f"{root.rstrip('/')}/{name}" if is_remote(root) else Path(root) / name
    info = pack(Path(checkpoint), into, run_dir)
    return registry.register(name, artifact_uri=info["artifact_uri"], sha256=info["sha256"],
                             size=info["size"], metrics=info["metrics"], step=info["step"],
                             source_uri=info["source_uri"], **fields)


def use_version(version: Any) -> Path:
    """The artifact directory of a registered version, after checking it still is what was
    registered (raises ArtifactMismatch otherwise). One on object storage is fetched into the
    local cache first (TENGINE_ARTIFACT_CACHE, default ~/.cache/tengine/artifacts, one
    directory per sha256) and the cached copy is checked at every use like any other."""
    if not is_remote(version.artifact_uri):
        verify_artifact(Path(version.artifact_uri), version.sha256)
        return Path(version.artifact_uri)
    cached = cache_dir() / version.sha256
    if not cached.is_dir():
        part = cache_dir() / f".{version.sha256}.{os.getpid()}.part"
        shutil.rmtree(part, ignore_errors=True)
        download_dir(version.artifact_uri, part)
        try:
            verify_artifact(part, version.sha256)  # a bad download is never cached
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise
        with contextlib.suppress(OSError):  # another process cached it first: the same bytes
            os.rename(part, cached)
        shutil.rmtree(part, ignore_errors=True)
    verify_artifact(cached, version.sha256)
    return cached


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tengine" / "artifacts")


def attach_bundle(registry: Any, version: Any, bundle: Path, job_id: str | None = None) -> dict[str, Any]:
    """Record a finished export bundle (a directory `tengine export` wrote: it passed every
    check) on a registered version. The registry refuses a bundle exported from other weights
    (its metadata's artifact sha256 is not the version's)."""
    import json

    from tengine.files import sha256_file

    bundle = Path(bundle)
    meta = json.loads((bundle / "metadata.json").read_text())
    figures = {"parity": {f: p["worst"] for f, p in meta.get("parity", {}).items()},
               "latency": meta.get("latency", {})}
    return registry.attach_bundle(version.name, version.version, uri=str(bundle.resolve()),
                                  sha256=sha256_file(bundle / "metadata.json"),
                                  formats=list(meta["formats"]), figures=figures, job_id=job_id,
                                  expected_sha256=meta["source"]["artifact_sha256"])
