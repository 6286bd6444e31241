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
def reg(store):
    return ModelRegistry(store, clock=iter(range(1000, 10_000)).__next__)


def _register_many(uri: str, worker: int, n: int) -> None:
    reg = ModelRegistry(open_store(uri))
    for i in range(n):
        reg.register("shared", **_reg(tags={"worker": str(worker), "i": str(i)}))


def test_concurrent_registrations_get_every_number_once(store, store_uri):
    """8 processes × 50 registrations of one model: versions 1..400, no gap, no duplicate."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(store_uri, w, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    versions = ModelRegistry(store).list_models("shared")
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


def test_a_conditional_alias_move_wins_once_and_the_loser_gets_a_conflict(store, store_uri):
    """Two promotions racing from the same state (both read production → v1): exactly one
    moves the alias, the other is refused, and the audit trail shows one move."""
    reg = ModelRegistry(store)
    for _ in range(3):
        reg.register("m", **_reg())
    reg.promote_model("m", 1)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_promote_if_at, args=(store_uri, target, 1, results))
             for target in (2, 3)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [o[0] for o in outcomes] == ["conflict", "moved"]
    winner = next(v for kind, v in outcomes if kind == "moved")
    assert reg.get("m", "production").version == winner
    moves = reg.alias_history("m", "production")
    assert [(h["from_version"], h["to_version"]) for h in moves] == [(None, 1), (1, winner)]
    with pytest.raises(Conflict, match="points at v.*not v1 as expected"):
        reg.promote_model("m", 2, expected_version=1)
    with pytest.raises(Conflict, match="points at nothing"):
        reg.set_alias("m", "staging", 2, expected_version=1)
    assert "staging" in reg.set_alias("m", "staging", 2, expected_version=None).aliases


def _promote_if_at(uri: str, target: int, expected: int, results) -> None:
    reg = ModelRegistry(open_store(uri))
    try:
        reg.promote_model("m", target, expected_version=expected, by=f"p{target}")
        results.put(("moved", target))
    except Conflict:
        results.put(("conflict", target))


def test_requests_repeated_with_an_idempotency_key_change_nothing(reg):
    first = reg.register("m", **_reg(), idempotency_key="upload-7")
    again = reg.register("m", **_reg(size=5), idempotency_key="upload-7")
    assert (first.version, again.version, again.size) == (1, 1, 123) and len(reg.list_models()) == 1
    reg.register("m", **_reg())
    reg.promote_model("m", 1, idempotency_key="promote-1")
    reg.promote_model("m", 2)
    reg.promote_model("m", 1, idempotency_key="promote-1")  # a stale repeat: no move back
    assert reg.get("m", "production").version == 2 and len(reg.alias_history("m")) == 2
    with pytest.raises(Conflict, match="was used for register"):
        reg.set_alias("m", "staging", 1, idempotency_key="upload-7")


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


def test_bundles_attach_to_the_version_they_were_exported_from_once(reg):
    v1 = reg.register("m", **_reg())
    v2 = reg.register("m", **_reg(sha256="cd" * 32))
    reg.set_alias("m", "production", 1)
    first = reg.attach_bundle("m", 1, uri="/b/qs", sha256="ef" * 32, formats=["safetensors", "onnx"],
                              figures={"parity": {"onnx": {"max_abs": 1e-7}}},
                              expected_sha256=v1.sha256)
    again = reg.attach_bundle("m", 1, uri="/b/qs", sha256="ef" * 32, formats=["safetensors", "onnx"],
                              expected_sha256=v1.sha256)  # a repeated call: the same record
    assert again == first and first["formats"] == ["safetensors", "onnx"]
    assert first["figures"]["parity"]["onnx"]["max_abs"] == 1e-7
    with pytest.raises(Conflict, match="not from m v2"):
        reg.attach_bundle("m", 2, uri="/b/qs", sha256="ef" * 32, formats=["onnx"],
                          expected_sha256=v1.sha256)
    with pytest.raises(NotFound, match="no version 3"):
        reg.attach_bundle("m", 3, uri="/b/x", sha256="ef" * 32, formats=["onnx"])
    assert [b["uri"] for b in reg.list_bundles("m", "production")] == ["/b/qs"]
    replaced = reg.attach_bundle("m", 1, uri="/b/qs", sha256="12" * 32, formats=["onnx"])
    assert replaced["sha256"] == "12" * 32  # exported again to the same place: one record
    assert [b["sha256"] for b in reg.list_bundles("m", 1)] == ["12" * 32]
    assert reg.list_bundles("m", v2.version) == [] and len(reg.list_bundles("m")) == 1


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
