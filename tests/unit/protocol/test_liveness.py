"""AnswerWatch: is the Sentinel answering? Plain numbers for the time, no Trio."""

from __future__ import annotations

import pytest

from casparian_trio.protocol import AnswerWatch, PeerEvent, PeerEventKind
from casparian_trio.protocol.liveness import is_silent, quiet_for

K = PeerEventKind
LIVENESS = 6.0


def watch() -> AnswerWatch:
    return AnswerWatch(liveness=LIVENESS, started_at=100.0)


def script(w: AnswerWatch, steps: list[tuple[float, str]]) -> list[tuple[float, PeerEvent]]:
    """Run ``(time, 'check' | 'heartbeat' | 'other')`` steps; the events, with their times."""
    events = []
    for now, what in steps:
        heartbeat = what == "heartbeat"
        event = w.check(now) if what == "check" else w.heard(now, heartbeat=heartbeat)
        if event is not None:
            events.append((now, event))
    return events


def checks(start: float, stop: float, every: float = 0.5) -> list[tuple[float, str]]:
    count = int((stop - start) / every) + 1
    return [(start + i * every, "check") for i in range(count)]


def test_quiet_for_and_is_silent() -> None:
    assert quiet_for(None, 100.0, 103.0) == 3.0
    assert quiet_for(101.0, 100.0, 103.0) == 2.0
    assert not is_silent(None, 100.0, 105.9, LIVENESS)
    assert is_silent(None, 100.0, 106.0, LIVENESS)


def test_nobody_answers_waiting_every_liveness_period() -> None:
    events = script(watch(), checks(100.0, 120.0))
    assert events == [
        (106.0, PeerEvent(K.WAITING, 6.0)),
        (112.0, PeerEvent(K.WAITING, 12.0)),
        (118.0, PeerEvent(K.WAITING, 18.0)),
    ]


def test_first_answer_connects_and_regular_answers_say_nothing() -> None:
    w = watch()
    steps = [(100.1, "heartbeat"), *checks(100.5, 101.5)]
    for beat in range(1, 10):  # answers every 2 s
        steps += [(100.1 + 2 * beat, "heartbeat"), *checks(100.5 + 2 * beat, 101.5 + 2 * beat)]
    [(at, event)] = script(w, steps)
    assert (at, event.kind) == (100.1, K.CONNECTED)
    assert event.quiet_s == pytest.approx(0.1)
    assert w.connected


def test_late_first_answer_ends_the_wait() -> None:
    w = watch()
    events = script(w, [*checks(100.0, 107.0), (109.0, "heartbeat"), *checks(109.5, 114.5)])
    assert [e.kind for _, e in events] == [K.WAITING, K.CONNECTED]
    assert events[1] == (109.0, PeerEvent(K.CONNECTED, 9.0))


def test_silence_is_reported_every_period_then_its_end() -> None:
    w = watch()
    steps = [(101.0, "heartbeat"), *checks(101.5, 120.0), (121.0, "other"), *checks(121.5, 140.0)]
    events = script(w, steps)
    assert events == [
        (101.0, PeerEvent(K.CONNECTED, 1.0)),
        (107.0, PeerEvent(K.SILENT, 6.0)),
        (113.0, PeerEvent(K.SILENT, 12.0)),
        (119.0, PeerEvent(K.SILENT, 18.0)),
        (121.0, PeerEvent(K.RESUMED, 20.0)),
        (127.0, PeerEvent(K.SILENT, 6.0)),  # nothing since 121: silent again
        (133.0, PeerEvent(K.SILENT, 12.0)),
        (139.0, PeerEvent(K.SILENT, 18.0)),
    ]
    assert not w.connected


def test_an_old_sentinel_that_never_answers_heartbeats_is_not_reported_silent() -> None:
    # It sent a DISPATCH (not a HEARTBEAT) and then nothing: it is an older version.
    w = watch()
    events = script(w, [(101.0, "other"), *checks(101.5, 140.0)])
    assert events == [
        (101.0, PeerEvent(K.CONNECTED, 1.0)),
        (107.0, PeerEvent(K.NO_ANSWERS, 0.0)),
    ]
    assert not w.answers_heartbeats


def test_an_answer_soon_after_another_message_is_a_new_sentinel() -> None:
    # A restarted Sentinel first asks us to IDENTIFY (an ERR), then answers.
    w = watch()
    events = script(w, [(101.0, "other"), (101.2, "heartbeat"), *checks(101.5, 107.0)])
    assert [e.kind for _, e in events] == [K.CONNECTED]
    assert w.answers_heartbeats


def test_liveness_must_be_positive() -> None:
    with pytest.raises(ValueError, match="liveness"):
        AnswerWatch(liveness=0.0, started_at=0.0)
