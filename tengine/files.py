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


def mismatched_file(path: Path, files: dict[str, dict]) -> tuple[str, str] | None:
    """The first file of a manifest's `files` (name → its sha256 and size) that is not as
    recorded under `path`: (its name, why: "missing", "is N bytes, manifest says M
    (truncated)" or "does not match its sha256 (corrupted)"); None when every one is."""
    for rel, meta in files.items():
        file = Path(path) / rel
        if not file.is_file():
            return rel, "missing"
        if file.stat().st_size != meta["size"]:
            return rel, f"is {file.stat().st_size} bytes, manifest says {meta['size']} (truncated)"
        if sha256_file(file) != meta["sha256"]:
            return rel, "does not match its sha256 (corrupted)"
    return None


def verify_artifact(path: Path, sha256: str | None = None) -> None:
    """Refuse a registry artifact (or checkpoint) that changed since it was registered: its
    manifest.json must hash to `sha256` (the registry's record) and every file must match the
    sha256 and size the manifest gives. Raises ArtifactMismatch naming what differs."""
    from tengine.errors import ArtifactMismatch

    path = Path(path)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise ArtifactMismatch(f"{path}: no manifest.json (the artifact is gone or incomplete)")
    if sha256 is not None and (actual := sha256_file(manifest_file)) != sha256:
        raise ArtifactMismatch(f"{path}: sha256 mismatch: manifest.json hashes to {actual[:16]}…, "
                               f"the registry recorded {sha256[:16]}…; refusing to use it")
    bad = mismatched_file(path, json.loads(manifest_file.read_text()).get("files", {}))
    if bad is not None and bad[1] == "missing":
        raise ArtifactMismatch(f"{path}: {bad[0]} is missing")
    if bad is not None:
        raise ArtifactMismatch(f"{path}: sha256 mismatch in {bad[0]}: the file changed after it "
                               "was saved (corrupted or edited); refusing to use it")
