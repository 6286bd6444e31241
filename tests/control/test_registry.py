"""Model registry: numbering under concurrency, immutable versions, aliases with audit, errors."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

import pytest

from tengine.control import ModelRegistry, open_store
from tengine.errors import Conflict, Invalid, NotFound

SHA = "ab" * 32


def _reg(**kw):
    return {"artifact_uri": "/runs/x/checkpoints/step_00000010", "sha256": SHA, "size": 123, **kw}


@pytest.fixture
def reg():
    return ModelRegistry(open_store("memory://"), clock=iter(range(1000, 10_000)).__next__)


def _register_many(path: str, worker: int, n: int) -> None:
    reg = ModelRegistry(open_store(f"sqlite:///{path}"))
    for i in range(n):
        reg.register("shared", **_reg(tags={"worker": str(worker), "i": str(i)}))


def test_concurrent_registrations_get_every_number_once(tmp_path):
    db = tmp_path / "control" / "tengine.db"
    open_store(f"sqlite:///{db}").close()  # create the schema once
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(str(db), w, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    versions = ModelRegistry(open_store(f"sqlite:///{db}")).list_models("shared")
    assert [v.version for v in versions] == list(range(1, 401))
    per_worker = {}
    for v in versions:
        per_worker.setdefault(v.tags["worker"], []).append(int(v.tags["i"]))
    assert all(sorted(i) == list(range(50)) for i in per_worker.values()) and len(per_worker) == 8


def test_aliases_move_atomically_with_an_audit_trail(reg):
    v1, v2 = reg.register("m", **_reg(metrics={"val_loss": 2.0})), reg.register("m", **_reg(metrics={"val_loss": 1.5}))
    reg.promote_model("m", v1.version, by="alice", reason="first")
    reg.promote_model("m", v2.version, by="ci", reason="better val_loss")
    assert reg.get("m", "production").version == 2 and reg.get("m", 2).aliases == ("production",)
    history = reg.alias_history("m", "production")
    assert [(h["from_version"], h["to_version"], h["actor"], h["reason"]) for h in history] == [
        (None, 1, "alice", "first"), (1, 2, "ci", "better val_loss")]
    assert history[0]["ts"] < history[1]["ts"]
    comparison = reg.compare_models("m", 1, "production")
    assert comparison["metrics"]["val_loss"]["delta"] == pytest.approx(-0.5)


def test_delete_and_retire_are_refused_while_an_alias_points_at_the_version(reg):
    reg.register("m", **_reg())
    reg.set_alias("m", "staging", 1)
    with pytest.raises(Conflict, match="alias\\(es\\) staging point at it"):
        reg.delete_model("m", 1)
    with pytest.raises(Conflict):
        reg.retire_model("m", 1)
    reg.remove_alias("m", "staging", by="bob")
    assert reg.retire_model("m", 1).status == "retired"
    reg.delete_model("m", 1)
    with pytest.raises(NotFound):
        reg.get("m", 1)
    assert reg.register("m", **_reg()).version == 2  # numbers are never reused


def test_a_job_registers_its_model_once(reg):
    first = reg.register("m", **_reg(job_id="job-1"))
    again = reg.register("m", **_reg(job_id="job-1", size=999))  # its runner lost the reply
    other = reg.register("m", **_reg(job_id="job-2"))
    assert (first.version, again.version, again.size, other.version) == (1, 1, 123, 2)
    retrained = reg.register("m", **_reg(job_id="job-1", sha256="ef" * 32))  # `jobs retry`
    assert retrained.version == 3


def test_lineage_follows_parents(reg):
    reg.register("m", **_reg())
    reg.register("m", **_reg(parent_version=1))
    reg.register("m", **_reg(parent_version=2, source_run="runs/r3", job_id="job-3"))
    chain = reg.get_model_lineage("m", "latest")
    assert [v.version for v in chain] == [3, 2, 1] and chain[0].job_id == "job-3"


@pytest.mark.parametrize("call, error, text", [
    (lambda r: r.register("../escape", **_reg()), Invalid, "no path separators"),
    (lambda r: r.register("a/b", **_reg()), Invalid, "not allowed"),
    (lambda r: r.register("m", artifact_uri="/x", sha256="nothex", size=1), Invalid, "sha256"),
    (lambda r: r.register("m", artifact_uri="/x", sha256=SHA, size=-1), Invalid, "size"),
    (lambda r: r.register("m", **_reg(parent_version=9)), NotFound, "parent version 9"),
    (lambda r: r.get("nope", 1), NotFound, "has no version 1"),
    (lambda r: r.get("m", "prod"), NotFound, "has no alias 'prod'"),
    (lambda r: r.get("m", 0), Invalid, "must be ≥ 1"),
    (lambda r: r.set_alias("m", "7", 1), Invalid, "shadow version numbers"),
    (lambda r: r.set_alias("m", "x/y", 1), Invalid, "not allowed"),
])
def test_bad_input_is_refused_and_writes_nothing(reg, call, error, text):
    reg.register("m", **_reg())
    before = reg.list_models(status=None), reg.alias_history("m")
    with pytest.raises(error, match=text):
        call(reg)
    assert (reg.list_models(status=None), reg.alias_history("m")) == before


def test_control_layer_needs_neither_torch_nor_ray():
    code = ("import sys, tengine.control, tengine.control.runner, tengine.control.executors; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
