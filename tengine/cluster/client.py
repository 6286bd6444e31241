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
from typing import Any

from tengine.control.store import default_store_uri
from tengine.errors import TengineError


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
                 transient: tuple[type[BaseException], ...] = (),
                 tick: Callable[[], list[str]] | None = None):
        self._call, self._status, self.where, self.transient = call, status, where, transient
        # the in-process plane's background round (leases, schedules, triggers): nobody runs it
        # unless its host does (`tengine jobs work`); the actor runs its own
        self.tick = tick
        self.jobs = _Component(call, "jobs")
        self.schedules = _Component(call, "schedules")
        self.registry = _Component(call, "registry")
        self.runs = _Component(call, "runs")
        self.triggers = _Component(call, "triggers")

    def status(self) -> dict[str, Any]:
        return {**self._status(), "where": self.where}


def connect(address: str | None = None, store_uri: str | None = None,
            runners: int | None = None, allowed_imports: tuple[str, ...] = (),
            artifact_root: str | None = None) -> ControlClient:
    """A client for the control plane: in this process without an address (on `store_uri`,
    default `runs/control/tengine.db` here), else the cluster's actor, started on the head
    (with `runners` job runners, default 2) if it is not running yet; there `store_uri` None
    means the store the cluster's control plane has. `allowed_imports`: module prefixes jobs
    may import beyond `tengine.`, and `artifact_root` where registered models are copied (for
    the plane this call starts; a running actor keeps its own)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        from tengine.control.plane import ControlPlane

        plane = ControlPlane(store_uri or default_store_uri(), allowed_imports=allowed_imports,
                             artifact_root=artifact_root)
        return ControlClient(lambda c, m, a, k: plane.call(c, m, *a, **k), plane.status,
                             "in-process", tick=plane.tick)

    from tengine.cluster.actor import DEFAULT_RUNNERS, check_cluster_store, get_or_start

    check_cluster_store(store_uri)  # before joining: a bad URI needs no cluster to be refused
    join_cluster(address)
    actor = get_or_start(store_uri, runners=DEFAULT_RUNNERS if runners is None else runners,
                         allowed_imports=allowed_imports, artifact_root=artifact_root)
    return actor_client(actor, f"actor on {address}")


def join_cluster(address: str, **init_kwargs: Any) -> None:
    """`ray.init` for a running cluster (unless this process is already in one).

    Ray 2.60 clusters want a token, which a driver sends only in token mode, and that mode is
    read when Ray's config loads, so setting RAY_AUTH_MODE after `import ray` is too late. Ray's
    own helper (private, what `ray start` runs) switches this process to token mode when a token
    is at hand (~/.ray/auth_token, RAY_AUTH_TOKEN[_PATH]) and RAY_AUTH_MODE is unset.

    An address with no cluster behind it fails in seconds (`reach.check_reachable`), not after
    Ray's minutes of retries. In a job's process (TENGINE_ALLOWED_IMPORTS set by its runner) the
    variable goes to every Ray worker of this driver too (the job's runtime_env), so a trial or
    Train worker on another node refuses the same imports (`tengine/control/safety.py`)."""
    import ray

    if ray.is_initialized():
        return
    from tengine.cluster.reach import check_reachable
    from tengine.registry import ALLOWED_IMPORTS_ENV

    check_reachable(address)
    if ALLOWED_IMPORTS_ENV in os.environ:
        runtime_env = dict(init_kwargs.get("runtime_env") or {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}),
                                   ALLOWED_IMPORTS_ENV: os.environ[ALLOWED_IMPORTS_ENV]}
        init_kwargs["runtime_env"] = runtime_env
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
