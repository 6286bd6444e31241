"""The git commit a run was started from, and whether tracked files differ from it, read from
the `.git` directory itself: no `git` process (a run must not depend on a binary being on PATH,
or pay for one at every start).

    info = git_info(Path.cwd())   # {"commit": "ab12…", "branch": "main", "dirty": False} or None

`dirty` is True when a tracked file was modified or deleted since it was staged, or a merge is
in progress: files whose size and mtime match the index (and are older than it) are taken as
unchanged, as git's own status does; the others are hashed as git blobs and compared.
Untracked files do not count. `staged` is True when the index differs from HEAD's tree.
What this reader cannot tell (an index v4 or a split index, a packed commit, a SHA-256
repository) is None (unknown), never a guess.
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
    h = hashlib.sha1()
    if (mode >> 12) == 0o12:  # a symlink: its target is the blob
        target = os.readlink(path).encode()
        h.update(b"blob %d\0" % len(target) + target)
        return h.hexdigest()
    h.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _loose_object(git_dir: Path, sha: str) -> bytes | None:
    import zlib

    for root in (git_dir, _common(git_dir)):
        file = root / "objects" / sha[:2] / sha[2:]
        if file.is_file():
            return zlib.decompress(file.read_bytes())
    return None  # packed: not read here


def _common(git_dir: Path) -> Path:
    common = git_dir / "commondir"
    return (git_dir / common.read_text().strip()).resolve() if common.is_file() else git_dir


def _head_tree(git_dir: Path, commit: str | None) -> str | None:
    raw = _loose_object(git_dir, commit) if commit else None
    if raw is None or not raw.startswith(b"commit "):
        return None
    body = raw.split(b"\0", 1)[1]
    return body.split(b"\n", 1)[0].removeprefix(b"tree ").decode() if body.startswith(b"tree ") else None


def _tree(entries: list[tuple[bytes, int, bytes]]) -> bytes:
    """The sha1 of the tree object the index's (path, mode, blob sha1) entries make, as `git
    write-tree` would: one tree per directory, entries sorted with directories as `name/`."""
    files: list[tuple[bytes, bytes, bytes]] = []
    dirs: dict[bytes, list[tuple[bytes, int, bytes]]] = {}
    for path, mode, sha in entries:
        head, sep, rest = path.partition(b"/")
        if sep:
            dirs.setdefault(head, []).append((rest, mode, sha))
        else:
            files.append((path, b"%o" % mode, sha))
    items = files + [(name, b"40000", _tree(sub)) for name, sub in dirs.items()]
    items.sort(key=lambda it: it[0] + (b"/" if it[1] == b"40000" else b""))
    data = b"".join(mode + b" " + name + b"\0" + sha for name, mode, sha in items)
    return hashlib.sha1(b"tree %d\0" % len(data) + data).digest()


def _index(git_dir: Path, work_tree: Path) -> tuple[bool | None, str | None]:
    """(whether a tracked file differs from the index or a merge is in progress, or None: not
    readable here; the sha1 of the tree the index would commit)."""
    index = git_dir / "index"
    if not index.is_file():
        return None, None
    data = index.read_bytes()
    if data[:4] != b"DIRC":
        return None, None
    version, count = struct.unpack(">II", data[4:12])
    if version not in (2, 3):
        return None, None  # v4 compresses paths; not parsed here
    index_mtime = index.stat().st_mtime
    pos, differs, tracked = 12, False, []
    for _ in range(count):
        mtime_s, mtime_ns = struct.unpack(">II", data[pos + 8:pos + 16])
        mode, = struct.unpack(">I", data[pos + 24:pos + 28])
        size, = struct.unpack(">I", data[pos + 36:pos + 40])
        sha = data[pos + 40:pos + 60].hex()
        flags, = struct.unpack(">H", data[pos + 60:pos + 62])
        extended = struct.unpack(">H", data[pos + 62:pos + 64])[0] if flags & 0x4000 else 0
        head = 62 + (2 if flags & 0x4000 else 0)
        end = data.index(b"\0", pos + head)
        name = data[pos + head:end].decode("utf-8", "surrogateescape")
        if not extended & 0x2000:  # intent-to-add entries are not in the tree
            tracked.append((data[pos + head:end], mode, data[pos + 40:pos + 60]))
        pos += (end - pos + 8) // 8 * 8  # the entry, its path in bytes, 1–8 NULs
        if differs:
            continue  # known
        if flags & 0x3000:
            differs = True  # a merge in progress: a stage > 0 entry
            continue
        if (mode >> 12) == 0o16 or flags & 0x8000 or extended & 0x6000:
            continue  # a submodule; assume-valid; skip-worktree or intent-to-add
        file = work_tree / name
        try:
            st = file.lstat()
        except FileNotFoundError:
            differs = True  # deleted
            continue
        if st.st_size & 0xFFFFFFFF != size:
            differs = True
            continue
        same_mtime = (int(st.st_mtime), st.st_mtime_ns % 1_000_000_000) == (mtime_s, mtime_ns)
        if same_mtime and st.st_mtime < index_mtime:
            continue  # as staged (and not racy: written before the index was)
        if _blob_sha1(file, mode) != sha:
            differs = True
    while pos + 8 <= len(data) - 20:  # extensions, then the index's own sha1
        sig, length = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])[0]
        if sig == b"link":
            return None, None  # a split index: entries live in another file
        pos += 8 + length
    return differs, _tree(tracked).hex()


def git_info(start: Path) -> dict[str, Any] | None:
    """The repository containing `start`: its HEAD commit and branch; `dirty`: a tracked file
    differs from the index (modified, deleted, a merge in progress); `staged`: the index
    differs from HEAD's tree (read from the index's cache-tree and a loose commit object; None
    when either is not there, e.g. a packed commit). None when `start` is not in a work tree.
    Never raises: an unreadable repository gives None fields."""
    try:
        found = _git_dir(Path(start).resolve())
        if found is None:
            return None
        git_dir, work_tree = found
        if "objectformat" in ((_common(git_dir) / "config").read_text(errors="replace")
                              if (_common(git_dir) / "config").is_file() else ""):
            return {"commit": None, "branch": None, "dirty": None, "staged": None}  # SHA-256
        head = (git_dir / "HEAD").read_text().strip()
        branch = head.removeprefix("ref: refs/heads/") if head.startswith("ref: ") else None
        commit = _resolve_ref(git_dir, head[5:]) if head.startswith("ref: ") else head
        try:
            dirty, index_tree = _index(git_dir, work_tree)
            head_tree = _head_tree(git_dir, commit)
        except Exception:  # noqa: BLE001 — a snapshot must never fail a run
            dirty, index_tree, head_tree = None, None, None
        staged = None if index_tree is None or head_tree is None else index_tree != head_tree
        return {"commit": commit, "branch": branch, "dirty": dirty, "staged": staged}
    except Exception:  # noqa: BLE001
        return None
