"""File helpers shared by the engine and the control plane (no torch, no Ray here)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_identity(checkpoint: Path) -> tuple[str, int]:
    """(sha256, size) that identify a checkpoint dir for the registry: the sha256 of its
    manifest.json (which holds the sha256 of every file in it) and the bytes of all its files."""
    import json

    manifest_file = Path(checkpoint) / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    size = manifest_file.stat().st_size + sum(f["size"] for f in manifest["files"].values())
    return sha256_file(manifest_file), size


def config_hash(cfg: dict) -> str:
    import json

    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
