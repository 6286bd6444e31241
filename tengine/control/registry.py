"""Model registry: named models, immutable numbered versions, aliases with an audit trail.

    reg = ModelRegistry(open_store("memory://"))
    v = reg.register("mymodel", artifact_uri="/runs/q/checkpoints/step_00001000", sha256=..., size=...)
    reg.promote_model("mymodel", v.version, alias="production", by="ci", reason="beats v3")
    reg.get("mymodel", "production")            # by alias or by number

Version numbers come from one transaction under the store's write lock (read max, insert), so
concurrent registrations from many processes and hosts get 1..N with no gap and no duplicate. Versions never change
after registration except their status (active → retired); an alias move is one transaction that
also writes its audit row. A registration that names its job is made once per job and artifact
(sha256): the job's runner may repeat the call after a lost reply and gets the same version
back, while a retried job that trained again registers its new model as a new version.
`register`, `set_alias` and `promote_model` also take an `idempotency_key`: a request repeated
with the same key (its reply was lost) returns what the first one did and changes nothing.
`set_alias(..., expected_version=N)` is a compare-and-set: it moves the alias only if it points
at N now (None: only if the alias does not exist yet), else `Conflict` — two promotions racing
from the same state cannot both win. The registry keeps records; `tengine/control/artifacts.py`
copies what is registered into the registry's own artifact root first.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update

from tengine.control.store import (
    Store,
    alias_events,
    aliases,
    bundles,
    meta,
    model_versions,
    recall,
    remember,
)
from tengine.errors import Conflict, Invalid, NotFound

V, A = model_versions.c, aliases.c
# the reads of `get`, built once (see jobs.py)
# a version with its aliases in one query (aggregate_strings: group_concat / string_agg)
VERSION = select(model_versions, select(func.aggregate_strings(A.alias, ",")).where(
    A.name == V.name, A.version == V.version).scalar_subquery().label("alias_list")).where(
    V.name == bindparam("n"), V.version == bindparam("v"))
NEWEST = select(func.max(V.version)).where(V.name == bindparam("n"))  # any status: never reused
REGISTER = insert(model_versions).returning(*model_versions.c)
LATEST = select(func.max(V.version)).where(V.name == bindparam("n"), V.status == "active")
ALIAS = select(A.version).where(A.name == bindparam("n"), A.alias == bindparam("a"))

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
    source_uri: str | None = None  # what was registered (a run's checkpoint); artifact_uri: the copy
    step: int | None = None  # the checkpoint's optimizer step


class ModelRegistry:
    """`artifact_root`: the directory registered models are copied into (`registry.artifact_root`,
    kept in the store once set, so every client and every restart uses the same one); default
    for a SQLite store: `artifacts/` beside its file."""

    def __init__(self, store: Store, clock=time.time, artifact_root: str | None = None):
        self.store, self.clock = store, clock
        if artifact_root is None and store.dialect == "sqlite" and store.path is not None:
            if self._setting("artifact_root") is None:
                artifact_root = str(Path(store.path).resolve().parent / "artifacts")
        if artifact_root is not None:
            with store.transaction() as db:
                db.execute(delete(meta).where(meta.c.key == "artifact_root"))
                db.execute(insert(meta).values(key="artifact_root", value=str(artifact_root)))

    def artifact_root(self) -> str:
        """Where registered models are copied (every node that registers or uses one must see it)."""
        root = self._setting("artifact_root")
        if root is None:
            raise Invalid("this control plane has no registry.artifact_root: start it with "
                          "`tengine control start --artifact-root DIR` (a directory every node "
                          "sees, e.g. on shared storage, or an object-store URI such as "
                          "s3://bucket/tengine/artifacts)")
        return root

    def _setting(self, key: str) -> str | None:
        return self.store.scalar(select(meta.c.value).where(meta.c.key == key))

    # --- writing -----------------------------------------------------------------------------
    def register(self, name: str, *, artifact_uri: str, sha256: str, size: int,
                 metrics: dict[str, float] | None = None, config_hash: str | None = None,
                 source_run: str | None = None, job_id: str | None = None,
                 parent_version: int | None = None, tags: dict[str, str] | None = None,
                 source_uri: str | None = None, step: int | None = None,
                 idempotency_key: str | None = None) -> ModelVersion:
        check_name(name, "model name")
        if not artifact_uri:
            raise Invalid("artifact_uri is empty")
        if not SHA256.match(sha256 or ""):
            raise Invalid(f"sha256 {sha256!r} is not 64 lowercase hex digits")
        if not isinstance(size, int) or size < 0:
            raise Invalid(f"size {size!r} must be a non-negative integer (bytes)")
        with self.store.transaction() as db:
            if (seen := recall(db, idempotency_key, "register")) is not None:
                return self.get(seen["name"], seen["version"])
            if job_id is not None:  # a job registers a trained model once, however often it asks
                same = db.execute(select(V.version).where(V.name == name, V.job_id == job_id,
                                                          V.sha256 == sha256)).first()
                if same is not None:
                    return self.get(name, same[0])
            latest = db.execute(NEWEST, {"n": name}).scalar() or 0
            if parent_version is not None and not 1 <= parent_version <= latest:
                raise NotFound(f"parent version {parent_version} of '{name}' does not exist "
                               f"(latest is {latest or 'none'})")
            version = latest + 1
            row = db.execute(REGISTER, {
                "name": name, "version": version, "artifact_uri": artifact_uri, "sha256": sha256,
                "size": size, "metrics": json.dumps(metrics or {}), "config_hash": config_hash,
                "source_run": source_run, "job_id": job_id, "parent_version": parent_version,
                "tags": json.dumps(tags or {}), "created": self.clock(), "status": "active",
                "source_uri": source_uri, "step": step}).mappings().one()
            remember(db, idempotency_key, "register", {"name": name, "version": version})
            return self._version(row, ())  # new: no alias yet

    def set_alias(self, name: str, alias: str, version: int, *, by: str | None = None,
                  reason: str | None = None, expected_version: int | None | object = ...,
                  idempotency_key: str | None = None) -> ModelVersion:
        """Point `alias` at `version` (atomically, with an audit row). With `expected_version`
        (an int, or None for "the alias does not exist yet") only if it points there now."""
        check_name(alias, "alias")
        if alias.isdigit():
            raise Invalid(f"alias {alias!r} would shadow version numbers; use a name")
        with self.store.transaction() as db:
            if recall(db, idempotency_key, "set_alias") is not None:
                return self.get(name, version)
            row = self._row(db, name, version)
            if row["status"] != "active":
                raise Conflict(f"{name} v{version} is {row['status']}; only active versions take aliases")
            old = db.execute(select(A.version).where(A.name == name, A.alias == alias)).scalar()
            if expected_version is not ... and old != expected_version:
                raise Conflict(f"alias '{alias}' of '{name}' points at "
                               f"{f'v{old}' if old is not None else 'nothing'}, not "
                               f"{f'v{expected_version}' if expected_version is not None else 'nothing'}"
                               " as expected: someone moved it meanwhile; look again and retry")
            self._move_alias(db, name, alias, version, old, by, reason)
            remember(db, idempotency_key, "set_alias", {"name": name, "version": version})
        return self.get(name, version)

    def _move_alias(self, db, name: str, alias: str, version: int, old: int | None,
                    by: str | None, reason: str | None) -> None:
        if old is None:
            db.execute(insert(aliases).values(name=name, alias=alias, version=version))
        else:
            db.execute(update(aliases).where(A.name == name, A.alias == alias)
                       .values(version=version))
        self._audit(db, name, alias, old, version, by, reason)

    def promote_if_better(self, name: str, candidate: int, *, metric: str,
                          candidate_value: float, baseline_version: int | None,
                          baseline_value: float | None, alias: str = "production",
                          mode: str = "min", margin: float = 0.0,
                          job_id: str | None = None) -> dict[str, Any]:
        """Move `alias` to `candidate` only if its `metric` beats the baseline's by `margin`
        (relative) and the alias still points at `baseline_version`; the decision and both
        numbers are recorded either way (promotion.py). Returns the decision's record."""
        from tengine.control.promotion import decide_and_record

        check_name(alias, "alias")
        return decide_and_record(self, name, candidate, alias=alias, metric=metric, mode=mode,
                                 margin=margin, candidate_value=candidate_value,
                                 baseline_version=baseline_version,
                                 baseline_value=baseline_value, job_id=job_id)

    def promotions(self, name: str) -> list[dict[str, Any]]:
        """Every promotion decision for `name`, oldest first."""
        from tengine.control.promotion import history

        return history(self, name)

    def promote_model(self, name: str, version: int, alias: str = "production", *,
                      by: str | None = None, reason: str | None = None,
                      expected_version: int | None | object = ...,
                      idempotency_key: str | None = None) -> ModelVersion:
        return self.set_alias(name, alias, version, by=by, reason=reason,
                              expected_version=expected_version, idempotency_key=idempotency_key)

    def remove_alias(self, name: str, alias: str, *, by: str | None = None,
                     reason: str | None = None) -> None:
        with self.store.transaction() as db:
            old = db.execute(select(A.version).where(A.name == name, A.alias == alias)).scalar()
            if old is None:
                raise NotFound(f"model '{name}' has no alias '{alias}'")
            db.execute(delete(aliases).where(A.name == name, A.alias == alias))
            self._audit(db, name, alias, old, None, by, reason)

    def _audit(self, db, name: str, alias: str, old: int | None, new: int | None,
               by: str | None, reason: str | None) -> None:
        db.execute(insert(alias_events).values(name=name, alias=alias, from_version=old,
                                               to_version=new, ts=self.clock(), actor=by,
                                               reason=reason))

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
            db.execute(update(model_versions).where(V.name == name, V.version == version)
                       .values(status=status))

    def attach_bundle(self, name: str, version: int, *, uri: str, sha256: str,
                      formats: list[str], figures: dict[str, Any] | None = None,
                      job_id: str | None = None, expected_sha256: str | None = None) -> dict[str, Any]:
        """Record an export bundle of `name` v`version` (made by `tengine export`: it passed
        every check before this is called). `expected_sha256`: the artifact sha256 the bundle
        was exported from; refused unless it is this version's (a bundle of other weights).
        One record per (version, uri): a bundle exported again to the same place (--force, a
        retried export job) replaces its record."""
        if not SHA256.match(sha256 or ""):
            raise Invalid(f"sha256 {sha256!r} is not 64 lowercase hex digits")
        with self.store.transaction() as db:
            row = self._row(db, name, int(version))
            if expected_sha256 is not None and expected_sha256 != row["sha256"]:
                raise Conflict(f"the bundle was exported from artifact {expected_sha256[:12]}…, "
                               f"not from {name} v{version} ({row['sha256'][:12]}…); export "
                               f"that version (tengine export --model {name}:{version})")
            B = bundles.c
            here = (B.name == name, B.version == int(version), B.uri == uri)
            same = db.execute(select(bundles).where(*here)).mappings().first()
            if same is not None and same["sha256"] == sha256:
                return self._bundle(same)  # a repeated call (its reply was lost)
            values = {"sha256": sha256, "formats": json.dumps(list(formats)),
                      "figures": json.dumps(figures or {}), "job_id": job_id,
                      "created": self.clock()}
            if same is None:
                db.execute(insert(bundles).values(name=name, version=int(version), uri=uri, **values))
            else:  # the bundle at this uri was replaced
                db.execute(update(bundles).where(*here).values(**values))
            return self._bundle(db.execute(select(bundles).where(*here)).mappings().one())

    # --- reading -----------------------------------------------------------------------------
    def list_bundles(self, name: str, version: int | str | None = None) -> list[dict[str, Any]]:
        """The export bundles attached to `name` (one version: a number, alias or 'latest'),
        oldest first."""
        B = bundles.c
        query = select(bundles).where(B.name == check_name(name, "model name")).order_by(B.id)
        if version is not None:
            query = query.where(B.version == self.get(name, version).version)
        return [self._bundle(r) for r in self.store.read(query)]

    @staticmethod
    def _bundle(row) -> dict[str, Any]:
        return {**{k: v for k, v in dict(row).items() if k not in ("id", "formats", "figures")},
                "formats": json.loads(row["formats"]), "figures": json.loads(row["figures"])}

    def get(self, name: str, ref: int | str) -> ModelVersion:
        """A version by number, by alias, or 'latest' (newest active)."""
        check_name(name, "model name")
        with self.store.reading() as db:  # one connection for the three reads
            version = self._resolve(db, name, ref)
            row = db.execute(VERSION, {"n": name, "v": version}).mappings().first()
        if row is None or row["status"] == "deleted":
            raise NotFound(f"model '{name}' has no version {version}")
        return self._version(row)

    def list_models(self, name: str | None = None, *, status: str | None = "active",
                    tag: tuple[str, str] | None = None, alias: str | None = None) -> list[ModelVersion]:
        query = select(model_versions).where(V.status != "deleted").order_by(V.name, V.version)
        if name is not None:
            query = query.where(V.name == check_name(name, "model name"))
        if status is not None:
            query = query.where(V.status == status)
        named: dict[tuple[str, int], list[str]] = {}
        for a in self.store.read(select(A.name, A.version, A.alias).order_by(A.alias)):
            named.setdefault((a["name"], a["version"]), []).append(a["alias"])
        out = [self._version(r, tuple(named.get((r["name"], r["version"]), ())))
               for r in self.store.read(query)]
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
        e = alias_events.c
        query = select(alias_events).where(e.name == name).order_by(e.id)
        if alias is not None:
            query = query.where(e.alias == alias)
        return [{k: v for k, v in r.items() if k != "id"} for r in self.store.read(query)]

    # --- helpers -----------------------------------------------------------------------------
    def _resolve(self, db, name: str, ref: int | str) -> int:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            version = int(ref)
            if version < 1:
                raise Invalid(f"version {ref!r} must be ≥ 1")
            return version
        if ref == "latest":
            latest = db.execute(LATEST, {"n": name}).scalar()
            if latest is None:
                raise NotFound(f"model '{name}' has no active version")
            return latest
        check_name(ref, "alias")
        version = db.execute(ALIAS, {"n": name, "a": ref}).scalar()
        if version is None:
            raise NotFound(f"model '{name}' has no alias '{ref}'")
        return version

    def _get_any(self, name: str, version: int) -> ModelVersion | None:
        rows = self.store.read(VERSION, {"n": name, "v": version})
        return self._version(rows[0]) if rows else None

    @staticmethod
    def _row(db, name: str, version: int):
        row = db.execute(VERSION, {"n": name, "v": version}).mappings().first()
        if row is None or row["status"] == "deleted":
            raise NotFound(f"model '{name}' has no version {version}")
        return row

    @staticmethod
    def _refuse_if_aliased(db, name: str, version: int, action: str) -> None:
        names = db.execute(select(A.alias).where(A.name == name, A.version == version)).scalars().all()
        if names:
            raise Conflict(f"cannot {action} {name} v{version}: alias(es) {', '.join(names)} "
                           "point at it; move them first")

    @staticmethod
    def _version(row, aliases: tuple[str, ...] | None = None) -> ModelVersion:
        """A version from its row; its aliases given, else from the row's `alias_list` (a
        row read with VERSION)."""
        if aliases is None:
            aliases = tuple(sorted(row["alias_list"].split(","))) if row["alias_list"] else ()
        return ModelVersion(
            name=row["name"], version=row["version"], artifact_uri=row["artifact_uri"],
            sha256=row["sha256"], size=row["size"], metrics=json.loads(row["metrics"]),
            config_hash=row["config_hash"], source_run=row["source_run"], job_id=row["job_id"],
            parent_version=row["parent_version"], tags=json.loads(row["tags"]),
            created=row["created"], status=row["status"], aliases=aliases,
            source_uri=row["source_uri"], step=row["step"])
