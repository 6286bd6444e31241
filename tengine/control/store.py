"""The control plane's store: SQLite (WAL) by URI; every other control module talks SQL to it.

    store = open_store("sqlite:///runs/control/tengine.db")   # the embedded default
    store = open_store("memory://")                           # tests: one process, no file
    with store.transaction() as db:                            # BEGIN IMMEDIATE … COMMIT
        db.execute("INSERT …")

`transaction()` takes SQLite's write lock up front (BEGIN IMMEDIATE), so read-then-write
sequences (next version number, claim the next job) are atomic across threads and processes;
WAL lets readers go on during a write. Another backend (a server database) would implement the
same two methods. No torch here: the control plane stores URIs, checksums and JSON.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tengine.errors import Invalid

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, config TEXT NOT NULL, resources TEXT NOT NULL,
    priority INTEGER NOT NULL, max_retries INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, idempotency_key TEXT UNIQUE, created REAL NOT NULL, updated REAL NOT NULL,
    not_before REAL NOT NULL, lease_owner TEXT, lease_expires REAL, result TEXT, error TEXT,
    schedule_id TEXT, fire_time REAL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (state, priority DESC, seq);
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL, ts REAL NOT NULL, from_state TEXT, to_state TEXT NOT NULL, reason TEXT);
CREATE TABLE IF NOT EXISTS job_logs (job_id TEXT NOT NULL, ts REAL NOT NULL, line TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, artifact_uri TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, metrics TEXT NOT NULL, config_hash TEXT, source_run TEXT, job_id TEXT,
    parent_version INTEGER, tags TEXT NOT NULL, created REAL NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (name, alias));
CREATE TABLE IF NOT EXISTS alias_events (
    name TEXT NOT NULL, alias TEXT NOT NULL, from_version INTEGER, to_version INTEGER,
    ts REAL NOT NULL, actor TEXT, reason TEXT);
"""


class SQLiteStore:
    def __init__(self, path: str):
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # one connection per store, serialised by a lock: the actor is one process; other
        # processes open their own store and SQLite's file lock orders them
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoint, fast commits
        self._db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(uri: str) -> SQLiteStore:
    """`sqlite:///abs/path.db`, `sqlite://relative/path.db`, or `memory://`."""
    if uri == "memory://":
        return SQLiteStore(":memory:")
    if uri.startswith("sqlite://"):
        path = uri.removeprefix("sqlite://")
        if not path:
            raise Invalid("store URI 'sqlite://' has no path; use sqlite:///path/to/tengine.db")
        return SQLiteStore(path)
    raise Invalid(f"store URI '{uri}': unknown scheme; use sqlite:///path/to/tengine.db or memory://")
