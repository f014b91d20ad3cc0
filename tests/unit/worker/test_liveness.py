"""The Worker listens for its Sentinel: it says when it waits, when it falls silent, when it is back.

MockClock over the memory transport: each test simulates up to a minute in milliseconds.
"""

from __future__ import annotations

import itertools
import logging
import re

import pytest
import trio
from services_harness import ADDRESS, Cluster
from trio.testing import MockClock


def messages(caplog: pytest.LogCaptureFixture, *, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return messages(caplog, level=logging.WARNING)


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="casparian_trio")


async def test_a_worker_without_a_sentinel_says_it_is_waiting_every_liveness_period(
    cluster: Cluster, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.start_worker("w1", heartbeat_interval_s=2.0)  # nothing listens at ADDRESS
    await trio.sleep(19)
    assert f"worker w1 connecting to {ADDRESS} with 1 slot(s)" in messages(caplog)
    assert warnings(caplog) == [
        f"waiting for the sentinel at {ADDRESS}: no answer for {n} s" for n in (6, 12, 18)
    ]
    assert not any("connected to" in m for m in messages(caplog))
    caplog.clear()
    await cluster.start_sentinel()
    await trio.sleep(1)
    assert f"worker w1 connected to {ADDRESS}: the sentinel answered" in messages(caplog)
    await trio.sleep(30)
    assert warnings(caplog) == []


async def test_a_worker_warns_while_the_sentinel_is_silent_and_says_when_it_is_back(
    cluster: Cluster, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    sentinel = await cluster.start_sentinel(heartbeat_interval_s=2.0)
    await cluster.start_worker("w1", heartbeat_interval_s=2.0)
    await trio.sleep(10)
    assert warnings(caplog) == []
    sentinel.kill()
    await trio.sleep(20)
    silences = [
        re.fullmatch(rf"no answer from the sentinel at {ADDRESS} for (\d+) s", m)
        for m in warnings(caplog)
    ]
    assert len(silences) == 3, warnings(caplog)
    seconds = [int(m.group(1)) for m in silences if m]
    assert len(seconds) == 3, warnings(caplog)
    assert [b - a for a, b in itertools.pairwise(seconds)] == [6, 6]
    assert 6 <= seconds[0] <= 7
    caplog.clear()
    await cluster.start_sentinel(heartbeat_interval_s=2.0)
    await trio.sleep(3)
    back = [m for m in messages(caplog) if "answers again" in m]
    assert len(back) == 1
    assert back[0].startswith(f"the sentinel at {ADDRESS} answers again after")
    await trio.sleep(30)
    assert warnings(caplog) == []
