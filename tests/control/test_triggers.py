"""Retraining triggers and promotion on the control plane (SQLite and PostgreSQL): a drift
alert fires one retrain however often and from however many clients it is evaluated; an ok
report fires nothing; the cooldown and the in-flight rule hold; a time trigger fires once after
downtime; presets, explain and bad specs; promotion only when better, recorded either way."""

from __future__ import annotations

import threading

import pytest

from tengine.control.jobs import CANCELLED
from tengine.control.plane import ControlPlane
from tengine.control.triggers import PRESETS, check_spec, preset
from tengine.errors import Conflict, Invalid

SHA = "ab" * 32
JOB = {"config": {"name": "m", "logging": {"root": "/tmp/runs"}}}


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _plane(uri: str, clock: Clock) -> ControlPlane:
    return ControlPlane(uri, clock=clock)


def _production(plane: ControlPlane, metrics: dict | None = None) -> int:
    v = plane.registry.register("m", artifact_uri="/a/1", sha256=SHA, size=1,
                                metrics=metrics or {"val_loss": 2.0})
    plane.registry.set_alias("m", "production", v.version)
    return v.version


def _drift(status: str, worst: float, examples: int = 500) -> dict:
    return {"status": status, "examples": examples, "reference_examples": 1000,
            "size": examples, "reference_size": 1000,
            "settings": {"warn": 0.1, "alert": 0.2},
            "features": [{"feature": "bigrams", "statistic": "js_distance", "value": worst,
                          "status": status}, {"feature": "tokens", "statistic": "js_distance",
                                              "value": 0.01, "status": "ok"}]}


def _retrains(plane: ControlPlane) -> list:
    return [j for j in plane.jobs.list() if j.type == "retrain"]


def test_a_drift_alert_fires_one_retrain_however_often_and_from_two_clients(store_uri):
    clock = Clock()
    a, b = _plane(store_uri, clock), _plane(store_uri, clock)  # two clients, one store
    _production(a)
    a.triggers.add("m-drift", model="m", spec={"drift": {"threshold": 0.2}}, job=JOB,
                   cooldown_s=3600)
    assert a.triggers.submit_report("m", "drift", _drift("ok", 0.05))["fired"] == []
    assert _retrains(a) == []  # unshifted data: no job

    # recorded without evaluating; then two clients evaluate at the same instant, 10 times
    # each: both pass the read-only pre-check, the locked transaction lets one fire
    a.triggers.submit_report("m", "drift", _drift("alert", 0.31), evaluate=False)
    errors, fired, start = [], [], threading.Barrier(2)

    def hammer(plane: ControlPlane) -> None:
        try:
            start.wait()
            for _ in range(10):
                fired.extend(e["job_id"] for e in plane.triggers.evaluate() if e["fired"])
        except Exception as err:  # noqa: BLE001 — reported below
            errors.append(err)

    threads = [threading.Thread(target=hammer, args=(p,)) for p in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(fired) == 1
    got = {"fired": fired}
    [job] = _retrains(a)
    assert job.id == got["fired"][0] and job.config["register"] == "m"
    assert job.config["trigger"]["name"] == "m-drift"
    [firing] = a.triggers.firings("m-drift")
    [leaf] = firing["reason"]["leaves"]
    assert (leaf["leaf"], leaf["value"], leaf["threshold"], leaf["holds"]) == (
        "drift", 0.31, 0.2, True)
    assert firing["job_id"] == job.id and firing["idempotency_key"] == job.idempotency_key
    for p in (a, b):
        p.store.close()


def test_cooldown_in_flight_and_after_the_cooldown_exactly_one_more(store_uri):
    clock = Clock()
    plane = _plane(store_uri, clock)
    _production(plane)
    plane.triggers.add("t", model="m", spec={"drift": {"threshold": 0.2}}, job=JOB,
                       cooldown_s=600)
    plane.triggers.submit_report("m", "drift", _drift("alert", 0.4))
    [first] = _retrains(plane)
    clock.now += 700  # past the cooldown, but the retrain has not run yet: in flight
    assert not any(e["fired"] for e in plane.triggers.evaluate())
    assert len(_retrains(plane)) == 1
    assert plane.triggers.explain("t")["in_flight"] == [first.id]
    plane.jobs.cancel(first.id, reason="test")
    clock.now -= 400  # within the cooldown (300 s after the firing): nothing
    assert not any(e["fired"] for e in plane.triggers.evaluate())
    assert plane.triggers.explain("t")["cooldown_left_s"] == pytest.approx(300)
    # the store holds the cooldown: a control plane started afresh on it (an actor restart)
    plane.store.close()
    plane = _plane(store_uri, clock)
    assert not any(e["fired"] for e in plane.triggers.evaluate())
    clock.now += 301
    fired = [e for e in plane.triggers.evaluate() if e["fired"]]
    assert len(fired) == 1 and len(_retrains(plane)) == 2
    assert {j.state for j in _retrains(plane)} == {CANCELLED, "PENDING"}
    plane.store.close()


def test_a_time_trigger_fires_once_after_downtime(store_uri):
    clock = Clock()
    plane = _plane(store_uri, clock)
    _production(plane)
    plane.triggers.add("weekly", model="m", spec={"time": {"hours": 168}}, job=JOB, cooldown_s=0)
    clock.now += 3600 * 24 * 30  # a month without a tick: four missed weeks
    results = [plane.tick() for _ in range(5)]
    assert sum(len(r) for r in results) == 1
    [job] = _retrains(plane)
    plane.jobs.cancel(job.id, reason="ran")  # done; the clock starts again at the firing
    assert plane.tick() == []
    clock.now += 3600 * 168
    assert len(plane.tick()) == 1
    plane.store.close()


def test_performance_volume_and_composite_leaves_and_explain(store_uri):
    clock = Clock()
    plane = _plane(store_uri, clock)
    _production(plane, {"val_loss": 2.0, "val_accuracy": 0.8})
    spec = {"all": [{"performance": {"metric": "val_loss", "threshold": 0.05}},
                    {"volume": {"relative": 0.2}}]}
    plane.triggers.add("both", model="m", spec=spec, job=JOB)
    plane.triggers.submit_report("m", "metrics", {"metrics": {"val_loss": 2.06}})  # +3 %
    v = plane.triggers.explain("both")
    assert not v["holds"] and [x["leaf"] for x in v["leaves"]] == ["performance", "volume"]
    assert v["leaves"][0]["value"] == pytest.approx(0.03)
    assert v["leaves"][1]["why"].startswith("no report of the current data")
    plane.triggers.submit_report("m", "metrics", {"metrics": {"val_loss": 2.2}})  # +10 %
    same_size = plane.triggers.submit_report("m", "drift", _drift("ok", 0.05, examples=1000))
    assert same_size["fired"] == []  # the data did not grow: volume does not hold
    got = plane.triggers.submit_report("m", "drift", _drift("ok", 0.05, examples=1300))
    assert len(got["fired"]) == 1  # 30 % more examples than the reference: both hold
    [firing] = plane.triggers.firings("both")
    leaves = {x["leaf"]: x for x in firing["reason"]["leaves"]}
    assert leaves["performance"]["value"] == pytest.approx(0.1)
    assert leaves["volume"]["value"] == pytest.approx(0.3)
    assert leaves["volume"]["unit"] == "growth over the reference"
    # accuracy is a max metric: a drop is the bad direction
    plane.triggers.add("acc", model="m", spec={"performance": {
        "metric": "val_accuracy", "mode": "max", "threshold": 0.05}}, job=JOB)
    plane.triggers.submit_report("m", "metrics", {"metrics": {"val_accuracy": 0.72}})
    assert plane.triggers.explain("acc")["leaves"][0]["value"] == pytest.approx(0.1)
    plane.store.close()


def test_presets_are_the_seeds_and_bad_specs_name_the_node():
    assert {n: (p["drift"], p["performance"], p["hours"], p["volume"]) for n, p in
            PRESETS.items()} == {"conservative": (0.2, 0.10, 336, 0.30),
                                 "balanced": (0.15, 0.05, 168, 0.20),
                                 "aggressive": (0.1, 0.03, 48, 0.10)}
    spec = preset("aggressive")
    check_spec(spec)
    assert [next(iter(x)) for x in spec["any"]] == ["drift", "performance", "time", "volume"]
    with pytest.raises(Invalid, match=r"spec.any\[1\]: 'drfit' is not a leaf or node.*drift"):
        check_spec({"any": [{"time": {"hours": 1}}, {"drfit": {"threshold": 1}}]})
    with pytest.raises(Invalid, match="volume: give exactly one of absolute or relative"):
        check_spec({"volume": {}})
    with pytest.raises(Invalid, match="preset 'balance' unknown"):
        preset("balance")


def test_promotion_only_when_better_recorded_either_way(store):
    from tengine.control.registry import ModelRegistry

    reg = ModelRegistry(store, clock=Clock())
    for i in (1, 2, 3):
        reg.register("m", artifact_uri=f"/a/{i}", sha256=SHA, size=1)
    reg.set_alias("m", "production", 1)
    worse = reg.promote_if_better("m", 2, metric="val_loss", candidate_value=2.5,
                                  baseline_version=1, baseline_value=2.4, margin=0.0,
                                  job_id="job-1")
    assert worse["decision"] == "kept" and reg.get("m", "production").version == 1
    assert "not below 2.4" in worse["reason"]
    within = reg.promote_if_better("m", 2, metric="val_loss", candidate_value=2.39,
                                   baseline_version=1, baseline_value=2.4, margin=0.01)
    assert within["decision"] == "kept"  # 0.01 better, the margin asks for 0.024
    better = reg.promote_if_better("m", 3, metric="val_loss", candidate_value=2.1,
                                   baseline_version=1, baseline_value=2.4, margin=0.01)
    assert better["decision"] == "promoted" and reg.get("m", "production").version == 3
    stale = reg.promote_if_better("m", 2, metric="val_loss", candidate_value=1.0,
                                  baseline_version=1, baseline_value=2.4)
    assert stale["decision"] == "conflict" and reg.get("m", "production").version == 3
    history = reg.promotions("m")
    assert [(h["candidate"], h["baseline"], h["candidate_value"], h["baseline_value"],
             h["decision"]) for h in history] == [(2, 1, 2.5, 2.4, "kept"),
                                                  (2, 1, 2.39, 2.4, "kept"),
                                                  (3, 1, 2.1, 2.4, "promoted"),
                                                  (2, 1, 1.0, 2.4, "conflict")]
    [move] = [e for e in reg.alias_history("m", "production") if e["to_version"] == 3]
    assert move["from_version"] == 1 and "val_loss" in move["reason"]
    with pytest.raises(Conflict):  # the alias's compare-and-set itself still guards manual moves
        reg.set_alias("m", "production", 2, expected_version=1)


def test_the_balanced_preset_fires_nothing_on_unshifted_data_of_the_same_size(store_uri):
    clock = Clock()
    plane = _plane(store_uri, clock)
    _production(plane)
    plane.triggers.add("m-balanced", model="m", spec=preset("balanced"), job=JOB,
                       cooldown_s=PRESETS["balanced"]["cooldown_s"])
    report = _drift("ok", 0.04, examples=1000)  # the reference's size: no growth either
    assert plane.triggers.submit_report("m", "drift", report)["fired"] == []
    v = plane.triggers.explain("m-balanced")
    assert not v["holds"] and not any(leaf["holds"] for leaf in v["leaves"])
    assert _retrains(plane) == []
    plane.store.close()


def test_the_drift_leaf_counts_only_what_the_report_flagged(store_uri):
    clock = Clock()
    plane = _plane(store_uri, clock)
    _production(plane)
    plane.triggers.add("low", model="m", spec={"drift": {"threshold": 0.05}}, job=JOB)
    chance = {"status": "ok", "examples": 300, "reference_examples": 300, "features": [
        {"feature": "output_entropy", "statistic": "ks_2samp", "value": 0.12, "status": "ok"},
        {"feature": "tokens", "statistic": "js_distance", "value": 0.04, "status": "ok"}]}
    assert plane.triggers.submit_report("m", "drift", chance)["fired"] == []  # a D called ok
    [leaf] = plane.triggers.explain("low")["leaves"]
    assert (leaf["value"], leaf["holds"]) == (0.0, False)
    plane.store.close()


def test_a_baseline_without_a_number_is_never_beaten(store):
    from tengine.control.registry import ModelRegistry

    reg = ModelRegistry(store, clock=Clock())
    for i in (1, 2):
        reg.register("m", artifact_uri=f"/a/{i}", sha256=SHA, size=1)
    reg.set_alias("m", "production", 1)
    d = reg.promote_if_better("m", 2, metric="val_loss", candidate_value=1.0,
                              baseline_version=1, baseline_value=None)
    assert d["decision"] == "kept" and "nothing compared" in d["reason"]
    assert reg.get("m", "production").version == 1
    reg.remove_alias("m", "production")
    first = reg.promote_if_better("m", 2, metric="val_loss", candidate_value=1.0,
                                  baseline_version=None, baseline_value=None)
    assert first["decision"] == "promoted" and reg.get("m", "production").version == 2


def test_bad_leaf_numbers_and_a_job_outside_the_allow_list_are_refused_when_added(tmp_path):
    plane = ControlPlane(f"sqlite:///{tmp_path}/c.db")
    with pytest.raises(Invalid, match=r"spec.time.hours: '1w' is not a number"):
        plane.triggers.add("t", model="m", spec={"time": {"hours": "1w"}}, job=JOB)
    job = {"config": {**JOB["config"], "model": {"name": "evil.module:factory"}}}
    with pytest.raises(Invalid, match="evil"):
        plane.triggers.add("t", model="m", spec={"time": {"hours": 1}}, job=job)
    assert plane.triggers.list() == []
    plane.store.close()
