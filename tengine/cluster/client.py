"""`tengine.connect()`: one client API for the control plane, in-process or on a cluster.

    client = connect()                        # no Ray address: the plane runs in this process
    client = connect("auto")                  # the cluster's detached actor (started if absent)
    v = client.registry.register("mymodel", artifact_uri=..., sha256=..., size=...)
    client.jobs.submit("train", {...}, priority=7)

Every component method is forwarded as is (`client.jobs.list(state="PENDING")`); a control
error raised inside the actor is re-raised here as the same `TengineError` subclass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tengine.errors import TengineError


def default_store_uri(root: str | Path = "runs") -> str:
    return f"sqlite:///{Path(root).resolve() / 'control' / 'tengine.db'}"


class _Component:
    def __init__(self, call: Callable, name: str):
        self._call, self._name = call, name

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._call(self._name, method, args, kwargs)


class ControlClient:
    """`transient`: the errors after which a call may be repeated (the actor restarting)."""

    def __init__(self, call: Callable, status: Callable[[], dict], where: str,
                 transient: tuple[type[BaseException], ...] = ()):
        self._call, self._status, self.where, self.transient = call, status, where, transient
        self.jobs = _Component(call, "jobs")
        self.schedules = _Component(call, "schedules")
        self.registry = _Component(call, "registry")

    def status(self) -> dict[str, Any]:
        return {**self._status(), "where": self.where}


def connect(address: str | None = None, store_uri: str | None = None,
            runners: int | None = None) -> ControlClient:
    """A client for the control plane: in this process without an address, else the cluster's
    actor, started (with `runners` job runners, default 2) if it is not running yet."""
    address = address or os.environ.get("RAY_ADDRESS")
    store_uri = store_uri or default_store_uri()
    if not address:
        from tengine.control.plane import ControlPlane

        plane = ControlPlane(store_uri)
        return ControlClient(lambda c, m, a, k: plane.call(c, m, *a, **k), plane.status,
                             "in-process")

    from tengine.cluster.actor import DEFAULT_RUNNERS, get_or_start

    join_cluster(address)
    actor = get_or_start(store_uri, runners=DEFAULT_RUNNERS if runners is None else runners)
    return actor_client(actor, f"actor on {address}")


def join_cluster(address: str, **init_kwargs: Any) -> None:
    """`ray.init` for a running cluster (unless this process is already in one).

    Ray 2.60 clusters want a token, which a driver sends only in token mode, and that mode is
    read when Ray's config loads, so setting RAY_AUTH_MODE after `import ray` is too late. Ray's
    own helper (private, what `ray start` runs) switches this process to token mode when a token
    is at hand (~/.ray/auth_token, RAY_AUTH_TOKEN[_PATH]) and RAY_AUTH_MODE is unset."""
    import ray

    if ray.is_initialized():
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available as use_token_if_any,
        )
    except ImportError:  # another Ray: its drivers set RAY_AUTH_MODE themselves
        pass
    else:
        use_token_if_any(warn_if_disabled=False)
    ray.init(address=address, **{"namespace": "tengine", "log_to_driver": False, **init_kwargs})


def actor_client(actor: Any, where: str, timeout_s: float = 120.0) -> ControlClient:
    """A client that calls the control actor `actor` (a Ray handle)."""
    import ray

    def call(component: str, method: str, args: tuple, kwargs: dict) -> Any:
        try:
            return ray.get(actor.call.remote(component, method, args, kwargs), timeout=timeout_s)
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, TengineError):
                raise err.cause from None
            raise

    transient = (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError)
    return ControlClient(call, lambda: ray.get(actor.status.remote(), timeout=timeout_s), where,
                         transient)
