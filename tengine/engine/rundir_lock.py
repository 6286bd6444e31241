"""One owner per run dir: a second run on a run dir in use fails at once, naming the holder.

    with hold_run_dir(run_dir):         # RunDirBusy when another process holds it
        ...                             # archive an earlier run, write metrics, checkpoints

Two processes training into one run dir clobber each other's metrics and checkpoints (the same
`--run-dir` twice, or a control-plane job retried while its first runner is frozen but not dead),
and the second one's fresh start would even move the first one's run aside. The owner holds an
exclusive `fcntl.flock` on `.<name>.lock` beside the run dir, taken before anything touches the
dir and released when the process ends however it ends (a SIGKILL included; children it forked,
such as DataLoader workers, share it until they exit too): no stale locks, no waiting. The file says who holds it (host, pid, since when, the command line with secrets
masked), for the error the next run shows. It sits beside the run dir, not in it, because a
fresh start renames the run dir aside (`archive_previous_run`), which would take a lock file
inside with it and leave the new run dir unlocked.

Who holds it is whoever owns the run: `engine.run` in `tengine train` (rank 0 alone under
torchrun; every rank learns whether it got it), the Ray Train driver (`cluster.train.fit`)
for its whole fit, its worker-group restarts included (its workers do not take it), and a sweep
trial for its own run dir. Holding is re-entrant within a process (a trial that drives a fit),
and flock works on local disks and NFS alike. No torch here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tengine.errors import TengineError
from tengine.redact import redact_argv


class RunDirBusy(TengineError):
    """Another process owns the run dir."""


_held: dict[Path, list] = {}  # lock file → [fd, holds] of this process
_guard = threading.Lock()


def lock_file(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir).resolve()
    return run_dir.parent / f".{run_dir.name}.lock"


def holder_record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
            "since_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "argv": redact_argv(sys.argv)}


@contextlib.contextmanager
def hold_run_dir(run_dir: str | Path) -> Iterator[Path]:
    """Own `run_dir` for the block (yields the lock file); `RunDirBusy` at once when another
    process owns it."""
    path = lock_file(run_dir)
    with _guard:
        if path in _held:
            _held[path][1] += 1
        else:
            _held[path] = [_acquire(path, Path(run_dir)), 1]
    try:
        yield path
    finally:
        with _guard:
            entry = _held[path]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[path]
                _release(path, entry[0])


def _acquire(path: Path, run_dir: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirBusy(_busy_message(path, run_dir)) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the file we locked may have been unlinked by a holder releasing meanwhile
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(holder_record()) + "\n").encode())
            return fd
        os.close(fd)


def _release(path: Path, fd: int) -> None:
    """Unlink while still holding (a process that opens it later gets a new file), then close."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)


def _busy_message(path: Path, run_dir: Path) -> str:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):  # taken a moment ago: its record is not written yet
        holder = {}
    who = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since_utc')} "
           f"(`{' '.join(holder.get('argv') or [])}`)" if holder else "another process")
    return (f"run dir {run_dir} is in use by {who}; wait for that run to end (or stop it), or "
            f"give this one another --run-dir (lock: {path})")
