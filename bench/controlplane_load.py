"""Control-plane load: ops/s and p50/p99 latency through the detached actor, with the same
operations in-process (no Ray) side by side.

    .venv/bin/python bench/controlplane_load.py [--ops 500]

Operations: jobs.submit, jobs.claim + jobs.start + jobs.complete (one op each), registry.register,
registry.get. The actor's store is SQLite (WAL) in a temp dir. Last line: `ops_per_s=<x>` for
the actor path (target ≥ 500 ops/s, p99 ≤ 20 ms on this machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

SHA = "ab" * 32


def drive(client, n: int) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {k: [] for k in ("submit", "claim", "start", "complete",
                                                   "register", "get")}

    def timed(name: str, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        lat[name].append(time.perf_counter() - t)
        return out

    for i in range(n):
        timed("submit", client.jobs.submit, "sleep", {"i": i})
    for _ in range(n):
        job = timed("claim", client.jobs.claim, "bench", 60.0)
        timed("start", client.jobs.start, job.id, "bench")
        timed("complete", client.jobs.complete, job.id, "bench", {})
    for _ in range(n):
        timed("register", client.registry.register, "bench", artifact_uri="/x", sha256=SHA, size=1)
    for i in range(n):
        timed("get", client.registry.get, "bench", i + 1)
    return lat


def report(label: str, lat: dict[str, list[float]]) -> float:
    every = [x for v in lat.values() for x in v]
    ops = len(every) / sum(every)
    q = statistics.quantiles(every, n=100)
    print(f"{label}: {len(every)} ops, {ops:.0f} ops/s, p50 {q[49] * 1e3:.2f} ms, "
          f"p99 {q[98] * 1e3:.2f} ms")
    for name, xs in lat.items():
        qs = statistics.quantiles(xs, n=100)
        print(f"  {name:9s} p50 {qs[49] * 1e3:6.2f} ms  p99 {qs[98] * 1e3:6.2f} ms")
    return ops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=500, help="operations of each kind")
    args = ap.parse_args()
    import ray

    from tengine.cluster.actor import stop
    from tengine.cluster.client import connect

    with tempfile.TemporaryDirectory() as tmp:
        local = report("in-process", drive(connect(store_uri=f"sqlite:///{tmp}/local.db"), args.ops))
        ray.init(num_cpus=2, include_dashboard=False, namespace="tengine", log_to_driver=False)
        try:
            # no job runners: they would claim the jobs this bench claims itself
            client = connect("auto", store_uri=f"sqlite:///{tmp}/actor.db", runners=0)
            client.status()  # the actor is up before timing starts
            actor = report("actor", drive(client, args.ops))
        finally:
            stop()
            ray.shutdown()
    print(f"actor/in-process throughput ratio: {actor / local:.3f}")
    print(f"ops_per_s={actor:.0f}")


if __name__ == "__main__":
    main()
