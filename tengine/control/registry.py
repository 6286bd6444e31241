"""Model registry: named models, immutable numbered versions, aliases with an audit trail.

    reg = ModelRegistry(open_store("memory://"))
    v = reg.register("mymodel", artifact_uri="/runs/q/checkpoints/step_00001000", sha256=..., size=...)
    reg.promote_model("mymodel", v.version, alias="production", by="ci", reason="beats v3")
    reg.get("mymodel", "production")            # by alias or by number

Version numbers come from one `BEGIN IMMEDIATE` transaction (read max, insert), so concurrent
registrations from many processes get 1..N with no gap and no duplicate. Versions never change
after registration except their status (active → retired); an alias move is one transaction that
also writes its audit row. A registration that names its job is made once per job and artifact
(sha256): the job's runner may repeat the call after a lost reply and gets the same version
back, while a retried job that trained again registers its new model as a new version.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tengine.control.store import SQLiteStore
from tengine.errors import Conflict, Invalid, NotFound

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME.match(value) or ".." in value:
        raise Invalid(f"{what} {value!r} is not allowed: use letters, digits, '_', '-', '.' "
                      "(no path separators or '..'), at most 128 characters")
    return value


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    artifact_uri: str
    sha256: str
    size: int
    metrics: dict[str, float] = field(default_factory=dict)
    config_hash: str | None = None
    source_run: str | None = None
    job_id: str | None = None
    parent_version: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    status: str = "active"
    aliases: tuple[str, ...] = ()


class ModelRegistry:
    def __init__(self, store: SQLiteStore, clock=time.time):
        self.store, self.clock = store, clock

    # --- writing -----------------------------------------------------------------------------
    def register(self, name: str, *, artifact_uri: str, sha256: str, size: int,
                 metrics: dict[str, float] | None = None, config_hash: str | None = None,
                 source_run: str | None = None, job_id: str | None = None,
                 parent_version: int | None = None, tags: dict[str, str] | None = None) -> ModelVersion:
        check_name(name, "model name")
        if not artifact_uri:
            raise Invalid("artifact_uri is empty")
        if not SHA256.match(sha256 or ""):
            raise Invalid(f"sha256 {sha256!r} is not 64 lowercase hex digits")
        if not isinstance(size, int) or size < 0:
            raise Invalid(f"size {size!r} must be a non-negative integer (bytes)")
        with self.store.transaction() as db:
            if job_id is not None:  # a job registers a trained model once, however often it asks
                same = db.execute("SELECT version FROM model_versions WHERE name = ? AND job_id = ? "
                                  "AND sha256 = ?", (name, job_id, sha256)).fetchone()
                if same is not None:
                    return self.get(name, same[0])
            latest = db.execute("SELECT MAX(version) FROM model_versions WHERE name = ?",
                                (name,)).fetchone()[0] or 0
            if parent_version is not None and not 1 <= parent_version <= latest:
                raise NotFound(f"parent version {parent_version} of '{name}' does not exist "
                               f"(latest is {latest or 'none'})")
            version = latest + 1
            db.execute(
                "INSERT INTO model_versions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, version, artifact_uri, sha256, size, json.dumps(metrics or {}), config_hash,
                 source_run, job_id, parent_version, json.dumps(tags or {}), self.clock(), "active"))
        return self.get(name, version)

    def set_alias(self, name: str, alias: str, version: int, *, by: str | None = None,
                  reason: str | None = None) -> ModelVersion:
        """Point `alias` at `version` (atomically, with an audit row)."""
        check_name(alias, "alias")
        if alias.isdigit():
            raise Invalid(f"alias {alias!r} would shadow version numbers; use a name")
        with self.store.transaction() as db:
            row = self._row(db, name, version)
            if row["status"] != "active":
                raise Conflict(f"{name} v{version} is {row['status']}; only active versions take aliases")
            old = db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?",
                             (name, alias)).fetchone()
            db.execute("INSERT OR REPLACE INTO aliases VALUES (?,?,?)", (name, alias, version))
            db.execute("INSERT INTO alias_events VALUES (?,?,?,?,?,?,?)",
                       (name, alias, old[0] if old else None, version, self.clock(), by, reason))
        return self.get(name, version)

    def promote_model(self, name: str, version: int, alias: str = "production", *,
                      by: str | None = None, reason: str | None = None) -> ModelVersion:
        return self.set_alias(name, alias, version, by=by, reason=reason)

    def remove_alias(self, name: str, alias: str, *, by: str | None = None,
                     reason: str | None = None) -> None:
        with self.store.transaction() as db:
            old = db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?",
                             (name, alias)).fetchone()
            if old is None:
                raise NotFound(f"model '{name}' has no alias '{alias}'")
            db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            db.execute("INSERT INTO alias_events VALUES (?,?,?,?,?,?,?)",
                       (name, alias, old[0], None, self.clock(), by, reason))

    def retire_model(self, name: str, version: int) -> ModelVersion:
        self._set_status(name, version, "retired", "retire")
        return self.get(name, version)

    def delete_model(self, name: str, version: int) -> None:
        """Delete one version's record (never the number: later versions keep counting up)."""
        self._set_status(name, version, "deleted", "delete")

    def _set_status(self, name: str, version: int, status: str, action: str) -> None:
        """Retire or delete: refused while an alias points at the version."""
        with self.store.transaction() as db:
            self._row(db, name, version)
            self._refuse_if_aliased(db, name, version, action)
            db.execute("UPDATE model_versions SET status = ? WHERE name = ? AND version = ?",
                       (status, name, version))

    # --- reading -----------------------------------------------------------------------------
    def get(self, name: str, ref: int | str) -> ModelVersion:
        """A version by number, by alias, or 'latest' (newest active)."""
        check_name(name, "model name")
        version = self._resolve(name, ref)
        rows = self.store.read("SELECT * FROM model_versions WHERE name = ? AND version = ?",
                               (name, version))
        if not rows or rows[0]["status"] == "deleted":
            raise NotFound(f"model '{name}' has no version {version}")
        return self._version(rows[0])

    def list_models(self, name: str | None = None, *, status: str | None = "active",
                    tag: tuple[str, str] | None = None, alias: str | None = None) -> list[ModelVersion]:
        sql, args = "SELECT * FROM model_versions WHERE status != 'deleted'", []
        if name is not None:
            sql += " AND name = ?"
            args.append(check_name(name, "model name"))
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        aliases: dict[tuple[str, int], list[str]] = {}
        for a in self.store.read("SELECT name, version, alias FROM aliases ORDER BY alias"):
            aliases.setdefault((a["name"], a["version"]), []).append(a["alias"])
        rows = self.store.read(sql + " ORDER BY name, version", tuple(args))
        out = [self._version(r, tuple(aliases.get((r["name"], r["version"]), ()))) for r in rows]
        if tag is not None:
            out = [v for v in out if v.tags.get(tag[0]) == tag[1]]
        if alias is not None:
            out = [v for v in out if alias in v.aliases]
        return out

    def compare_models(self, name: str, a: int | str, b: int | str) -> dict[str, Any]:
        va, vb = self.get(name, a), self.get(name, b)
        keys = sorted(set(va.metrics) | set(vb.metrics))
        return {"a": va.version, "b": vb.version,
                "metrics": {k: {"a": va.metrics.get(k), "b": vb.metrics.get(k),
                                "delta": (vb.metrics[k] - va.metrics[k])
                                if k in va.metrics and k in vb.metrics else None} for k in keys},
                "same_config": va.config_hash is not None and va.config_hash == vb.config_hash}

    def get_model_lineage(self, name: str, ref: int | str) -> list[ModelVersion]:
        """The version and its ancestors by `parent_version`, newest first."""
        chain, seen = [], set()
        current: ModelVersion | None = self.get(name, ref)
        while current is not None and current.version not in seen:
            chain.append(current)
            seen.add(current.version)
            parent = current.parent_version
            current = self._get_any(name, parent) if parent else None
        return chain

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM alias_events WHERE name = ?", [name]
        if alias is not None:
            sql += " AND alias = ?"
            args.append(alias)
        return [dict(r) for r in self.store.read(sql + " ORDER BY ts, rowid", tuple(args))]

    # --- helpers -----------------------------------------------------------------------------
    def _resolve(self, name: str, ref: int | str) -> int:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            version = int(ref)
            if version < 1:
                raise Invalid(f"version {ref!r} must be ≥ 1")
            return version
        if ref == "latest":
            row = self.store.read("SELECT MAX(version) FROM model_versions WHERE name = ? AND "
                                  "status = 'active'", (name,))[0][0]
            if row is None:
                raise NotFound(f"model '{name}' has no active version")
            return row
        check_name(ref, "alias")
        rows = self.store.read("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, ref))
        if not rows:
            raise NotFound(f"model '{name}' has no alias '{ref}'")
        return rows[0][0]

    def _get_any(self, name: str, version: int) -> ModelVersion | None:
        rows = self.store.read("SELECT * FROM model_versions WHERE name = ? AND version = ?",
                               (name, version))
        return self._version(rows[0]) if rows else None

    @staticmethod
    def _row(db, name: str, version: int):
        row = db.execute("SELECT * FROM model_versions WHERE name = ? AND version = ?",
                         (name, version)).fetchone()
        if row is None or row["status"] == "deleted":
            raise NotFound(f"model '{name}' has no version {version}")
        return row

    @staticmethod
    def _refuse_if_aliased(db, name: str, version: int, action: str) -> None:
        aliases = [r[0] for r in db.execute(
            "SELECT alias FROM aliases WHERE name = ? AND version = ?", (name, version))]
        if aliases:
            raise Conflict(f"cannot {action} {name} v{version}: alias(es) {', '.join(aliases)} "
                           "point at it; move them first")

    def _version(self, row, aliases: tuple[str, ...] | None = None) -> ModelVersion:
        if aliases is None:
            aliases = tuple(r[0] for r in self.store.read(
                "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias",
                (row["name"], row["version"])))
        return ModelVersion(
            name=row["name"], version=row["version"], artifact_uri=row["artifact_uri"],
            sha256=row["sha256"], size=row["size"], metrics=json.loads(row["metrics"]),
            config_hash=row["config_hash"], source_run=row["source_run"], job_id=row["job_id"],
            parent_version=row["parent_version"], tags=json.loads(row["tags"]),
            created=row["created"], status=row["status"], aliases=aliases)
