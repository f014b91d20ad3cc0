"""What the Sentinel knows of its workers and the jobs they hold: plain state, no I/O.

Theory of operation
-------------------
A worker is keyed by its ZeroMQ routing identity. IDENTIFY registers it (or
re-registers it after a Sentinel restart or a liveness drop) with a number of
slots: its dispatch credit. A slot is taken by a HeldJob from the moment the
dispatcher claims a job for that worker until its receipt arrives, the worker
is dropped, or the watchdog gives up on it: ``free_slots`` is
``slots - len(jobs)``, zero while DRAINING or unhealthy.

Prefetch: a worker that offers ``prefetch`` (IDENTIFY) gets that many jobs
beyond its slots, but only while its jobs are short (the last one it finished
took under ``PREFETCH_SHORT_S``): then the Sentinel's round trip between two
jobs is a large share of each, and the worker starts the held job the moment a
slot frees. Such a job is ``queued``; when a slot of its worker frees, the
oldest queued job is taken to have started, and its timeout is counted from
then. A worker that hands a held job back (its running job turned out long)
gets no prefetch until a job of it is short again.
A worker leaves the registry when it says goodbye (a HEARTBEAT with
``stopping``), when it falls silent past the liveness timeout, or when the
ROUTER can no longer reach it.

Every held job records the attempt it was dispatched as. A receipt or
heartbeat naming another attempt is stale (the job was requeued and handed to
someone else) and is refused; a peer that does not echo attempts gets the one
held for it. All times are ``trio.current_time()`` values passed in by the
caller, which is what lets the tests run this on a MockClock.
"""

from __future__ import annotations

import enum

import attrs

from casparian_trio.protocol import Dispatch, Heartbeat, Identify, JobRef
from casparian_trio.protocol.limits import PREFETCH_HOLD_S

# A worker whose last job took less than this gets its prefetch slots: the
# dispatch round trip (milliseconds) is then worth hiding.
PREFETCH_SHORT_S = 1.0


class AbortReason(enum.Enum):
    CANCEL = "cancel"  # an operator cancelled the job: ends CANCELLED
    TIMEOUT = "timeout"  # the watchdog gave up waiting: a counted failure


@attrs.define(eq=False, kw_only=True)
class HeldJob:
    job_id: int
    attempt: int
    plugin_name: str
    timeout_s: float
    env_hash: str | None = None
    pending: Dispatch | None = None  # kept until ENV_READY lets us send it
    dispatched_at: float | None = None  # None while waiting for ENV_READY
    abort_reason: AbortReason | None = None
    abort_sent_at: float | None = None
    # MANIFEST ``retries``: how many times a deterministic failure is retried (None: 0)
    retries: int | None = None
    # Sent into a prefetch slot: the worker holds it until one of its slots frees.
    queued: bool = False

    def deadline(self, grace_s: float) -> float | None:
        """When the watchdog sends ABORT (None: not sent yet).

        A job held ready (``queued``) may wait up to ``PREFETCH_HOLD_S`` on its
        worker before it starts or comes back: that much more time is allowed.
        """
        if self.dispatched_at is None:
            return None
        held_for = PREFETCH_HOLD_S if self.queued else 0.0
        return self.dispatched_at + held_for + self.timeout_s + grace_s


@attrs.define(eq=False, kw_only=True)
class WorkerState:
    identity: bytes
    worker_id: str
    capabilities: frozenset[str]
    slots: int
    last_seen: float
    prefetch: int = 0  # jobs it holds beyond its slots (Identify.prefetch)
    short_jobs: bool = False  # its last job took under PREFETCH_SHORT_S: prefetch pays
    host: str | None = None
    pid: int | None = None
    status: str = "IDLE"
    healthy: bool = True
    answers: bool = False  # it asked for answers to its heartbeats (Identify.answer_heartbeats)
    jobs: dict[int, HeldJob] = attrs.field(factory=dict)
    envs_ready: set[str] = attrs.field(factory=set)
    envs_preparing: dict[str, float] = attrs.field(factory=dict)  # env_hash -> sent at
    given_up: set[int] = attrs.field(factory=set)  # jobs the watchdog took away from it
    # Jobs it still runs that are no longer its own (a stale attempt, e.g. after a
    # partition): they occupy a slot until it stops them; value = last ABORT sent.
    stale: dict[int, float] = attrs.field(factory=dict)
    # An unsolicited hand-back means its slots are not what we think: no credit
    # until its next heartbeat says how many are free.
    credit_hold: bool = False
    recorded: tuple[str, float] = ("", -1e9)  # (status, time) last written to cf_worker

    @property
    def free_slots(self) -> int:
        if self.status == "DRAINING" or not self.healthy or self.credit_hold:
            return 0
        taken = len(self.jobs) + len(self.stale)
        if self.prefetch and self.short_jobs:
            return max(0, self.slots + self.prefetch - taken)
        return max(0, self.slots - taken)

    @property
    def slot_credit(self) -> int:
        """``free_slots`` without the prefetch slots: real slots nothing is claimed for."""
        return min(self.free_slots, max(0, self.slots - len(self.jobs) - len(self.stale)))

    @property
    def running(self) -> int:
        """Jobs its slots run, as far as we know: sent and not held ready, and stale attempts."""
        sent = sum(1 for h in self.jobs.values() if h.dispatched_at is not None and not h.queued)
        return sent + len(self.stale)

    @property
    def busy_slots(self) -> int:
        """Slots taken as an operator counts them: a job waiting for its env holds one."""
        return min(self.slots, sum(1 for h in self.jobs.values() if not h.queued) + len(self.stale))

    @property
    def open_slots(self) -> int:
        """Free slots as an operator counts them: ``free_slots`` without prefetch."""
        if self.status == "DRAINING" or not self.healthy or self.credit_hold:
            return 0
        return max(0, self.slots - self.busy_slots)

    def sent(self, held: HeldJob, now: float) -> None:
        """``held`` goes out now: into a free slot, or held ready if the worker's slots are full.

        Decided when it is sent, not when it was claimed: a job waiting for its
        env takes no slot on the worker until it is sent itself.
        """
        held.queued = self.running >= self.slots
        held.dispatched_at = now

    def release(self, job_id: int, now: float, *, took_s: float | None = None) -> HeldJob | None:
        """Take a job off the worker; held-ready jobs start in the slots it frees.

        ``took_s``: how long the job ran (a receipt), which decides whether
        prefetch pays (``PREFETCH_SHORT_S``); None leaves that as it was.
        """
        held = self.jobs.pop(job_id, None)
        if took_s is not None:
            self.short_jobs = took_s < PREFETCH_SHORT_S
        self._start_held(now)
        return held

    def _start_held(self, now: float) -> None:
        """The worker starts held jobs in the order they reached it as slots free."""
        while self.running < self.slots:
            waiting = [h for h in self.jobs.values() if h.queued]
            if not waiting:
                return
            first = min(waiting, key=lambda h: h.dispatched_at or 0.0)
            first.queued = False
            first.dispatched_at = now  # its timeout runs from its start

    def reported(self, refs: tuple[JobRef, ...], now: float) -> None:
        """What the worker says of its jobs (a heartbeat) corrects what we assumed.

        A job we took for held ready that it runs started at the latest now; one
        we took for running that it holds (adopted after a restart) is held.
        """
        for ref in refs:
            held = self.jobs.get(ref.job_id)
            if (
                held is None
                or held.dispatched_at is None
                or ref.attempt not in (None, held.attempt)
            ):
                continue
            if held.queued and not ref.held:
                held.queued = False
                held.dispatched_at = now
            elif ref.held and not held.queued:
                held.queued = True

    def can_run(self, plugin_name: str) -> bool:
        return "*" in self.capabilities or plugin_name in self.capabilities


def resolve_attempt(held: HeldJob | None, echoed: int | None) -> HeldJob | None:
    """The held job a message refers to, or None when it is unknown or stale."""
    if held is None:
        return None
    if echoed is not None and echoed != held.attempt:
        return None
    return held


@attrs.define(eq=False)
class Registry:
    workers: dict[bytes, WorkerState] = attrs.field(factory=dict)

    def register(
        self, identity: bytes, msg: Identify, now: float
    ) -> tuple[WorkerState, list[HeldJob]]:
        """Add or refresh a worker; returns it and the held jobs it no longer reports."""
        old = self.workers.get(identity)
        worker = WorkerState(
            identity=identity,
            worker_id=msg.worker_id,
            capabilities=frozenset(msg.capabilities),
            slots=msg.slots,
            prefetch=msg.prefetch,
            last_seen=now,
            host=msg.host,
            pid=msg.pid,
            envs_ready=set(msg.envs),
            answers=msg.answer_heartbeats,
        )
        lost: list[HeldJob] = []
        if old is not None:
            reported = {ref.job_id for ref in msg.jobs}
            for job_id, held in old.jobs.items():
                if job_id in reported:
                    worker.jobs[job_id] = held
                else:
                    lost.append(held)
        self.workers[identity] = worker
        return worker, lost

    def get(self, identity: bytes) -> WorkerState | None:
        return self.workers.get(identity)

    def beat(self, worker: WorkerState, msg: Heartbeat, now: float) -> None:
        worker.last_seen = now
        worker.status = msg.status
        worker.credit_hold = False
        if msg.envs is not None:
            worker.envs_ready = set(msg.envs)
        refs = msg.held_jobs()
        named = {ref.job_id for ref in refs}
        for job_id in [j for j in worker.stale if j not in named]:
            del worker.stale[job_id]  # it stopped that one
        worker.reported(refs, now)

    def drop(self, identity: bytes) -> WorkerState | None:
        return self.workers.pop(identity, None)

    def expired(self, now: float, liveness_s: float) -> list[WorkerState]:
        return [w for w in self.workers.values() if now - w.last_seen > liveness_s]

    def with_credit(self) -> list[WorkerState]:
        """Workers with a free slot, least loaded first (spreads short jobs)."""
        ready = [w for w in self.workers.values() if w.free_slots > 0]
        return sorted(ready, key=lambda w: (len(w.jobs) / w.slots, w.last_seen))

    def fill_order(self) -> list[WorkerState]:
        """Every free slot as its worker, in the order one dispatch round fills them.

        Passes over ``with_credit()``, one slot per worker per pass, each pass
        ordered by the load the earlier passes left (so short jobs spread as
        with one claim per slot). A worker appears once per free slot.
        """
        taken: dict[bytes, int] = {}
        order: list[WorkerState] = []
        # Every real slot first, then prefetch slots: a job is never held ready
        # behind another while a slot is free anywhere.
        for credit in (_slot_credit, _free_slots):
            while True:
                ready = [w for w in self.workers.values() if credit(w) > taken.get(w.identity, 0)]
                if not ready:
                    break
                ready.sort(
                    key=lambda w: ((len(w.jobs) + taken.get(w.identity, 0)) / w.slots, w.last_seen)
                )
                for worker in ready:
                    taken[worker.identity] = taken.get(worker.identity, 0) + 1
                    order.append(worker)
        return order

    def holder_of(self, job_id: int) -> tuple[WorkerState, HeldJob] | None:
        for worker in self.workers.values():
            held = worker.jobs.get(job_id)
            if held is not None:
                return worker, held
        return None

    def total_free_slots(self) -> int:
        return sum(w.free_slots for w in self.workers.values())


def _slot_credit(worker: WorkerState) -> int:
    return worker.slot_credit


def _free_slots(worker: WorkerState) -> int:
    return worker.free_slots
