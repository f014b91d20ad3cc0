"""The worker registry, table-driven: plain state, times passed in, no Trio."""

from __future__ import annotations

from typing import Any

import pytest

from casparian_trio.protocol import Heartbeat, Identify, JobRef
from casparian_trio.protocol.limits import PREFETCH_HOLD_S
from casparian_trio.sentinel.registry import (
    HeldJob,
    Registry,
    WorkerState,
    resolve_attempt,
)


def held(job_id: int = 1, attempt: int = 1, **kw: Any) -> HeldJob:
    return HeldJob(job_id=job_id, attempt=attempt, plugin_name="p", timeout_s=10.0, **kw)


def worker(slots: int = 2, **kw: Any) -> WorkerState:
    base: dict[str, Any] = {
        "identity": b"w1",
        "worker_id": "w1",
        "capabilities": frozenset({"*"}),
        "last_seen": 0.0,
    }
    return WorkerState(slots=slots, **(base | kw))


# (worker state, free slots)
FREE_SLOT_CASES: list[tuple[dict[str, Any], int]] = [
    ({}, 2),
    ({"jobs": {1: held(1)}}, 1),
    ({"jobs": {1: held(1), 2: held(2)}}, 0),
    ({"stale": {9: 0.0}}, 1),  # a stale attempt still occupies a slot
    ({"jobs": {1: held(1)}, "stale": {9: 0.0}}, 0),
    ({"jobs": {1: held(1), 2: held(2)}, "stale": {9: 0.0}}, 0),  # never negative
    ({"status": "BUSY"}, 2),
    ({"status": "DRAINING"}, 0),
    ({"healthy": False}, 0),
    ({"credit_hold": True}, 0),
    # prefetch: slots beyond ``slots`` only while its jobs are short
    ({"prefetch": 1, "jobs": {1: held(1), 2: held(2)}}, 0),
    ({"prefetch": 1, "short_jobs": True, "jobs": {1: held(1), 2: held(2)}}, 1),
    ({"prefetch": 1, "short_jobs": True, "jobs": {1: held(1)}}, 2),
    ({"prefetch": 1, "short_jobs": True, "jobs": {i: held(i) for i in (1, 2, 3)}}, 0),
    ({"prefetch": 1, "short_jobs": True, "status": "DRAINING"}, 0),
    ({"prefetch": 1, "short_jobs": True, "credit_hold": True}, 0),
]


@pytest.mark.parametrize(("state", "free"), FREE_SLOT_CASES)
def test_free_slots(state: dict[str, Any], free: int) -> None:
    assert worker(**state).free_slots == free


# (capabilities, plugin, can run it)
CAPABILITY_CASES: list[tuple[frozenset[str], str, bool]] = [
    (frozenset({"*"}), "anything", True),
    (frozenset({"csv"}), "csv", True),
    (frozenset({"csv"}), "json", False),
    (frozenset({"csv", "*"}), "json", True),
    (frozenset(), "csv", False),
]


@pytest.mark.parametrize(("capabilities", "plugin", "expected"), CAPABILITY_CASES)
def test_can_run(capabilities: frozenset[str], plugin: str, expected: bool) -> None:
    assert worker(capabilities=capabilities).can_run(plugin) is expected


# (attempt held, attempt echoed, the held job is the one meant)
ATTEMPT_CASES: list[tuple[int | None, int | None, bool]] = [
    (None, None, False),  # not held at all
    (None, 1, False),
    (2, None, True),  # an old peer that does not echo attempts gets the one held
    (2, 2, True),
    (2, 1, False),  # stale: the job was requeued and handed to someone else
    (2, 3, False),
]


@pytest.mark.parametrize(("held_attempt", "echoed", "matches"), ATTEMPT_CASES)
def test_resolve_attempt(held_attempt: int | None, echoed: int | None, matches: bool) -> None:
    job = None if held_attempt is None else held(attempt=held_attempt)
    assert (resolve_attempt(job, echoed) is job and job is not None) is matches


# (dispatched at, timeout, grace, deadline)
DEADLINE_CASES: list[tuple[float | None, float, float, float | None]] = [
    (None, 10.0, 5.0, None),  # waiting for its env: the clock has not started
    (100.0, 10.0, 5.0, 115.0),
    (100.0, 10.0, 0.0, 110.0),
]


@pytest.mark.parametrize(("dispatched_at", "timeout_s", "grace_s", "deadline"), DEADLINE_CASES)
def test_deadline(
    dispatched_at: float | None, timeout_s: float, grace_s: float, deadline: float | None
) -> None:
    job = HeldJob(
        job_id=1, attempt=1, plugin_name="p", timeout_s=timeout_s, dispatched_at=dispatched_at
    )
    assert job.deadline(grace_s) == deadline


# (jobs held before a re-IDENTIFY, jobs it reports, jobs kept, jobs lost)
REREGISTER_CASES: list[tuple[list[int], list[int], list[int], list[int]]] = [
    ([], [], [], []),
    ([1, 2], [1, 2], [1, 2], []),
    ([1, 2], [2], [2], [1]),
    ([1, 2], [], [], [1, 2]),
    ([1], [1, 7], [1], []),  # a job it names that we never held is reconciled elsewhere
]


@pytest.mark.parametrize(("before", "reported", "kept", "lost"), REREGISTER_CASES)
def test_register_again_keeps_what_it_reports(
    before: list[int], reported: list[int], kept: list[int], lost: list[int]
) -> None:
    registry = Registry()
    first, _ = registry.register(b"w1", Identify(worker_id="w1", slots=2), now=0.0)
    for job_id in before:
        first.jobs[job_id] = held(job_id)
    again = Identify(worker_id="w1", slots=4, jobs=tuple(JobRef(j) for j in reported))
    second, gone = registry.register(b"w1", again, now=5.0)
    assert registry.get(b"w1") is second is not first
    assert (second.slots, second.last_seen) == (4, 5.0)
    assert sorted(second.jobs) == kept
    assert sorted(h.job_id for h in gone) == lost
    assert all(second.jobs[j] is first.jobs[j] for j in kept)


def test_register_copies_what_identify_says() -> None:
    msg = Identify(
        worker_id="w1",
        capabilities=("csv",),
        slots=3,
        envs=("e1",),
        host="h",
        pid=42,
        answer_heartbeats=True,
    )
    state, lost = Registry().register(b"id", msg, now=7.0)
    assert lost == []
    assert (state.identity, state.worker_id, state.capabilities, state.slots) == (
        b"id",
        "w1",
        frozenset({"csv"}),
        3,
    )
    assert (state.host, state.pid, state.envs_ready, state.answers) == ("h", 42, {"e1"}, True)


# (heartbeat, envs before, stale before, envs after, stale after)
BEAT_CASES: list[tuple[Heartbeat, set[str], set[int], set[str], set[int]]] = [
    (Heartbeat(status="IDLE"), {"e1"}, set(), {"e1"}, set()),  # envs not reported: kept
    (Heartbeat(status="IDLE", envs=()), {"e1"}, set(), set(), set()),  # evicted
    (Heartbeat(status="IDLE", envs=("e2",)), {"e1"}, set(), {"e2"}, set()),
    (Heartbeat(status="BUSY", jobs=(JobRef(9),)), set(), {9}, set(), {9}),  # still runs it
    (Heartbeat(status="BUSY", current_job_id=9), set(), {9}, set(), {9}),  # an old peer
    (Heartbeat(status="IDLE"), set(), {9}, set(), set()),  # it stopped the stale one
    (Heartbeat(status="BUSY", jobs=(JobRef(3),)), set(), {8, 9}, set(), set()),
]


@pytest.mark.parametrize(("beat", "envs", "stale", "envs_after", "stale_after"), BEAT_CASES)
def test_beat(
    beat: Heartbeat, envs: set[str], stale: set[int], envs_after: set[str], stale_after: set[int]
) -> None:
    state = worker(envs_ready=set(envs), stale=dict.fromkeys(stale, 0.0), credit_hold=True)
    Registry().beat(state, beat, now=12.0)
    assert (state.status, state.last_seen, state.credit_hold) == (beat.status, 12.0, False)
    assert (state.envs_ready, set(state.stale)) == (envs_after, stale_after)


# (seconds since each worker was last seen, liveness, the ones expired)
EXPIRY_CASES: list[tuple[dict[str, float], float, list[str]]] = [
    ({}, 6.0, []),
    ({"a": 1.0, "b": 6.0}, 6.0, []),  # exactly the liveness timeout is still alive
    ({"a": 1.0, "b": 6.5}, 6.0, ["b"]),
    ({"a": 10.0, "b": 20.0}, 6.0, ["a", "b"]),
]


@pytest.mark.parametrize(("silent_for", "liveness_s", "expired"), EXPIRY_CASES)
def test_expired(silent_for: dict[str, float], liveness_s: float, expired: list[str]) -> None:
    registry, now = Registry(), 100.0
    for name, silence in silent_for.items():
        registry.register(name.encode(), Identify(worker_id=name), now=now - silence)
    assert sorted(w.worker_id for w in registry.expired(now, liveness_s)) == expired


# (per worker: slots, jobs held, last seen; the order workers get credit)
CREDIT_CASES: list[tuple[dict[str, tuple[int, int, float]], list[str]]] = [
    ({}, []),
    ({"a": (1, 1, 0.0), "b": (1, 0, 0.0)}, ["b"]),  # a full worker gets nothing
    ({"a": (4, 2, 0.0), "b": (2, 0, 5.0)}, ["b", "a"]),  # least loaded first
    ({"a": (2, 0, 5.0), "b": (2, 0, 1.0)}, ["b", "a"]),  # then longest since seen
    ({"a": (4, 1, 0.0), "b": (2, 1, 0.0)}, ["a", "b"]),  # load is a fraction of its slots
]


def _registry(workers: dict[str, tuple[int, int, float]]) -> Registry:
    """Workers by name: (slots, jobs held, last seen)."""
    registry = Registry()
    for name, (slots, busy, seen) in workers.items():
        state, _ = registry.register(name.encode(), Identify(worker_id=name, slots=slots), seen)
        for job_id in range(busy):
            state.jobs[job_id] = held(job_id)
    return registry


@pytest.mark.parametrize(("workers", "order"), CREDIT_CASES)
def test_with_credit_and_total_free_slots(
    workers: dict[str, tuple[int, int, float]], order: list[str]
) -> None:
    registry = _registry(workers)
    assert [w.worker_id for w in registry.with_credit()] == order
    assert registry.total_free_slots() == sum(s - b for s, b, _ in workers.values())


def test_holder_of_and_drop() -> None:
    registry = Registry()
    a, _ = registry.register(b"a", Identify(worker_id="a"), now=0.0)
    job = a.jobs[5] = held(5)
    assert registry.holder_of(5) == (a, job)
    assert registry.holder_of(6) is None
    assert registry.drop(b"a") is a
    assert registry.drop(b"a") is None
    assert registry.holder_of(5) is None


# (per worker: slots, jobs held, last seen; the slots one dispatch round fills, in order)
FILL_CASES: list[tuple[dict[str, tuple[int, int, float]], list[str]]] = [
    ({}, []),
    ({"a": (2, 2, 0.0)}, []),
    ({"a": (2, 0, 0.0), "b": (2, 0, 1.0)}, ["a", "b", "a", "b"]),  # spread, not a then b
    ({"a": (4, 2, 0.0), "b": (2, 0, 5.0)}, ["b", "a", "b", "a"]),
    ({"a": (4, 0, 0.0), "b": (1, 0, 1.0)}, ["a", "b", "a", "a", "a"]),
]


@pytest.mark.parametrize(("workers", "order"), FILL_CASES)
def test_fill_order_is_one_slot_per_worker_per_pass_least_loaded_first(
    workers: dict[str, tuple[int, int, float]], order: list[str]
) -> None:
    registry = _registry(workers)
    assert [w.worker_id for w in registry.fill_order()] == order
    assert len(order) == registry.total_free_slots()
    # the same as passes of with_credit(), each worker taking one slot per pass
    reference: list[str] = []
    next_id = 1000
    while passes := registry.with_credit():
        for state in passes:
            state.jobs[next_id] = held(next_id)
            next_id += 1
            reference.append(state.worker_id)
    assert reference == order


def test_fill_order_leaves_out_workers_without_credit() -> None:
    registry = Registry()
    a, _ = registry.register(b"a", Identify(worker_id="a", slots=2), 0.0)
    b, _ = registry.register(b"b", Identify(worker_id="b", slots=2), 0.0)
    c, _ = registry.register(b"c", Identify(worker_id="c", slots=2), 0.0)
    a.status, b.healthy, c.stale = "DRAINING", False, {7: 0.0}
    assert [w.worker_id for w in registry.fill_order()] == ["c"]


def test_a_freed_slot_starts_the_oldest_queued_job_and_its_timeout_with_it() -> None:
    w = worker(
        slots=1,
        prefetch=2,
        short_jobs=True,
        jobs={
            1: held(1, dispatched_at=10.0),
            2: held(2, dispatched_at=10.5, queued=True),
            3: held(3, dispatched_at=10.6, queued=True),
        },
    )
    taken = w.release(1, 12.0, took_s=2.0)
    assert taken is not None
    assert taken.job_id == 1
    assert not w.short_jobs  # 2 s is not short: no more prefetch for now
    assert (w.jobs[2].queued, w.jobs[2].dispatched_at) == (False, 12.0)
    assert (w.jobs[3].queued, w.jobs[3].dispatched_at) == (True, 10.6)  # still waits
    assert w.jobs[2].deadline(1.0) == 12.0 + 10.0 + 1.0
    w.release(2, 12.1, took_s=0.1)
    assert w.short_jobs
    assert (w.jobs[3].queued, w.jobs[3].dispatched_at) == (False, 12.1)
    assert w.release(99, 13.0) is None  # unknown: nothing changes
    assert w.short_jobs


def test_release_without_a_free_slot_promotes_nothing() -> None:
    w = worker(
        slots=2,
        prefetch=1,
        jobs={
            1: held(1, dispatched_at=1.0),
            2: held(2, dispatched_at=1.0),
            3: held(3, dispatched_at=1.5, queued=True),
        },
        stale={9: 0.0},  # a stale attempt still runs there: it holds a slot
    )
    w.release(1, 2.0)
    assert w.jobs[3].queued  # job 2 and the stale attempt fill both slots
    w.stale.clear()
    w.release(2, 3.0)
    assert (w.jobs[3].queued, w.jobs[3].dispatched_at) == (False, 3.0)


def test_an_operator_sees_slots_not_prefetch() -> None:
    idle = worker(slots=2, prefetch=1, short_jobs=True)
    assert (idle.free_slots, idle.slot_credit, idle.open_slots, idle.running) == (3, 2, 2, 0)
    full = worker(
        slots=1,
        prefetch=1,
        short_jobs=True,
        jobs={1: held(1, dispatched_at=0.0), 2: held(2, dispatched_at=0.0, queued=True)},
    )
    assert (full.free_slots, full.slot_credit, full.open_slots, full.running) == (0, 0, 0, 1)
    env_wait = worker(slots=1, jobs={1: held(1)})  # claimed, waiting for its env: not sent
    assert (env_wait.open_slots, env_wait.busy_slots, env_wait.running) == (0, 1, 0)
    assert worker(status="DRAINING").open_slots == 0


def test_a_job_is_held_ready_only_if_the_workers_slots_run_sent_jobs() -> None:
    """Decided when sent: a claimed job waiting for its env takes no slot on the worker."""
    w = worker(slots=1, prefetch=1, short_jobs=True)
    env_wait = held(1)  # claimed, never sent (it waits for ENV_READY)
    w.jobs[1] = env_wait
    nxt = held(2)
    w.jobs[2] = nxt
    w.sent(nxt, 5.0)
    assert (nxt.queued, nxt.dispatched_at) == (False, 5.0)  # the worker starts it at once
    w.sent(env_wait, 6.0)
    assert env_wait.queued  # now job 2 runs in the slot: job 1 is held ready behind it
    assert env_wait.deadline(1.0) == 6.0 + PREFETCH_HOLD_S + 10.0 + 1.0
    assert nxt.deadline(1.0) == 5.0 + 10.0 + 1.0


def test_real_slots_are_filled_before_any_prefetch_slot() -> None:
    reg = Registry()
    busy, _ = reg.register(b"busy", Identify(worker_id="busy", slots=1, prefetch=1), 0.0)
    reg.register(b"idle", Identify(worker_id="idle", slots=2), 0.0)
    busy.short_jobs = True
    busy.jobs[1] = held(1, dispatched_at=0.0)
    assert [w.worker_id for w in reg.fill_order()] == ["idle", "idle", "busy"]


def test_a_heartbeat_says_which_jobs_run_and_which_are_held() -> None:
    reg = Registry()
    w, _ = reg.register(b"w1", Identify(worker_id="w1", slots=1, prefetch=1), 0.0)
    w.stale[9] = 0.0  # a stale attempt held the slot when job 2 was sent: held ready
    w.jobs[2] = held(2, dispatched_at=1.0, queued=True)
    w.jobs[3] = held(3, dispatched_at=1.5)  # adopted after a restart as running
    beat = Heartbeat(status="BUSY", worker_id="w1", jobs=(JobRef(2, 1), JobRef(3, 1, held=True)))
    reg.beat(w, beat, 5.0)
    assert not w.stale  # it stopped the stale one ...
    assert (w.jobs[2].queued, w.jobs[2].dispatched_at) == (False, 5.0)  # ... and started job 2
    assert w.jobs[3].queued
