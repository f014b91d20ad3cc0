"""Reused guests (``async with executor``): one process runs job after job of one plugin version.

Real guest processes throughout. Each plugin prints one line per job
(``JOB pid=… instance=… module=…``), which comes back as the receipt's
``log_tail``: the job's own output, read from the guest's pipe while it runs.
"""

from __future__ import annotations

import os
import re
import signal
import textwrap
from pathlib import Path

import attrs
import pytest
import trio
from bridge_helpers import HANG_GUARD_S, JobEnv, group_alive, make_dispatch

from casparian_trio.bridge import BridgeExecutor
from casparian_trio.protocol.messages import Conclude
from casparian_trio.worker.runner import JobRun

pytestmark = pytest.mark.slow  # real guest processes

# Counts calls on its instance and in a module global: a fresh instance per job
# sees 1, the module global counts the jobs this guest process has run.
COUNTING = textwrap.dedent(
    """
    import os
    import pyarrow as pa

    CALLS = 0

    class Handler:
        def __init__(self):
            self.calls = 0

        def execute(self, file_path):
            global CALLS
            CALLS += 1
            self.calls += 1
            print(f"JOB pid={os.getpid()} instance={self.calls} module={CALLS}")
            yield pa.table({"n": [CALLS]})
    """
)

# Reads a number from its input: every third one crashes the guest (os._exit),
# and a number ending in 5 raises (an ERROR frame).
CRASHY = textwrap.dedent(
    """
    import os
    import pyarrow as pa

    class Handler:
        def execute(self, file_path):
            n = int(open(file_path).read())
            print(f"JOB pid={os.getpid()} n={n}")
            if n % 3 == 0:
                os._exit(3)
            yield pa.table({"n": [n]})
    """
)

# Writes ``<input>.started`` then waits forever: a job that only ends by cancellation.
HANGING = textwrap.dedent(
    """
    import os
    import time

    class Handler:
        def execute(self, file_path):
            with open(file_path + ".started", "w") as f:
                f.write(str(os.getpid()))
            while True:
                time.sleep(0.05)
    """
)


def pid_of(receipt: Conclude) -> int:
    assert receipt.status == "SUCCESS", receipt.error_message
    match = re.search(r"JOB .*?pid=(\d+)", receipt.log_tail or "")
    assert match, receipt.log_tail
    return int(match.group(1))


def job_line(receipt: Conclude) -> str:
    lines = [line for line in (receipt.log_tail or "").splitlines() if line.startswith("JOB")]
    assert len(lines) == 1, receipt.log_tail  # this job's output only
    return lines[0]


def executor(env: JobEnv, **changes: object) -> BridgeExecutor:
    return attrs.evolve(env.executor, **changes)  # type: ignore[misc]


def numbered(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"in{n}.txt"
    path.write_text(str(n))
    return path


async def wait_for_file(path: Path) -> int:
    marker = trio.Path(path)
    while not await marker.exists() or not await marker.read_text():
        await trio.sleep(0.02)
    return int(await marker.read_text())


async def test_100_jobs_in_one_guest_each_see_a_fresh_instance(job_env: JobEnv) -> None:
    ex = executor(job_env, max_idle=1)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            for job_id in range(1, 101):
                receipt = await ex.run(job_id, make_dispatch(COUNTING, file_version_id=job_id))
                pid = pid_of(receipt)
                assert job_line(receipt) == f"JOB pid={pid} instance=1 module={job_id}"
                assert receipt.metrics["guest_job"] == job_id
            assert set(job_env.pids) == {pid}  # one process ran all of them
            (idle,) = ex.idle_guests()
            assert idle.proc is not None
            assert idle.proc.pid == pid
            assert group_alive(pid)
        assert not group_alive(pid)
    job_env.assert_nothing_left(failed=False)


async def test_a_guest_that_crashes_every_third_file_is_replaced(
    job_env: JobEnv, tmp_path: Path
) -> None:
    ex = executor(job_env, max_idle=1)
    outcomes: list[tuple[int, str, int]] = []  # (n, status, guest pid)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            for n in range(1, 10):
                dispatch = make_dispatch(CRASHY, numbered(tmp_path, n), file_version_id=n)
                receipt = await ex.run(n, dispatch)
                outcomes.append((n, receipt.status, job_env.pids[-1]))
    assert [status for _, status, _ in outcomes] == [
        "FAILED" if n % 3 == 0 else "SUCCESS" for n in range(1, 10)
    ]
    pids = [pid for _, _, pid in outcomes]
    # 1,2 share a guest; 3 crashes it; 4,5 run in a new one; 6 crashes it; ...
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5]
    assert pids[6] == pids[7] == pids[8]
    assert len({pids[0], pids[3], pids[6]}) == 3
    job_env.assert_nothing_left(failed=False)


async def test_an_error_frame_retires_the_guest(job_env: JobEnv, tmp_path: Path) -> None:
    raising = textwrap.dedent(
        """
        import os
        import pyarrow as pa

        class Handler:
            def execute(self, file_path):
                print(f"JOB pid={os.getpid()}")
                if open(file_path).read() == "2":
                    raise ValueError("bad file")
                yield pa.table({"n": [1]})
        """
    )
    ex = executor(job_env, max_idle=1)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            first = await ex.run(1, make_dispatch(raising, numbered(tmp_path, 1)))
            failed = await ex.run(2, make_dispatch(raising, numbered(tmp_path, 2)))
            third = await ex.run(3, make_dispatch(raising, numbered(tmp_path, 3)))
    assert failed.status == "FAILED"
    assert "bad file" in (failed.error_message or "")
    assert job_env.pids[0] == job_env.pids[1] == pid_of(first)
    assert pid_of(third) != pid_of(first)
    job_env.assert_nothing_left(failed=False)


async def test_abort_kills_only_that_jobs_guest(job_env: JobEnv, tmp_path: Path) -> None:
    ex = executor(job_env, max_idle=4)
    other = COUNTING.replace("JOB", "JOB other")  # another plugin version, idle meanwhile
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            other_pid = pid_of(await ex.run(1, make_dispatch(other, artifact_hash="other")))
            hanging_input = tmp_path / "hang.txt"
            hanging_input.write_text("x")
            first = pid_of(await ex.run(3, make_dispatch(COUNTING)))
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def doomed() -> None:
                    with scope:
                        await ex.run(4, make_dispatch(HANGING, hanging_input))

                nursery.start_soon(doomed)
                hung_pid = await wait_for_file(Path(f"{hanging_input}.started"))
                scope.cancel()  # what ABORT does to the job's scope
            assert not group_alive(hung_pid)
            assert group_alive(other_pid)
            assert group_alive(first)
            again = pid_of(await ex.run(5, make_dispatch(COUNTING)))
            assert again == first  # an unrelated guest kept running
    job_env.assert_nothing_left(failed=False)


async def test_timeout_in_a_reused_guest_kills_it_and_the_next_job_gets_a_new_one(
    job_env: JobEnv, tmp_path: Path
) -> None:
    ex = executor(job_env, max_idle=2)
    flip = tmp_path / "flip.txt"
    # Hangs while ``flip`` exists: the same plugin version runs, times out, runs again.
    source = textwrap.dedent(
        f"""
        import os
        import time
        import pyarrow as pa

        class Handler:
            def execute(self, file_path):
                print(f"JOB pid={{os.getpid()}}")
                while os.path.exists({str(flip)!r}):
                    time.sleep(0.02)
                yield pa.table({{"n": [1]}})
        """
    )
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            first = pid_of(await ex.run(1, make_dispatch(source)))
            flip.write_text("hang")
            run = JobRun(job_id=2, dispatch=make_dispatch(source, timeout_s=1.0))
            receipt = await run.execute(ex)
            assert receipt.status == "FAILED"
            assert "timed out" in (receipt.error_message or "")
            assert job_env.pids[1] == first  # it ran in the reused guest ...
            assert not group_alive(first)  # ... which is gone
            flip.unlink()
            assert pid_of(await ex.run(3, make_dispatch(source))) != first
    job_env.assert_nothing_left(failed=False)


async def test_a_new_plugin_version_never_runs_in_an_old_versions_guest(job_env: JobEnv) -> None:
    v1 = COUNTING.replace("JOB", "JOB v1")
    v2 = COUNTING.replace("JOB", "JOB v2")
    ex = executor(job_env, max_idle=4)

    def pid(receipt: Conclude, version: str) -> int:
        line = job_line(receipt)
        assert line.startswith(f"JOB {version} "), line
        match = re.search(r"pid=(\d+)", line)
        assert match
        return int(match.group(1))

    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            a = pid(await ex.run(1, make_dispatch(v1, artifact_hash="v1")), "v1")
            # same artifact hash, other source (a republish the hash did not tell apart)
            b = pid(await ex.run(2, make_dispatch(v2, artifact_hash="v1")), "v2")
            c = pid(await ex.run(3, make_dispatch(v2, artifact_hash="v2")), "v2")
            d = pid(await ex.run(4, make_dispatch(v1, artifact_hash="v1")), "v1")
            e = pid(await ex.run(5, make_dispatch(v2, artifact_hash="v2")), "v2")
            mem = await ex.run(6, make_dispatch(v1, artifact_hash="v1", memory_limit_mb=4096))
    assert len({a, b, c}) == 3
    assert d == a
    assert e == c
    assert pid(mem, "v1") != a  # another memory limit: another guest
    job_env.assert_nothing_left(failed=False)


async def test_max_jobs_recycles_the_guest(job_env: JobEnv) -> None:
    ex = executor(job_env, max_idle=1, guest_max_jobs=3)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            lines = [job_line(await ex.run(i, make_dispatch(COUNTING))) for i in range(1, 8)]
    modules = [int(line.rsplit("module=", 1)[1]) for line in lines]
    assert modules == [1, 2, 3, 1, 2, 3, 1]
    pids = job_env.pids
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]
    job_env.assert_nothing_left(failed=False)


async def test_rss_limit_recycles_the_guest(job_env: JobEnv) -> None:
    # Any interpreter with pyarrow is above 1 MB: every guest is replaced after its job.
    ex = executor(job_env, max_idle=1, guest_max_rss_mb=1)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            for i in range(1, 4):
                assert job_line(await ex.run(i, make_dispatch(COUNTING))).endswith("module=1")
            assert ex.idle_guests() == []
    assert len(set(job_env.pids)) == 3
    job_env.assert_nothing_left(failed=False)


async def test_memory_cap_failure_recycles_the_guest(job_env: JobEnv, tmp_path: Path) -> None:
    greedy = textwrap.dedent(
        """
        import os
        import pyarrow as pa

        class Handler:
            def execute(self, file_path):
                print(f"JOB pid={os.getpid()}")
                if open(file_path).read() == "2":
                    hog = bytearray(512 * 1024 * 1024)  # far past the 64 MB cap
                    hog[-1] = 1
                yield pa.table({"n": [1]})
        """
    )
    ex = executor(job_env, max_idle=1)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            runs = [
                await ex.run(n, make_dispatch(greedy, numbered(tmp_path, n), memory_limit_mb=64))
                for n in (1, 2, 3)
            ]
    assert [r.status for r in runs] == ["SUCCESS", "FAILED", "SUCCESS"]
    assert "memory" in (runs[1].error_message or "").lower()
    assert job_env.pids[0] == job_env.pids[1] != job_env.pids[2]
    job_env.assert_nothing_left(failed=False)


async def test_single_use_plugins_get_a_new_process_per_job(job_env: JobEnv) -> None:
    ex = executor(job_env, max_idle=2)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            lines = [
                job_line(await ex.run(i, make_dispatch(COUNTING, single_use_guest=True)))
                for i in range(1, 4)
            ]
    assert all(line.endswith("module=1") for line in lines)
    assert len(set(job_env.pids)) == 3
    job_env.pids.extend(g.proc.pid for g in ex.idle_guests() if g.proc is not None)
    job_env.assert_nothing_left(failed=False)


async def test_idle_guests_are_reaped(job_env: JobEnv) -> None:
    ex = executor(job_env, max_idle=2, guest_idle_s=0.2)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            pid = pid_of(await ex.run(1, make_dispatch(COUNTING)))
            while ex.idle_guests():
                await trio.sleep(0.05)
            while group_alive(pid):  # killed, and reaped by the same reaper tick
                await trio.sleep(0.05)
            assert pid_of(await ex.run(2, make_dispatch(COUNTING))) != pid
    job_env.assert_nothing_left(failed=False)


async def test_without_async_with_every_job_gets_its_own_process(job_env: JobEnv) -> None:
    with trio.fail_after(HANG_GUARD_S):
        for i in range(1, 3):
            line = job_line(await job_env.executor.run(i, make_dispatch(COUNTING)))
            assert line.endswith("module=1")
    assert len(set(job_env.pids)) == 2
    job_env.assert_nothing_left(failed=False)


async def test_a_dead_idle_guest_is_replaced(job_env: JobEnv) -> None:
    ex = executor(job_env, max_idle=2)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            dead = pid_of(await ex.run(1, make_dispatch(COUNTING)))
            (idle,) = ex.idle_guests()
            assert idle.proc is not None
            os.killpg(dead, signal.SIGKILL)
            await idle.proc.wait()
            assert pid_of(await ex.run(2, make_dispatch(COUNTING))) != dead
    job_env.assert_nothing_left(failed=False)


async def test_blank_prewarmed_guest_takes_the_first_job(job_env: JobEnv) -> None:
    ex = executor(job_env, max_idle=2)
    with trio.fail_after(HANG_GUARD_S):
        async with ex:
            ex.prewarm("system")
            (blank,) = ex.idle_guests()
            assert blank.proc is not None
            assert blank.key is None
            assert pid_of(await ex.run(1, make_dispatch(COUNTING))) == blank.proc.pid
    job_env.assert_nothing_left(failed=False)


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
