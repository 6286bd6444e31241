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
    def __init__(self, call: Callable, status: Callable[[], dict], where: str):
        self._call, self._status, self.where = call, status, where
        self.jobs = _Component(call, "jobs")
        self.schedules = _Component(call, "schedules")
        self.registry = _Component(call, "registry")

    def status(self) -> dict[str, Any]:
        return {**self._status(), "where": self.where}


def connect(address: str | None = None, store_uri: str | None = None) -> ControlClient:
    address = address or os.environ.get("RAY_ADDRESS")
    store_uri = store_uri or default_store_uri()
    if not address:
        from tengine.control.plane import ControlPlane

        plane = ControlPlane(store_uri)
        return ControlClient(lambda c, m, a, k: plane.call(c, m, *a, **k), plane.status,
                             "in-process")
    import ray

    from tengine.cluster.actor import get_or_start

    if not ray.is_initialized():
        ray.init(address=address, namespace="tengine", log_to_driver=False)
    actor = get_or_start(store_uri)

    def call(component: str, method: str, args: tuple, kwargs: dict) -> Any:
        try:
            return ray.get(actor.call.remote(component, method, args, kwargs))
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, TengineError):
                raise err.cause from None
            raise

    return ControlClient(call, lambda: ray.get(actor.status.remote()), f"actor on {address}")
