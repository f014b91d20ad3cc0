"""Warm guests (``async with executor``) and guests that outlive Trio's idle threads."""

from __future__ import annotations

import os
import signal
import textwrap

import pytest
import trio
from bridge_helpers import HANG_GUARD_S, JobEnv, group_alive, make_dispatch, plugin_source

from casparian_trio.protocol.messages import SinkConfig

pytestmark = pytest.mark.slow  # real guest processes

PID = """
import os
import pyarrow as pa
class Handler:
    def execute(self, file_path):
        yield pa.table({"pid": [os.getpid()]})
"""


def warm_pids(env: JobEnv) -> list[int]:
    return [g.proc.pid for g in env.executor._warm.waiting().values() if g.proc is not None]


async def test_jobs_take_warm_guests_and_close_kills_them(job_env: JobEnv) -> None:
    ex = job_env.executor
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            ex.prewarm("system")
            (first_warm,) = warm_pids(job_env)
            receipt = await ex.run(1, make_dispatch(PID))
            assert receipt.status == "SUCCESS", receipt.error_message
            assert job_env.pids == [first_warm]  # the job ran in the prespawned guest
            (second_warm,) = warm_pids(job_env)  # and a replacement is waiting
            assert second_warm != first_warm
            other_topic = (SinkConfig("output", "parquet://seed"),)  # another schema, another table
            receipt = await ex.run(
                2, make_dispatch(plugin_source("seed_plugin.py"), sinks=other_topic)
            )
            assert receipt.status == "SUCCESS", receipt.error_message
            assert job_env.pids == [first_warm, second_warm]
            (leftover,) = warm_pids(job_env)
            assert group_alive(leftover)
            assert len(list(job_env.work.iterdir())) == 1  # the waiting guest's dir
        assert not group_alive(leftover)
    job_env.pids.append(leftover)
    job_env.assert_nothing_left(failed=False)
    await ex.aclose()  # idempotent


async def test_dead_warm_guest_is_replaced(job_env: JobEnv) -> None:
    ex = job_env.executor
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            ex.prewarm("system")
            (dead,) = warm_pids(job_env)
            os.killpg(dead, signal.SIGKILL)
            proc = ex._warm.waiting()["system"].proc
            assert proc is not None
            await proc.wait()
            receipt = await ex.run(1, make_dispatch(PID))
            assert receipt.status == "SUCCESS", receipt.error_message
            assert dead not in job_env.pids
    job_env.assert_nothing_left(failed=False)


async def test_failed_job_in_warm_guest_leaves_nothing(job_env: JobEnv) -> None:
    source = """
    class Handler:
        def execute(self, file_path):
            raise ValueError("bad row 7")
    """
    ex = job_env.executor
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            ex.prewarm("system")
            receipt = await ex.run(1, make_dispatch(textwrap.dedent(source)))
            assert receipt.status == "FAILED"
            assert "bad row 7" in (receipt.error_message or "")
    job_env.assert_nothing_left()


async def test_guest_outlives_idle_trio_threads(
    job_env: JobEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PR_SET_PDEATHSIG follows the *thread* that forked the guest; a guest forked
    # by a Trio worker thread died when that thread retired (after IDLE_TIMEOUT).
    from trio._core import _thread_cache

    monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 0.2)
    source = """
    import time
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            time.sleep(2)
            yield pa.table({"n": [1]})
    """
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(1, make_dispatch(textwrap.dedent(source)))
    assert receipt.status == "SUCCESS", receipt.error_message
    job_env.assert_nothing_left(failed=False)
