"""File helpers shared by the engine and the control plane (no torch, no Ray here)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_identity(checkpoint: Path) -> tuple[str, int]:
    """(sha256, size) that identify a checkpoint dir for the registry: the sha256 of its
    manifest.json (which holds the sha256 of every file in it) and the bytes of all its files."""
    manifest_file = Path(checkpoint) / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    size = manifest_file.stat().st_size + sum(f["size"] for f in manifest["files"].values())
    return sha256_file(manifest_file), size


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON readers reject them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(json_safe(data), indent=2, sort_keys=False))
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl; a step logged twice (re-run after a crash) keeps the last."""
    if not path.is_file():
        return []
    latest: dict[tuple, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            latest[(rec.get("split"), rec.get("step"))] = rec
    return sorted(latest.values(), key=lambda r: (r.get("step", 0), r.get("split", "")))
