"""Job queue: priorities, idempotency, leases that expire, retries with backoff, cancel, errors.

Every test runs on both store backends (SQLite and a throwaway PostgreSQL server: `store`).
"""

from __future__ import annotations

import pytest

from tengine.control import JobQueue
from tengine.errors import Conflict, Invalid, NotFound


class Clock:
    def __init__(self, t: float = 1_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def q(store, clock):
    return JobQueue(store, clock=clock)


def test_higher_priority_first_then_fifo(q):
    low = q.submit("sleep", priority=2)
    a, b = q.submit("sleep", priority=9), q.submit("sleep", priority=9)
    assert [q.claim(f"r{i}").id for i in range(3)] == [a.id, b.id, low.id]
    assert q.claim("r3") is None


def test_idempotency_key_returns_the_same_job(q):
    first = q.submit("train", {"x": 1}, idempotency_key="nightly-2026-11-26")
    again = q.submit("train", {"x": 2}, idempotency_key="nightly-2026-11-26")
    assert again.id == first.id and again.config == {"x": 1} and len(q.list()) == 1


def test_full_lifecycle_records_every_transition(q, clock):
    job = q.submit("sleep", {"seconds": 0})
    q.claim("runner-1")
    clock.t += 1
    q.start(job.id, "runner-1")
    q.log(job.id, "hello")
    done = q.complete(job.id, "runner-1", {"run_dir": "/runs/x"})
    assert done.state == "SUCCEEDED" and done.result == {"run_dir": "/runs/x"} and done.lease_owner == "runner-1"
    assert [(e["from_state"], e["to_state"]) for e in q.events(job.id)] == [
        (None, "PENDING"), ("PENDING", "LEASED"), ("LEASED", "RUNNING"), ("RUNNING", "SUCCEEDED")]
    assert q.logs(job.id) == ["hello"]


def test_expired_lease_requeues_and_the_old_runner_is_refused(q, clock):
    job = q.submit("sleep", max_retries=1)
    q.claim("dead-runner", ttl_s=10)
    q.start(job.id, "dead-runner")
    clock.t += 11  # no heartbeat: the runner died
    assert q.claim("new-runner", ttl_s=10) is None  # the lost attempt backs off like a failure
    assert q.get(job.id).state == "PENDING" and "expired" in q.get(job.id).error
    clock.t += 2.0
    again = q.claim("new-runner", ttl_s=10)
    assert again.id == job.id and again.attempts == 2 and again.lease_owner == "new-runner"
    with pytest.raises(Conflict, match="lease was lost"):
        q.complete(job.id, "dead-runner")
    q.heartbeat(job.id, "new-runner", ttl_s=10)
    clock.t += 9
    q.heartbeat(job.id, "new-runner", ttl_s=10)  # renewed: still the owner
    clock.t += 9
    assert q.start(job.id, "new-runner").state == "RUNNING"


def test_failures_retry_with_backoff_then_fail(q, clock):
    job = q.submit("train", max_retries=2)
    for attempt, delay in ((1, 2.0), (2, 4.0)):  # 2^attempt seconds
        q.claim("r")
        failed = q.fail(job.id, "r", "boom")
        assert failed.state == "PENDING" and failed.attempts == attempt
        assert failed.not_before == clock.t + delay
        assert q.claim("r") is None  # not before the backoff
        clock.t += delay
    q.claim("r")
    final = q.fail(job.id, "r", "boom again")
    assert final.state == "FAILED" and final.attempts == 3 and final.error == "boom again"
    assert q.retry(job.id).state == "PENDING"


def test_a_job_whose_runner_dies_every_attempt_ends_failed_with_the_reason(q, clock):
    """Lease expiry counts as an attempt: a job that kills its runner (node OOM, a segfault)
    is not requeued forever."""
    job = q.submit("train", max_retries=2)
    for attempt in range(1, 4):
        assert q.claim(f"runner-{attempt}", ttl_s=10).attempts == attempt
        q.start(job.id, f"runner-{attempt}")
        clock.t += 11  # the runner died: no heartbeat, no fail
        q.expire_leases()
        clock.t += 10  # past the backoff
    final = q.get(job.id)
    assert final.state == "FAILED" and final.attempts == 3 and "lease of runner-3 expired" in final.error
    reasons = [e["reason"] for e in q.events(job.id) if e["from_state"] == "RUNNING"]
    assert reasons[:2] == ["attempt 1 of 3 lost; retry in 2 s", "attempt 2 of 3 lost; retry in 4 s"]
    assert reasons[2] == "attempt 3 of 3 lost; no retries left (max_retries 2)"
    assert q.claim("runner-4") is None


def test_a_release_gives_the_attempt_back(q, clock):
    job = q.submit("train", max_retries=0)
    for _ in range(3):  # preempted three times: it still has its one attempt
        q.claim("r")
        q.start(job.id, "r")
        released = q.release(job.id, "r", "preempted")
        assert released.state == "PENDING" and released.attempts == 0
    q.claim("r")
    assert q.fail(job.id, "r", "boom").state == "FAILED"


def test_a_runner_repeating_a_call_whose_reply_it_lost_changes_nothing(q, clock):
    """The control actor can die after committing a call and before replying; the runner
    repeats the call, which must neither lease a second job nor move the job again."""
    job, other = q.submit("sleep"), q.submit("sleep")
    assert q.claim("r").id == job.id
    assert q.claim("r").id == job.id  # not `other`: r never got the first reply
    q.start(job.id, "r")
    assert q.start(job.id, "r").state == "RUNNING"
    q.complete(job.id, "r", {"n": 1})
    again = q.complete(job.id, "r", {"n": 2})
    assert again.state == "SUCCEEDED" and again.result == {"n": 1}
    assert [e["to_state"] for e in q.events(job.id)] == ["PENDING", "LEASED", "RUNNING", "SUCCEEDED"]
    assert q.claim("r").id == other.id and q.fail(other.id, "r", "boom").state == "FAILED"
    assert q.fail(other.id, "r", "boom").state == "FAILED"
    assert len(q.events(other.id)) == 3
    with pytest.raises(Conflict, match="lease was lost"):
        q.complete(other.id, "someone-else")


def test_cancel_is_final_unless_retried(q):
    job = q.submit("train")
    q.claim("r")
    assert q.cancel(job.id, "user asked").state == "CANCELLED"
    with pytest.raises(Conflict, match="cannot become CANCELLED"):
        q.cancel(job.id)
    with pytest.raises(Conflict):
        q.complete(job.id, "r")
    assert q.claim("r") is None


@pytest.mark.parametrize("call, error, text", [
    (lambda q: q.submit("trian"), Invalid, "did you mean 'train'"),
    (lambda q: q.submit("train", priority=11), Invalid, "priority 11 must be an integer from 1 to 10"),
    (lambda q: q.submit("train", max_retries=-1), Invalid, "max_retries"),
    (lambda q: q.get("job-nope"), NotFound, "does not exist"),
    (lambda q: q.cancel("job-nope"), NotFound, "does not exist"),
    (lambda q: q.log("job-nope", "x"), NotFound, "does not exist"),
])
def test_bad_requests_change_nothing(q, call, error, text):
    q.submit("sleep")
    before = q.list()
    with pytest.raises(error, match=text):
        call(q)
    assert q.list() == before
