"""The torch process group every multi-process backend shares.

Workers are started by torchrun or Ray Train, both of which set RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT (Ray Train also creates the group itself). `ensure_process_group`
joins the group from those variables when nobody has yet: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from tengine.backends.base import Strategy


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the launcher's environment; (0, 1, 0) without one."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


LAUNCHER_ENV = ("MASTER_PORT", "MASTER_ADDR", "RANK", "LOCAL_RANK", "WORLD_SIZE",
                "LOCAL_WORLD_SIZE")


@contextlib.contextmanager
def world_of_one() -> Iterator[None]:
    """The launcher environment of a one-rank group (for backends that need a process group
    even in one process); what a launcher set already stays. On the way out the group made
    inside is destroyed and the environment restored, so the calling process is as it was (a
    later run in it is not a rank of a leftover group)."""
    import socket

    saved = {k: os.environ.get(k) for k in LAUNCHER_ENV}
    had_group = dist.is_available() and dist.is_initialized()
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    for key in ("RANK", "LOCAL_RANK"):
        os.environ.setdefault(key, "0")
    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        os.environ.setdefault(key, "1")
    try:
        yield
    finally:
        if not had_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_process_group(timeout_s: int = 1800) -> tuple[int, int, int]:
    """Join (or reuse) the default process group; returns (rank, world_size, local_rank)."""
    if not dist.is_initialized():
        rank, world, local = env_world()
        if world > 1 or "MASTER_ADDR" in os.environ:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if torch.cuda.is_available():
                torch.cuda.set_device(local % torch.cuda.device_count())
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    if not dist.is_initialized():
        return 0, 1, 0
    return dist.get_rank(), dist.get_world_size(), env_world()[2]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class ProcessGroupStrategy(Strategy):
    """Base of the multi-process backends: reductions and barriers over the default group."""

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return all_reduce_sum(tensor)

    def barrier(self) -> None:
        barrier()

    def broadcast(self, obj: Any) -> Any:
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return [obj]
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out


def exit_cleanly(code: int = 0) -> None:
    """End a torchrun worker without gloo's teardown race.

    torch 2.13's gloo can abort at interpreter exit ("terminate called without an active
    exception", 5–25 % of 2-process runs on CPU) after all work is done. Every rank meets at a
    barrier, flushes, and leaves with os._exit, which skips the racy destructors.
    """
    if dist.is_initialized():
        try:
            barrier()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
