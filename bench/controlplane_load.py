"""Control-plane load: ops/s and p50/p99 latency through the detached actor, on each store
(SQLite and PostgreSQL), with the same operations in-process (no Ray) side by side.

    .venv/bin/python bench/controlplane_load.py [--ops 800] [--clients 4]

Operations: jobs.submit, jobs.claim + jobs.start + jobs.complete (one op each), registry.register,
registry.get, `--ops` of each, spread over `--clients` concurrent client threads (runners and
users at once, as on a cluster; the actor serves 8 calls at a time), and from one client for
the latency of a lone caller. SQLite: WAL, synchronous=FULL, in a temp dir. PostgreSQL: a throwaway server
(tests/pg.py) with its durable defaults (fsync on, synchronous_commit on), on a Unix socket.
Last lines: `<store>_ops_per_s=<x> <store>_p99_ms=<y>` for the actor path on each store
(targets ≥ 500 ops/s and p99 ≤ 20 ms on this machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.pg: the throwaway server

SHA = "ab" * 32


OPS = ("submit", "claim", "start", "complete", "register", "get")


def drive(client, n: int, clients: int) -> tuple[dict[str, list[float]], float]:
    """`clients` threads, each like a runner plus a user: n/clients submits, claim + start +
    complete of as many jobs (any client's), registrations of its own model and gets of them.
    Returns the latencies of every op and the wall time of the whole load."""
    lat: dict[str, list[float]] = {k: [] for k in OPS}
    lock = threading.Lock()
    per = n // clients

    def timed(name: str, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        dt = time.perf_counter() - t
        with lock:
            lat[name].append(dt)
        return out

    def one(k: int) -> None:
        me = f"bench-{k}"
        for i in range(per):
            timed("submit", client.jobs.submit, "sleep", {"i": i})
        for _ in range(per):  # never None: every client claims only after its own submits
            job = timed("claim", client.jobs.claim, me, 60.0)
            timed("start", client.jobs.start, job.id, me)
            timed("complete", client.jobs.complete, job.id, me, {})
        for _ in range(per):
            timed("register", client.registry.register, me, artifact_uri="/x", sha256=SHA, size=1)
        for i in range(per):
            timed("get", client.registry.get, me, i + 1)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0


def report(label: str, result: tuple[dict[str, list[float]], float]) -> tuple[float, float]:
    lat, wall = result
    every = [x for v in lat.values() for x in v]
    ops = len(every) / wall
    q = statistics.quantiles(every, n=100)
    print(f"{label}: {len(every)} ops in {wall:.2f} s, {ops:.0f} ops/s, p50 {q[49] * 1e3:.2f} ms, "
          f"p99 {q[98] * 1e3:.2f} ms", flush=True)
    for name, xs in lat.items():
        qs = statistics.quantiles(xs, n=100)
        print(f"  {name:9s} p50 {qs[49] * 1e3:6.2f} ms  p99 {qs[98] * 1e3:6.2f} ms")
    return ops, q[98] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=800, help="operations of each kind")
    ap.add_argument("--clients", type=int, default=4,
                    help="concurrent clients (the default 2 runners and 2 users)")
    args = ap.parse_args()
    import ray

    from tengine.cluster.actor import stop
    from tengine.cluster.client import connect
    from tests.pg import PostgresServer

    results = {}
    with tempfile.TemporaryDirectory() as tmp, PostgresServer(Path(tmp) / "pg", durable=True) as pg:
        stores = {"sqlite": lambda name: f"sqlite:///{tmp}/{name}.db",
                  "postgresql": lambda name: pg.new_database()}
        for kind, new_store in stores.items():
            local = report(f"{kind}, in-process, 1 client",
                           drive(connect(store_uri=new_store("local")), args.ops, 1))
            ray.init(num_cpus=2, include_dashboard=False, namespace="tengine", log_to_driver=False)
            try:
                # no job runners: they would claim the jobs this bench claims itself
                client = connect("auto", store_uri=new_store("actor"), runners=0)
                client.status()  # the actor is up before timing starts
                one = report(f"{kind}, through the actor, 1 client", drive(client, args.ops, 1))
                results[kind] = report(f"{kind}, through the actor, {args.clients} clients",
                                       drive(client, args.ops, args.clients))
            finally:
                stop()
                ray.shutdown()
            print(f"{kind}: 1 client through the actor / in-process: {one[0] / local[0]:.3f}")
    for kind, (ops, p99) in results.items():
        print(f"{kind}_ops_per_s={ops:.0f} {kind}_p99_ms={p99:.1f}")


if __name__ == "__main__":
    main()
