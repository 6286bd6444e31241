"""Fail in seconds, not minutes, when the Ray cluster to join is not there.

    check_reachable("10.0.0.5:6379")    # ClusterUnreachable naming the address and the fix

`ray.init(address=...)` with no cluster at that address retries its GCS connection for minutes
before it gives up, and `--address auto` with no cluster on this machine fails with a message
that says nothing of how to start one. So before `ray.init`, `join_cluster` resolves the
address as Ray would (an explicit `host:port`; `auto`: RAY_ADDRESS, else the cluster `ray start`
last recorded in /tmp/ray/ray_current_cluster, else a Ray running on this machine; `ray://`:
the Ray Client server) and opens one TCP connection to it with a deadline: refused, unknown
host or no answer within `timeout_s` each fail at once with the address and how to start a
cluster. A port that answers is taken as the cluster: whatever `ray.init` finds there is its
own error.
"""

from __future__ import annotations

import os
import socket

from tengine.errors import TengineError

PROBE_TIMEOUT_S = 5.0
CLIENT_PORT = 10001  # `ray://host` without a port: the Ray Client server's default


class ClusterUnreachable(TengineError):
    """The Ray cluster named by --address / RAY_ADDRESS is not there."""

    exit_code = 2


def check_reachable(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """The `host:port` that `address` resolves to, once something listens there; else
    `ClusterUnreachable`. `local` (a Ray started in this process) is not probed."""
    if address == "local":
        return address
    target = resolve(address)
    host, port = split_host_port(target, address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise ClusterUnreachable(_message(address, target, _why(err, timeout_s))) from None
    return target


def resolve(address: str) -> str:
    """What Ray would connect to for `address` (`auto` looked up as `ray.init` does)."""
    if address.startswith("ray://"):
        rest = address.removeprefix("ray://").split("/")[0]
        return rest if _has_port(rest) else f"{rest}:{CLIENT_PORT}"
    if address != "auto":
        return address
    try:  # Ray's own lookup, so the probe checks the cluster ray.init would pick
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # another Ray: RAY_ADDRESS, else the address `ray start` recorded
        return _recorded_address(address)
    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        found = None
    if not found:
        raise ClusterUnreachable(_message(address, None, "no running Ray cluster was found on "
                                          "this machine (nor RAY_ADDRESS)"))
    return found


def _recorded_address(address: str) -> str:
    env = os.environ.get("RAY_ADDRESS")
    if env and env != "auto":
        return env
    tmp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    recorded = os.path.join(tmp, "ray", "ray_current_cluster")
    try:
        with open(recorded) as fh:
            return fh.read().strip()
    except OSError:
        raise ClusterUnreachable(_message(address, None, f"no running Ray cluster was found "
                                          f"({recorded} does not exist)")) from None


def _has_port(hostport: str) -> bool:
    return hostport.rpartition(":")[2].isdigit() and not hostport.endswith("]")


def split_host_port(target: str, address: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachable(f"Ray address '{address}' is not host:port (nor auto); give the "
                                 "address `ray start --head` printed, e.g. --address 10.0.0.5:6379")
    return host.strip("[]"), int(port)


def _why(err: OSError, timeout_s: float) -> str:
    if isinstance(err, socket.gaierror):
        return f"unknown host ({err.strerror})"
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused, nothing listens there"
    return err.strerror or type(err).__name__


def _message(address: str, target: str | None, why: str) -> str:
    env = os.environ.get("RAY_ADDRESS")
    given = f"RAY_ADDRESS={address}" if env and env == address else f"--address {address}"
    at = f" (that is {target})" if target and target != address else ""
    return (f"cannot reach the Ray cluster of {given}{at}: {why}. Start one with `ray start "
            "--head` (it prints the address to pass; on its head node --address auto finds it), "
            "or leave out --address and RAY_ADDRESS to run on this machine without a cluster")
