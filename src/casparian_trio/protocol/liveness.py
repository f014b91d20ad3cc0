"""Is the peer answering? Heartbeat bookkeeping as plain state, fed the time by its caller.

Sans-I/O like the rest of the package: no trio, zmq or sqlite3, and no clock —
every method takes ``now`` (the caller's ``trio.current_time()``), which is what
lets the tests drive it with plain numbers or a MockClock.

Theory of operation
-------------------
A worker feeds ``AnswerWatch`` every message it gets from the Sentinel
(``heard``) and asks it, a few times per liveness period, whether there is
something to report (``check``). Each call returns at most one ``PeerEvent``:

- nothing heard yet, for a whole liveness period: WAITING, then again every
  period until the first message;
- the first message: CONNECTED;
- heard before, then silent for a liveness period: SILENT, again every period;
- a message after a reported silence: RESUMED.

A Sentinel older than the answering extension sends nothing unprompted (it
answers no HEARTBEAT), so its silence while the queue is empty means nothing.
Once it has talked to us (a DISPATCH, an ERR) for a liveness period without
ever sending a HEARTBEAT, ``check`` says NO_ANSWERS once and reports no
silence after that.
"""

from __future__ import annotations

import enum

import attrs


class PeerEventKind(enum.Enum):
    WAITING = "waiting"  # never heard from it, for another liveness period
    CONNECTED = "connected"  # its first message
    SILENT = "silent"  # heard before; no message for another liveness period
    RESUMED = "resumed"  # a message after a reported silence
    NO_ANSWERS = "no_answers"  # it talks but never answers heartbeats: an older version


@attrs.frozen
class PeerEvent:
    """What to tell the operator; ``quiet_s``: seconds without a message until now."""

    kind: PeerEventKind
    quiet_s: float


def quiet_for(last_heard: float | None, since: float, now: float) -> float:
    """Seconds without a message: since the last one, or since ``since`` if none came."""
    return now - (since if last_heard is None else last_heard)


def is_silent(last_heard: float | None, since: float, now: float, liveness: float) -> bool:
    """True when nothing came for a whole liveness period (the peer may be dead)."""
    return quiet_for(last_heard, since, now) >= liveness


def _positive(_instance: object, _attribute: object, value: float) -> None:
    if value <= 0:
        raise ValueError(f"liveness must be > 0, got {value}")


@attrs.define(eq=False, kw_only=True)
class AnswerWatch:
    """Whether the Sentinel answers a worker (see the module docstring).

    Attributes:
        liveness: seconds of silence after which the peer is reported.
        started_at: when the worker started listening.
        last_heard: when the last message came (None: never).
        answers_heartbeats: it has sent a HEARTBEAT, so its silence means something.
    """

    liveness: float = attrs.field(validator=_positive)
    started_at: float
    last_heard: float | None = None
    answers_heartbeats: bool = False
    _first_heard: float | None = None
    _reported_at: float | None = None  # the last WAITING/SILENT, until a message ends it
    _told_no_answers: bool = False

    @property
    def connected(self) -> bool:
        """It has answered, and not gone silent since."""
        return self.last_heard is not None and self._reported_at is None

    def heard(self, now: float, *, heartbeat: bool) -> PeerEvent | None:
        """A message came at ``now`` (``heartbeat``: it was a HEARTBEAT)."""
        quiet = quiet_for(self.last_heard, self.started_at, now)
        first, reported = self.last_heard is None, self._reported_at is not None
        self.last_heard, self._reported_at = now, None
        self.answers_heartbeats = self.answers_heartbeats or heartbeat
        if first:
            self._first_heard = now
            return PeerEvent(PeerEventKind.CONNECTED, quiet)
        return PeerEvent(PeerEventKind.RESUMED, quiet) if reported else None

    def check(self, now: float) -> PeerEvent | None:
        """Whether there is something to report at ``now`` (at most once per period)."""
        if self._is_old_peer(now):
            if self._told_no_answers:
                return None
            self._told_no_answers = True
            return PeerEvent(PeerEventKind.NO_ANSWERS, 0.0)
        if not is_silent(self.last_heard, self.started_at, now, self.liveness):
            return None
        if self._reported_at is not None and now - self._reported_at < self.liveness:
            return None
        self._reported_at = now
        kind = PeerEventKind.WAITING if self.last_heard is None else PeerEventKind.SILENT
        return PeerEvent(kind, quiet_for(self.last_heard, self.started_at, now))

    def _is_old_peer(self, now: float) -> bool:
        # A whole period of talk without one HEARTBEAT: it does not answer them.
        if self.answers_heartbeats or self._first_heard is None:
            return False
        return now - self._first_heard >= self.liveness
