"""The control plane's store: one schema in SQLAlchemy Core, on SQLite or PostgreSQL, by URI.

    store = open_store("sqlite:///abs/runs/control/tengine.db")      # the embedded default
    store = open_store("postgresql://tengine@/tengine?host=/run/pg")  # a server, for a cluster
    store = open_store("memory://")                                   # tests: one process
    with store.transaction() as db:                                   # the store's write lock
        db.execute(insert(jobs).values(...))
    store.read(select(jobs).where(jobs.c.state == "PENDING"))         # list of row mappings

Every write transaction takes the store's one write lock first (SQLite: `BEGIN IMMEDIATE`;
PostgreSQL: a transaction-scoped advisory lock), so read-then-write sequences (the next version
number, claim the next job, fire a schedule once) are atomic across threads, processes and
hosts with the same code on both backends. Writers are serialised; the control plane's writes
are small (a few rows), so this costs throughput only far beyond what a cluster's queue needs
(`bench/controlplane_load.py`), and buys one easy rule instead of per-query locking. Readers
never wait (WAL on SQLite, MVCC on PostgreSQL).

Durability, per transaction: `transaction()` is durable (SQLite `synchronous=FULL`,
PostgreSQL's `synchronous_commit` as the server has it, on by default): a registration, an alias
move, a schedule change or a job submit that was acknowledged survives power loss.
`transaction(durable=False)` is for the queue's high-rate bookkeeping (claims, heartbeats, state
moves, logs): SQLite `synchronous=NORMAL` in WAL, PostgreSQL `synchronous_commit=off`. Both stay
consistent after a crash but may lose the last fraction of a second of such commits; the queue
is built for exactly that (a lost claim or heartbeat ends as an expired lease, a lost
completion reruns the job: at least once). WAL needs shared memory, so the file must be
on a local disk of the one host that opens it: on a multi-node cluster, the control actor on the
head is that host, and `tengine jobs work` on other hosts needs PostgreSQL.

The schema is versioned (`meta.schema_version`, `MIGRATIONS`): a new store is created at the
newest version; an older one is migrated forward under the write lock, once, by whoever opens it
first. The store's identity (`meta.identity`: the URI it was created under, a uuid, when) is
stamped at creation, so a client can tell which store a running control plane has.
No torch here: the control plane stores URIs, checksums and JSON.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import StaticPool

from tengine.errors import Conflict, Invalid, TengineError

metadata = MetaData()
# SQLite makes an INTEGER PRIMARY KEY an alias of its rowid (autoincrementing); BIGINT elsewhere
_ID = BigInteger().with_variant(Integer, "sqlite")


def _serial(name: str) -> Column:
    return Column(name, _ID, primary_key=True, autoincrement=True)


jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True), Column("type", String(32), nullable=False),
    Column("config", Text, nullable=False), Column("resources", Text, nullable=False),
    Column("priority", Integer, nullable=False), Column("max_retries", Integer, nullable=False),
    Column("attempts", Integer, nullable=False), Column("state", String(16), nullable=False),
    Column("idempotency_key", String(256), unique=True), Column("created", Double, nullable=False),
    Column("updated", Double, nullable=False), Column("not_before", Double, nullable=False),
    Column("lease_owner", String(256)), Column("lease_expires", Double), Column("result", Text),
    Column("error", Text), Column("schedule_id", String(64)), Column("fire_time", Double),
    Column("seq", BigInteger, nullable=False),
    Index("jobs_ready", "state", "priority", "seq"),
    Index("jobs_seq", "seq"),  # v2: MAX(seq) at every submit, without a scan
    # one fire of a schedule makes at most one job (NULLs are distinct: other jobs unaffected)
    Index("jobs_fire", "schedule_id", "fire_time", unique=True),
)
job_events = Table(
    "job_events", metadata, _serial("id"),
    Column("job_id", String(64), nullable=False, index=True), Column("ts", Double, nullable=False),
    Column("from_state", String(16)), Column("to_state", String(16), nullable=False),
    Column("reason", Text),
)
job_logs = Table(
    "job_logs", metadata, _serial("id"),
    Column("job_id", String(64), nullable=False, index=True), Column("ts", Double, nullable=False),
    Column("line", Text, nullable=False),
)
model_versions = Table(
    "model_versions", metadata,
    Column("name", String(128), primary_key=True), Column("version", Integer, primary_key=True),
    Column("artifact_uri", Text, nullable=False), Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False), Column("metrics", Text, nullable=False),
    Column("config_hash", String(64)), Column("source_run", Text), Column("job_id", String(64)),
    Column("parent_version", Integer), Column("tags", Text, nullable=False),
    Column("created", Double, nullable=False), Column("status", String(16), nullable=False),
    # v2: where the registry's copy came from (a checkpoint of a run), and its step
    Column("source_uri", Text), Column("step", Integer),
)
aliases = Table(
    "aliases", metadata,
    Column("name", String(128), primary_key=True), Column("alias", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
)
alias_events = Table(
    "alias_events", metadata, _serial("id"),
    Column("name", String(128), nullable=False, index=True),
    Column("alias", String(128), nullable=False), Column("from_version", Integer),
    Column("to_version", Integer), Column("ts", Double, nullable=False), Column("actor", Text),
    Column("reason", Text),
)
schedules = Table(
    "schedules", metadata,
    Column("id", String(64), primary_key=True), Column("name", String(128), unique=True, nullable=False),
    Column("cron", String(128)), Column("tz", String(64), nullable=False), Column("interval_s", Double),
    Column("job_type", String(32), nullable=False), Column("config", Text, nullable=False),
    Column("resources", Text, nullable=False), Column("priority", Integer, nullable=False),
    Column("misfire", String(16), nullable=False), Column("grace_s", Double, nullable=False),
    Column("enabled", Integer, nullable=False), Column("created", Double, nullable=False),
    Column("last_fire", Double, nullable=False),
    # v2: fires missed by more than grace_s but less than this run once (misfire run_once)
    Column("misfire_window_s", Double),
)
# v3: export bundles attached to a model version (`tengine export --register`, export jobs)
bundles = Table(
    "bundles", metadata, _serial("id"),
    Column("name", String(128), nullable=False), Column("version", Integer, nullable=False),
    Column("uri", Text, nullable=False), Column("sha256", String(64), nullable=False),
    Column("formats", Text, nullable=False), Column("figures", Text, nullable=False),
    Column("job_id", String(64)), Column("created", Double, nullable=False),
    Index("bundles_version", "name", "version"),
)
# v4: the experiment DB (tengine/control/experiments.py): runs, their metrics and artifacts
runs = Table(
    "runs", metadata,
    Column("id", String(160), primary_key=True), Column("name", String(128), nullable=False),
    Column("status", String(16), nullable=False), Column("run_dir", Text),
    Column("sweep", String(128)), Column("job_id", String(64)),
    Column("tags", Text, nullable=False),  # JSON list
    # the resolved config flattened to dotted keys, secrets masked (JSON), and its hash
    Column("params", Text, nullable=False), Column("config_hash", String(64)),
    Column("env", Text), Column("summary", Text),  # JSON: env.json, summary.json
    Column("starts", Integer, nullable=False),  # 1 + resumes
    Column("created", Double, nullable=False), Column("updated", Double, nullable=False),
    Column("ended", Double),
    Index("runs_name", "name"), Index("runs_sweep", "sweep"),
)
run_metrics = Table(
    "run_metrics", metadata, _serial("id"),
    Column("run_id", String(160), nullable=False), Column("key", String(128), nullable=False),
    Column("step", BigInteger, nullable=False), Column("value", Double),  # NULL: NaN
    Column("ts", Double, nullable=False),
    # 1: a later value for this step replaced it (a resumed run repeating steps); kept, not shown
    Column("superseded", Integer, nullable=False),
    Index("run_metrics_key", "run_id", "key", "step"),
)
run_artifacts = Table(
    "run_artifacts", metadata, _serial("id"),
    Column("run_id", String(160), nullable=False, index=True),
    Column("kind", String(32), nullable=False), Column("uri", Text, nullable=False),
    Column("sha256", String(64)), Column("step", BigInteger), Column("meta", Text, nullable=False),
    Column("created", Double, nullable=False),
    Column("superseded", Integer, nullable=False),  # 1: from after the step a resume went back to
)
# v5: the production loop: retraining triggers, what they were sent, what they fired, and
# each promotion decision (tengine/control/triggers.py, promotion.py)
triggers = Table(
    "triggers", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), unique=True, nullable=False),
    Column("model", String(128), nullable=False, index=True),
    Column("spec", Text, nullable=False),  # JSON: the condition tree
    Column("job", Text, nullable=False),  # JSON: the retrain job's config
    Column("cooldown_s", Double, nullable=False), Column("enabled", Integer, nullable=False),
    Column("fires", Integer, nullable=False),  # firings so far: part of each job's key
    Column("last_fired", Double),  # in the store: the cooldown survives restarts
    Column("created", Double, nullable=False),
)
trigger_firings = Table(
    "trigger_firings", metadata, _serial("id"),
    Column("trigger_id", String(64), nullable=False, index=True),
    Column("model", String(128), nullable=False),
    Column("ts", Double, nullable=False), Column("job_id", String(64), nullable=False),
    Column("idempotency_key", String(256), nullable=False),
    Column("reason", Text, nullable=False),  # JSON: every leaf's value and threshold
)
monitor_reports = Table(
    "monitor_reports", metadata, _serial("id"),
    Column("model", String(128), nullable=False), Column("kind", String(16), nullable=False),
    Column("status", String(16)), Column("body", Text, nullable=False),
    Column("ts", Double, nullable=False),
    Index("monitor_reports_model", "model", "kind"),
)
promotions = Table(
    "promotions", metadata, _serial("id"),
    Column("name", String(128), nullable=False, index=True),
    Column("alias", String(128), nullable=False), Column("candidate", Integer, nullable=False),
    Column("baseline", Integer), Column("metric", String(128), nullable=False),
    Column("mode", String(8), nullable=False), Column("margin", Double, nullable=False),
    Column("candidate_value", Double), Column("baseline_value", Double),
    Column("decision", String(16), nullable=False),  # promoted | kept | conflict
    Column("reason", Text, nullable=False), Column("job_id", String(64)),
    Column("ts", Double, nullable=False),
)
# a request repeated with the same key (its reply was lost) returns the first one's result
idempotency = Table(
    "idempotency", metadata,
    Column("key", String(256), primary_key=True), Column("operation", String(64), nullable=False),
    Column("result", Text, nullable=False), Column("created", Double, nullable=False),
)
meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True), Column("value", Text, nullable=False),
)


# --- migrations --------------------------------------------------------------------------------
def _legacy_to_v1(db: Connection) -> None:
    """A store written by tengine before the schema had versions (sqlite3, no `meta` table):
    its event and log tables get the `id` column that orders them (was SQLite's rowid)."""
    for table in (job_events, job_logs, alias_events):
        db.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {table.name}_legacy")
        for index in table.indexes:  # the legacy table holds no such index names
            index.drop(db, checkfirst=True)
        table.create(db)
        columns = ", ".join(c.name for c in table.columns if c.name != "id")
        db.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) SELECT {columns} "
                           f"FROM {table.name}_legacy ORDER BY rowid")
        db.exec_driver_sql(f"DROP TABLE {table.name}_legacy")


def _v1_to_v2(db: Connection) -> None:
    """Registry-owned artifacts (`source_uri`, `step`), the misfire window, idempotency keys,
    an index for the next job's sequence number."""
    for table, column in ((model_versions, "source_uri"), (model_versions, "step"),
                          (schedules, "misfire_window_s")):
        kind = table.c[column].type.compile(dialect=db.dialect)
        db.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column} {kind}")
    idempotency.create(db, checkfirst=True)
    next(i for i in jobs.indexes if i.name == "jobs_seq").create(db, checkfirst=True)


def _v2_to_v3(db: Connection) -> None:
    """Export bundles attached to model versions."""
    bundles.create(db, checkfirst=True)


def _v3_to_v4(db: Connection) -> None:
    """The experiment DB: runs, their metrics and artifacts."""
    for table in (runs, run_metrics, run_artifacts):
        table.create(db, checkfirst=True)


def _v4_to_v5(db: Connection) -> None:
    """The production loop: triggers, their firings, monitoring reports, promotions."""
    for table in (triggers, trigger_firings, monitor_reports, promotions):
        table.create(db, checkfirst=True)


# MIGRATIONS[k] takes a store from version k to k + 1; a new store is created at SCHEMA_VERSION
MIGRATIONS: list[Callable[[Connection], None]] = [_legacy_to_v1, _v1_to_v2, _v2_to_v3, _v3_to_v4,
                                                  _v4_to_v5]
SCHEMA_VERSION = len(MIGRATIONS)


# --- the store ---------------------------------------------------------------------------------
class StoreError(TengineError):
    """The store cannot be opened or used (server down, bad credentials, a newer schema)."""


class Store:
    """One database behind the control plane. `transaction()` for writes, `read()` for reads."""

    def __init__(self, uri: str, engine, path: str | None = None):
        self.uri, self.engine = uri, engine
        self.path = path  # a SQLite store's file
        self.dialect = engine.dialect.name
        # SQLAlchemy connections are per thread; memory:// has one shared connection, so its
        # users take turns (a file or a server gives each thread its own connection)
        shared = isinstance(engine.pool, StaticPool)
        self._serial = threading.RLock() if shared else contextlib.nullcontext()
        # SQLite: this process's writers queue here, not in SQLite's busy handler (which sleeps
        # up to 100 ms between tries); other processes still wait for the file lock
        self._writers = threading.Lock() if self.dialect == "sqlite" and not shared \
            else contextlib.nullcontext()
        try:
            self._migrate()
        except OperationalError as err:
            raise StoreError(f"cannot open the store {redact_uri(uri)}: {err.orig}") from None

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Connection]:
        """A write transaction, holding the store's write lock from its first statement."""
        with self._serial, self._writers, \
                self.engine.connect().execution_options(tengine_durable=durable) as db:
            with db.begin():  # SQLite: BEGIN IMMEDIATE (the `begin` event in `_sqlite`)
                yield db

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads, without the write lock or a transaction: each statement sees
        what was committed when it ran (no BEGIN/COMMIT round trips)."""
        options = {"tengine_read": True}
        if self.dialect != "sqlite":
            options["isolation_level"] = "AUTOCOMMIT"
        with self._serial, self.engine.connect().execution_options(**options) as db:
            yield db

    def read(self, statement, params: dict[str, Any] | None = None) -> list[Any]:
        """Rows (mappings) of one read (`params`: its bind parameters)."""
        with self.reading() as db:
            return list(db.execute(statement, params).mappings().all())

    def scalar(self, statement, params: dict[str, Any] | None = None) -> Any:
        rows = self.read(statement, params)
        return next(iter(rows[0].values())) if rows else None

    @property
    def identity(self) -> dict[str, Any]:
        row = self.read(select(meta.c.value).where(meta.c.key == "identity"))
        return json.loads(row[0]["value"])

    def close(self) -> None:
        self.engine.dispose()

    def _migrate(self) -> None:
        with self.transaction() as db:
            tables = set(inspect(db).get_table_names())
            if "meta" in tables:
                version = int(db.execute(select(meta.c.value).where(
                    meta.c.key == "schema_version")).scalar_one())
            elif "jobs" in tables:  # written before versions existed
                meta.create(db)
                version = 0
            else:  # a new store: the newest schema at once
                metadata.create_all(db)
                self._stamp(db)
                return
            if version > SCHEMA_VERSION:
                raise StoreError(f"the store {redact_uri(self.uri)} has schema version {version}, "
                                 f"newer than this tengine's {SCHEMA_VERSION}: upgrade tengine")
            if version < SCHEMA_VERSION:
                for step in MIGRATIONS[version:]:
                    step(db)
                self._stamp(db, migrated_from=version)

    def _stamp(self, db: Connection, **extra: Any) -> None:
        """The store's identity and schema version (a new store's, or after a migration)."""
        db.execute(meta.delete().where(meta.c.key.in_(("schema_version", "identity"))))
        identity = {"uri": redact_uri(self.uri), "id": uuid.uuid4().hex, "created": time.time(),
                    **extra}
        db.execute(meta.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                                   {"key": "identity", "value": json.dumps(identity)}])


def default_store_uri(root: str | Path = "runs") -> str:
    """The embedded store of a runs root: `sqlite:///<abs root>/control/tengine.db`."""
    return f"sqlite:///{Path(root).resolve() / 'control' / 'tengine.db'}"


def redact_uri(uri: str) -> str:
    """The URI without its password (what logs, errors and the identity row may show)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)


# --- opening by URI ----------------------------------------------------------------------------
def _sqlite(uri: str, path: str) -> Store:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60,
                                                                  "check_same_thread": False})
    else:
        engine = create_engine("sqlite://", poolclass=StaticPool,
                               connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # the transactions are ours (BEGIN below)
        cursor = dbapi_conn.cursor()
        if path != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # a writer takes SQLite's write lock up front
        options = conn.get_execution_options()
        if options.get("tengine_read"):  # reads autocommit: no transaction to begin
            return
        # (a connection-level setting, allowed only outside a transaction: set before BEGIN)
        conn.exec_driver_sql("PRAGMA synchronous=" + ("FULL" if options.get("tengine_durable", True)
                                                      else "NORMAL"))
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return Store(uri, engine, path=None if path == ":memory:" else path)


# any number that no other user of the database is likely to lock: "tengine" in ASCII
WRITE_LOCK_KEY = 0x74656E67696E65


def _postgresql(uri: str) -> Store:
    from tengine.extras import require

    require("psycopg", "postgres", "a postgresql:// store")
    try:
        url = make_url(uri).set(drivername="postgresql+psycopg")
    except ArgumentError as err:
        raise Invalid(f"store URI {redact_uri(uri)!r} is not a valid URL ({err})") from None
    # No pre-ping (a round trip at every checkout, a third of a read's cost): after a server
    # restart the first call fails, SQLAlchemy drops the pool's dead connections, and the next
    # call connects anew.
    # connect_timeout: a host that does not answer fails in 10 s, not the OS's minutes
    engine = create_engine(url, pool_size=8, max_overflow=8, pool_recycle=3600,
                           connect_args={"connect_timeout": 10})

    return PostgresStore(uri, engine)


class PostgresStore(Store):
    """The transaction is ours, not SQLAlchemy's: BEGIN, the write lock and the durability
    setting go to the server in one round trip (the connection is in autocommit mode, so
    nothing else sends a BEGIN), then COMMIT or ROLLBACK."""

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Connection]:
        begin = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})" + (
            "" if durable else "; SET LOCAL synchronous_commit = off")
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
            db.exec_driver_sql(begin)
            try:
                yield db
            except BaseException:
                with contextlib.suppress(Exception):  # a dead connection: the error is above
                    db.exec_driver_sql("ROLLBACK")
                raise
            db.exec_driver_sql("COMMIT")


def open_store(uri: str) -> Store:
    """`sqlite:///abs/path.db` (`sqlite://rel/path.db`: from the working directory),
    `postgresql://user@host/db` (any libpq URI: `?host=/socket/dir`,
    credentials from PG* variables or ~/.pgpass), or `memory://`."""
    if uri == "memory://":
        return _sqlite(uri, ":memory:")
    if uri.startswith("sqlite://"):
        path = uri.removeprefix("sqlite://")  # "/abs/x.db" (sqlite:///abs/x.db) or "rel/x.db"
        if not path.strip("/"):
            raise Invalid(f"store URI '{uri}' has no path; use sqlite:///abs/path/tengine.db")
        return _sqlite(uri, "/" + path.lstrip("/") if path.startswith("/") else path)
    if uri.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return _postgresql(uri.replace("postgres://", "postgresql://", 1))
    raise Invalid(f"store URI '{redact_uri(uri)}': unknown scheme; use sqlite:///abs/path/tengine.db, "
                  "postgresql://user@host/db or memory://")


# --- idempotency keys --------------------------------------------------------------------------
def recall(db: Connection, key: str | None, operation: str) -> Any:
    """The result recorded for `key` by an earlier `operation`, or None (also for no key)."""
    if key is None:
        return None
    row = db.execute(select(idempotency).where(idempotency.c.key == key)).mappings().first()
    if row is None:
        return None
    if row["operation"] != operation:
        raise Conflict(f"idempotency key {key!r} was used for {row['operation']}, not {operation}")
    return json.loads(row["result"])


def remember(db: Connection, key: str | None, operation: str, result: Any) -> None:
    if key is not None:
        db.execute(idempotency.insert().values(key=key, operation=operation,
                                               result=json.dumps(result), created=time.time()))
