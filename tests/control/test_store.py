"""The store itself: a store written before the schema had versions is migrated with its data, a
newer schema is refused, every store carries its identity, and PostgreSQL takes plain libpq URIs
(a Unix-socket `?host=`, the user from the environment, the password from ~/.pgpass)."""

from __future__ import annotations

import sqlite3

import pytest

from tengine.control import JobQueue, ModelRegistry, open_store
from tengine.control.store import SCHEMA_VERSION, StoreError, meta

LEGACY = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, config TEXT NOT NULL, resources TEXT NOT NULL,
    priority INTEGER NOT NULL, max_retries INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, idempotency_key TEXT UNIQUE, created REAL NOT NULL, updated REAL NOT NULL,
    not_before REAL NOT NULL, lease_owner TEXT, lease_expires REAL, result TEXT, error TEXT,
    schedule_id TEXT, fire_time REAL, seq INTEGER NOT NULL);
CREATE INDEX jobs_ready ON jobs (state, priority DESC, seq);
CREATE TABLE job_events (
    job_id TEXT NOT NULL, ts REAL NOT NULL, from_state TEXT, to_state TEXT NOT NULL, reason TEXT);
CREATE TABLE job_logs (job_id TEXT NOT NULL, ts REAL NOT NULL, line TEXT NOT NULL);
CREATE TABLE model_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, artifact_uri TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, metrics TEXT NOT NULL, config_hash TEXT, source_run TEXT, job_id TEXT,
    parent_version INTEGER, tags TEXT NOT NULL, created REAL NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (name, alias));
CREATE TABLE alias_events (
    name TEXT NOT NULL, alias TEXT NOT NULL, from_version INTEGER, to_version INTEGER,
    ts REAL NOT NULL, actor TEXT, reason TEXT);
CREATE TABLE schedules (
    id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, cron TEXT, tz TEXT NOT NULL, interval_s REAL,
    job_type TEXT NOT NULL, config TEXT NOT NULL, resources TEXT NOT NULL, priority INTEGER NOT NULL,
    misfire TEXT NOT NULL, grace_s REAL NOT NULL, enabled INTEGER NOT NULL, created REAL NOT NULL,
    last_fire REAL NOT NULL);
"""


def test_a_store_from_before_schema_versions_is_migrated_with_everything_in_it(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(LEGACY)
    db.execute("INSERT INTO jobs VALUES ('job-1','train','{}','{}',5,0,1,'SUCCEEDED',NULL,1,2,1,"
               "'r',NULL,'{}',NULL,NULL,NULL,1)")
    for ts, frm, to in ((3.0, "LEASED", "RUNNING"), (1.0, None, "PENDING"), (2.0, "PENDING", "LEASED")):
        db.execute("INSERT INTO job_events VALUES ('job-1',?,?,?,'x')", (ts, frm, to))  # rowid order
    db.execute("INSERT INTO model_versions VALUES ('m',1,'/a','" + "ab" * 32 + "',1,'{}',NULL,NULL,"
               "NULL,NULL,'{}',1,'active')")
    db.execute("INSERT INTO aliases VALUES ('m','production',1)")
    db.execute("INSERT INTO alias_events VALUES ('m','production',NULL,1,1,'ci','first')")
    db.commit()
    db.close()
    store = open_store(f"sqlite:///{path}")
    queue, registry = JobQueue(store), ModelRegistry(store)
    assert [e["to_state"] for e in queue.events("job-1")] == ["RUNNING", "PENDING", "LEASED"]
    assert registry.get("m", "production").aliases == ("production",)
    assert [h["reason"] for h in registry.alias_history("m")] == ["first"]
    assert registry.register("m", artifact_uri="/b", sha256="cd" * 32, size=1).version == 2
    assert queue.submit("train").id != "job-1" and len(queue.list()) == 2
    assert registry.attach_bundle("m", 1, uri="/b1", sha256="ef" * 32, formats=["onnx"])["uri"] == "/b1"
    from tengine.control.experiments import ExperimentDB  # v4: the experiment DB's tables

    runs = ExperimentDB(store)
    run = runs.log_run("r", {"optim": {"lr": 1e-3}})
    runs.log_metrics(run, {"train_loss": 1.0}, step=1)
    assert runs.get_metrics(run)[0]["value"] == 1.0
    assert store.scalar(meta.select().with_only_columns(meta.c.value).where(
        meta.c.key == "schema_version")) == str(SCHEMA_VERSION)
    assert store.identity["migrated_from"] == 0
    store.close()
    again = open_store(f"sqlite:///{path}")  # migrated once: the identity stays
    assert again.identity == store.identity
    again.close()


def test_a_newer_schema_is_refused_and_the_identity_is_stable(store, store_uri):
    identity = store.identity
    assert identity["uri"] == store_uri and len(identity["id"]) == 32
    with store.transaction() as db:
        db.execute(meta.update().where(meta.c.key == "schema_version").values(value="99"))
    with pytest.raises(StoreError, match="schema version 99, newer than this tengine's"):
        open_store(store_uri)
    with store.transaction() as db:
        db.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
    reopened = open_store(store_uri)
    assert reopened.identity == identity
    reopened.close()


def test_postgresql_takes_a_plain_libpq_uri_with_the_user_from_the_environment(postgres, monkeypatch):
    uri = postgres.new_database()  # postgresql://tengine@/t_…?host=<socket dir>
    no_user = uri.replace(f"{postgres.USER}@", "")
    monkeypatch.setenv("PGUSER", postgres.USER)  # libpq's own defaults apply, as in psql
    store = open_store(no_user)
    try:
        job = JobQueue(store).submit("train", {"x": 1})
        assert JobQueue(store).get(job.id).config == {"x": 1}
    finally:
        store.close()
    monkeypatch.setenv("PGUSER", "nobody_here")
    with pytest.raises(StoreError, match="cannot open the store"):
        open_store(no_user)


def test_a_password_never_reaches_errors_or_the_identity(postgres):
    uri = postgres.uri("no_such_db").replace(f"{postgres.USER}@", f"{postgres.USER}:s3cret@")
    with pytest.raises(StoreError) as err:
        open_store(uri)
    assert "s3cret" not in str(err.value) and ":***@" in str(err.value)


def test_postgresql_takes_the_password_from_a_pgpass_file(postgres, tmp_path, monkeypatch):
    postgres.add_password_role("alice", "s3cret-pw")
    uri = f"postgresql://alice@/alice?host={postgres.socket_dir}"
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "nothing"))
    with pytest.raises(StoreError, match="cannot open the store"):
        open_store(uri)  # the server wants a password and none is at hand
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("*:*:*:alice:s3cret-pw\n")
    pgpass.chmod(0o600)  # libpq ignores a pgpass others can read
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    store = open_store(uri)  # the URI as written: no password in it
    try:
        assert JobQueue(store).submit("train").state == "PENDING"
    finally:
        store.close()
