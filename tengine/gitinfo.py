"""The git commit a run was started from, and whether tracked files differ from it, read from
the `.git` directory itself: no `git` process (a run must not depend on a binary being on PATH,
or pay for one at every start).

    info = git_info(Path.cwd())   # {"commit": "ab12…", "branch": "main", "dirty": False} or None

`dirty` is True when a tracked file was modified or deleted since it was staged: files whose
size and mtime match the index are taken as unchanged (as git's own status does), the others
are hashed as git blobs and compared. Untracked files do not count. An index format this reader
does not parse (v4), or an unreadable index, gives `dirty: None` (unknown), never a guess.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any


def _git_dir(start: Path) -> tuple[Path, Path] | None:
    """(the git directory, the work tree) of the repository containing `start`."""
    for d in [start, *start.parents]:
        candidate = d / ".git"
        if candidate.is_dir():
            return candidate, d
        if candidate.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = candidate.read_text().strip()
            if text.startswith("gitdir:"):
                return (d / text.split(":", 1)[1].strip()).resolve(), d
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir / "commondir"
    roots = [git_dir] + ([(git_dir / common.read_text().strip()).resolve()] if common.is_file() else [])
    for root in roots:
        loose = root / ref
        if loose.is_file():
            return loose.read_text().strip()
        packed = root / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line and line[0] not in "#^" and line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    return None


def _blob_sha1(path: Path, mode: int) -> str:
    data = os.readlink(path).encode() if (mode >> 12) == 0o12 else path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _dirty(git_dir: Path, work_tree: Path) -> bool | None:
    index = git_dir / "index"
    if not index.is_file():
        return None
    data = index.read_bytes()
    if data[:4] != b"DIRC":
        return None
    version, count = struct.unpack(">II", data[4:12])
    if version not in (2, 3):
        return None  # v4 compresses paths; not parsed here
    pos = 12
    for _ in range(count):
        (mtime_s, mtime_ns) = struct.unpack(">II", data[pos + 8:pos + 16])
        mode, = struct.unpack(">I", data[pos + 24:pos + 28])
        size, = struct.unpack(">I", data[pos + 36:pos + 40])
        sha = data[pos + 40:pos + 60].hex()
        flags, = struct.unpack(">H", data[pos + 60:pos + 62])
        head = 62 + (2 if version == 3 and flags & 0x4000 else 0)
        end = data.index(b"\0", pos + head)
        name = data[pos + head:end].decode("utf-8", "surrogateescape")
        pos += (head + len(name) + 8) // 8 * 8
        if (mode >> 12) == 0o16 or flags & 0x3000:  # a submodule; a merge stage
            continue
        file = work_tree / name
        try:
            st = file.lstat()
        except FileNotFoundError:
            return True  # deleted
        if st.st_size != size:
            return True
        if (int(st.st_mtime), st.st_mtime_ns % 1_000_000_000) == (mtime_s, mtime_ns):
            continue  # as staged
        if _blob_sha1(file, mode) != sha:
            return True
    return False


def git_info(start: Path) -> dict[str, Any] | None:
    """The repository containing `start`: its HEAD commit, branch and dirty flag; None when
    `start` is not in a git work tree."""
    try:
        found = _git_dir(Path(start).resolve())
        if found is None:
            return None
        git_dir, work_tree = found
        head = (git_dir / "HEAD").read_text().strip()
        branch = head.removeprefix("ref: refs/heads/") if head.startswith("ref: ") else None
        commit = _resolve_ref(git_dir, head[5:]) if head.startswith("ref: ") else head
        try:
            dirty = _dirty(git_dir, work_tree)
        except (OSError, struct.error, ValueError):
            dirty = None
        return {"commit": commit, "branch": branch, "dirty": dirty}
    except OSError:
        return None
