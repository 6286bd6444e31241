"""CheckpointManager: atomic, verified checkpoints with best-K ∪ last-N retention.

Layout: `<root>/step_00000120/` holding what the Strategy and the Trainer write plus
`manifest.json` (sha256 and size of every file, the step and the monitored metric). A checkpoint
is written under `.tmp-…`, the manifest last, then renamed into place, so a crash leaves either
the previous state or a complete new one. On resume the newest checkpoint whose files match its
manifest wins; a truncated or corrupted one is skipped with a warning. Hashing costs one read of
every file (≈1 s/GB) at save, spread over the ranks, and at resume, on rank 0 only (it tells
the other ranks its choice); it is what makes "newest valid" trustworthy.

The manifest is not rank 0's directory listing (on NFS a listing can miss files another node
just wrote): after the writes every rank lists what it sees, the union is taken, each file is
hashed by one rank that saw it (spread by name), and rank 0 writes the manifest from the
gathered hashes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tengine.errors import CheckpointError
from tengine.files import mismatched_file, sha256_file

log = logging.getLogger("tengine")
STEP_DIR = re.compile(r"^step_(\d{8,})$")
MANIFEST = "manifest.json"


def verify(path: Path) -> str | None:
    """None when `path` is a complete checkpoint, else the reason it is not."""
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        return "no manifest (incomplete write)"
    try:
        manifest = json.loads(manifest_file.read_text())
    except (json.JSONDecodeError, OSError) as err:
        return f"unreadable manifest ({err})"
    bad = mismatched_file(path, manifest.get("files", {}))
    if bad is None:
        return None
    rel, why = bad
    return f"missing file {rel}" if why == "missing" else f"{rel} {why}"


def _step_of(path: Path) -> int:
    return int(STEP_DIR.match(path.name).group(1))


def read_manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


class CheckpointManager:
    def __init__(self, root: Path, *, keep_last: int = 2, keep_best: int = 1,
                 monitor: str = "val_loss", mode: str = "min", is_main: bool = True,
                 barrier: Callable[[], None] = lambda: None,
                 broadcast: Callable[[Any], Any] = lambda obj: obj,
                 all_gather: Callable[[Any], list[Any]] = lambda obj: [obj], rank: int = 0):
        self.root = Path(root)
        self.keep_last, self.keep_best = keep_last, keep_best
        self.monitor, self.mode = monitor, mode
        self.is_main, self.barrier, self.broadcast = is_main, barrier, broadcast
        self.all_gather, self.rank = all_gather, rank

    # --- saving ----------------------------------------------------------------------------
    def save(self, step: int, write: Callable[[Path], None], metrics: dict) -> Path:
        """`write(tmp_dir)` writes this rank's files; returns the final checkpoint path."""
        final = self.root / f"step_{step:08d}"
        tmp = self.root / f".tmp-step_{step:08d}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        write(tmp)
        self.barrier()
        hashes = self._hash_files(tmp)
        if self.is_main:
            manifest = {
                "step": step, "created": time.time(),
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                "files": dict(sorted(hashes.items())),
            }
            part = tmp / (MANIFEST + ".part")
            part.write_text(json.dumps(manifest, indent=1))
            os.replace(part, tmp / MANIFEST)
            if final.exists():  # re-saving a step after a resume: replace the old copy
                shutil.rmtree(final)
            os.rename(tmp, final)
            self._retain()
        self.barrier()
        return final

    def _list(self, directory: Path) -> list[str]:
        """The files this rank sees under `directory` (relative paths)."""
        return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())

    def _hash_files(self, tmp: Path) -> dict[str, dict]:
        """{file: {sha256, size}} of every file any rank sees, each hashed by one rank that
        sees it: file i of the (gathered, so identical) sorted union goes to rank i mod world
        when that rank sees it, else to the lowest rank that does."""
        seen = [set(files) for files in self.all_gather(self._list(tmp))]
        world = len(seen)
        mine = {}
        for i, rel in enumerate(sorted(set().union(*seen))):
            holders = [r for r in range(world) if rel in seen[r]]
            if (i % world if i % world in holders else holders[0]) == self.rank:
                file = tmp / rel
                mine[rel] = {"sha256": sha256_file(file), "size": file.stat().st_size}
        return {k: v for part in self.all_gather(mine) for k, v in part.items()}

    # --- finding ---------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Checkpoint dirs with a manifest, oldest first (not hashed)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if STEP_DIR.match(p.name) and (p / MANIFEST).is_file()]
        return sorted(found, key=_step_of)

    def latest_valid(self) -> Path | None:
        candidates = [p for p in self.root.iterdir() if STEP_DIR.match(p.name)] if self.root.is_dir() else []
        for path in sorted(candidates, key=_step_of, reverse=True):
            reason = verify(path)
            if reason is None:
                return path
            log.warning("skipping checkpoint %s: %s; trying an older one", path, reason)
        return None

    def resolve(self, resume: str) -> Path | None:
        """The checkpoint to start from for `checkpoint.resume` (auto | never | PATH). Rank 0
        alone reads and hashes the files; every rank gets its choice (or its error)."""
        choice: tuple[str | None, str | None] = (None, None)  # (path, error)
        if self.is_main:
            try:
                path = self._resolve(resume)
                choice = (str(path) if path else None, None)
            except Exception as err:  # noqa: BLE001 — every rank must learn it, or they hang
                choice = (None, str(err) if isinstance(err, CheckpointError)
                          else f"cannot read checkpoints in {self.root}: {type(err).__name__}: {err}")
        path, error = self.broadcast(choice)
        if error:
            raise CheckpointError(error)
        return Path(path) if path else None

    def _resolve(self, resume: str) -> Path | None:
        if resume == "never":
            return None
        if resume == "auto":
            return self.latest_valid()
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"checkpoint.resume: '{resume}' is not a directory; give a "
                                  "step_XXXXXXXX checkpoint dir, 'auto' or 'never'")
        reason = verify(path)
        if reason:
            raise CheckpointError(f"checkpoint.resume: '{resume}' is not usable: {reason}")
        return path

    def discard_after(self, resumed_from: Path, step: int) -> list[Path]:
        """A run that resumes from step `step` replaces what came after it: its own checkpoints
        past that step (and one at that step, when it resumed from elsewhere: a PBT donor's)
        are another timeline, which retention and a later `resume auto` must not pick. Rank 0."""
        gone = [p for p in self.checkpoints()
                if _step_of(p) > step or (_step_of(p) == step and p.resolve() != resumed_from.resolve())]
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
        if gone:
            log.warning("resumed from %s (step %d): removed %d checkpoint(s) of the replaced "
                        "timeline: %s", resumed_from, step, len(gone), ", ".join(p.name for p in gone))
        return gone

    def _score(self, path: Path) -> float | None:
        value = read_manifest(path)["metrics"].get(self.monitor)
        if value is None:
            return None
        return value if self.mode == "min" else -value

    def best(self) -> Path | None:
        scored = [(s, p) for p in self.checkpoints() if (s := self._score(p)) is not None]
        return min(scored, key=lambda sp: sp[0])[1] if scored else None

    def _retain(self) -> None:
        ckpts = self.checkpoints()
        keep = set(ckpts[-self.keep_last:])
        scored = sorted(((s, p) for p in ckpts if (s := self._score(p)) is not None),
                        key=lambda sp: sp[0])
        keep.update(p for _, p in scored[: self.keep_best])
        for path in ckpts:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
        for stale in self.root.glob(".tmp-step_*"):  # leftovers of a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)
