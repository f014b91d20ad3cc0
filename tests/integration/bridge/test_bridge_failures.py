"""One test per way a job can fail; each checks the receipt and that nothing is left behind."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import trio
from bridge_helpers import HANG_GUARD_S, JobEnv, make_dispatch

from casparian_trio.envs import READY_MARKER
from casparian_trio.protocol.messages import SinkConfig

pytestmark = pytest.mark.slow  # real guest processes (~0.3 s each)

# Finds the guest's bridge socket from inside a plugin, to write raw bytes on it.
RAW_SOCKET = """
import os, socket, stat, time
def bridge_socket():
    for fd in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.fstat(int(fd)).st_mode):
                return socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            pass
"""


async def run_failing(env: JobEnv, source: str, **kw: object) -> str:
    with trio.fail_after(HANG_GUARD_S):
        receipt = await env.executor.run(11, make_dispatch(textwrap.dedent(source), **kw))
    assert receipt.status == "FAILED", receipt
    assert receipt.error_message
    env.assert_nothing_left()
    return receipt.error_message


async def test_plugin_raises(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        """
        class Handler:
            def execute(self, file_path):
                print("about to fail")
                raise ValueError("bad row 7")
                yield
        """,
    )
    first = msg.splitlines()[0]
    assert first == "plugin 'test_plugin' raised ValueError: bad row 7"
    assert "plugin.py" in msg
    assert 'raise ValueError("bad row 7")' in msg
    assert "about to fail" in msg  # guest output tail


async def test_guest_exits_nonzero(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        """
        import os, sys
        class Handler:
            def execute(self, file_path):
                print("dying now", file=sys.stderr)
                os._exit(3)
        """,
    )
    assert msg.startswith("guest exited with status 3 before sending its end frame")
    assert "dying now" in msg


async def test_guest_segfaults(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        """
        import ctypes
        class Handler:
            def execute(self, file_path):
                ctypes.string_at(0)
        """,
    )
    assert msg.startswith("guest was killed by signal SIGSEGV before sending its end frame")


async def test_exits_without_end_frame(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        """
        import os
        class Handler:
            def execute(self, file_path):
                os._exit(0)
        """,
    )
    assert msg.startswith("guest exited with status 0 without an end frame")


async def test_garbage_on_socket(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        RAW_SOCKET
        + """
class Handler:
    def execute(self, file_path):
        s = bridge_socket()
        s.sendall(b"\\x00\\x00\\x00\\x10" + b"\\x00\\x06output" + b"not arrow!")
        time.sleep(60)
""",
    )
    assert msg.startswith("invalid frame from guest")


async def test_bad_topic_header(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        RAW_SOCKET
        + """
class Handler:
    def execute(self, file_path):
        bridge_socket().sendall(b"\\x00\\x00\\x00\\x08\\xff\\xff" + b"garbage!")
        time.sleep(60)
""",
    )
    assert msg.startswith("invalid frame from guest: topic length exceeds the frame")


async def test_oversized_frame(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        RAW_SOCKET
        + """
class Handler:
    def execute(self, file_path):
        bridge_socket().sendall(b"\\x7f\\xff\\xff\\xff")
        time.sleep(60)
""",
    )
    assert msg.startswith("oversized frame from guest: 2147483647 bytes (max 268435456)")


async def test_no_handler_class(job_env: JobEnv) -> None:
    msg = await run_failing(job_env, "x = 1\n")
    assert msg.startswith(
        "plugin 'test_plugin' failed to load: the plugin defines no class Handler"
    )


async def test_syntax_error(job_env: JobEnv) -> None:
    msg = await run_failing(job_env, "class Handler:\n    def execute(self, file_path)\n")
    assert msg.startswith("plugin 'test_plugin' failed to load: SyntaxError")
    assert "line 2" in msg


async def test_memory_limit(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        """
        class Handler:
            def execute(self, file_path):
                hog = bytearray(1024 * 1024 * 1024)
                yield hog
        """,
        memory_limit_mb=200,
    )
    assert msg.startswith("memory limit exceeded (200 MB)")
    assert "MemoryError" in msg


async def test_memory_limit_arrow_allocation(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        """
        import pyarrow as pa
        class Handler:
            def execute(self, file_path):
                yield pa.allocate_buffer(1024 * 1024 * 1024)
        """,
        memory_limit_mb=200,
    )
    assert msg.startswith("memory limit exceeded (200 MB)")


async def test_schema_violation(job_env: JobEnv) -> None:
    sink = SinkConfig("output", "parquet://out", schema_def='{"id": "int64", "value": "float64"}')
    rows = ", ".join(["'1.5'"] * 15 + ["'not a number'"] * 5)
    msg = await run_failing(
        job_env,
        f"""
        import pyarrow as pa
        class Handler:
            def execute(self, file_path):
                yield pa.table({{"id": list(range(20)), "value": [{rows}]}})
        """,
        sinks=(sink,),
    )
    # Values that do not convert are quarantined, but 25 % is over max_invalid_fraction.
    assert msg.startswith("topic 'output': 5 of 20 rows (25.0%) hold values that do not convert")


async def test_unknown_topic(job_env: JobEnv) -> None:
    msg = await run_failing(
        job_env,
        """
        import pyarrow as pa
        class Handler:
            def execute(self, file_path):
                yield ("elsewhere", pa.table({"a": [1]}))
        """,
    )
    assert "published to topic 'elsewhere', which has no sink (configured: output)" in msg


@pytest.mark.parametrize(
    "uri", ["parquet://../escape", "parquet:///etc/x", "ftp://x", "sqlite://db/bad-name"]
)
async def test_bad_sink_uri(job_env: JobEnv, uri: str) -> None:
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(
            5, make_dispatch("class Handler: pass", sinks=(SinkConfig("output", uri),))
        )
    assert receipt.status == "FAILED"
    assert receipt.error_message is not None
    assert receipt.error_message.startswith(f"bad sink URI {uri!r} for topic 'output'")
    assert job_env.pids == []  # refused before any guest started
    assert list(job_env.work.iterdir()) == []


async def test_env_not_provisioned(job_env: JobEnv) -> None:
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(
            5, make_dispatch("class Handler: pass", env_hash="ab" * 32)
        )
    assert receipt.status == "FAILED"
    assert receipt.error_message == (
        f"environment {'ab' * 32} is not provisioned on this worker; publish the plugin with --lockfile "
        "so the Sentinel sends PREPARE_ENV, or start the worker with --allow-system-env"
    )
    assert list(job_env.work.iterdir()) == []


async def test_dies_before_connecting(job_env: JobEnv, tmp_path: Path) -> None:
    env_hash = "cd" * 32
    fake = tmp_path / "envs" / env_hash
    (fake / "bin").mkdir(parents=True)
    (fake / READY_MARKER).write_text("")
    python = fake / "bin" / "python"
    python.write_text("#!/bin/sh\necho 'fatal: cannot start interpreter' >&2\nexit 7\n")
    python.chmod(0o755)
    msg = await run_failing(job_env, "class Handler: pass", env_hash=env_hash)
    assert msg.startswith("guest exited with status 7 before connecting to the bridge socket")
    assert "fatal: cannot start interpreter" in msg


HANG = """
import pyarrow as pa, time
class Handler:
    def execute(self, file_path):
        # 40 MB: enough for the host to open its staging file before we hang
        yield pa.table({"x": pa.array(range(5_000_000), pa.int64())})
        time.sleep(600)
"""


def staged_files(output: Path) -> list[Path]:
    return [p for p in output.rglob("*") if p.name.endswith(".staging")]


async def wait_for_staging(output: Path) -> None:
    # Polling the file system: there is no event to wait on.
    while not staged_files(output):
        await trio.sleep(0.05)


async def test_timeout_kills_guest(job_env: JobEnv) -> None:
    with trio.fail_after(HANG_GUARD_S):
        with trio.move_on_after(3) as timeout:
            await job_env.executor.run(12, make_dispatch(HANG))
        assert timeout.cancelled_caught
    job_env.assert_nothing_left()


async def test_abort_mid_stream(job_env: JobEnv) -> None:
    ran_to_end = False

    async def job() -> None:
        nonlocal ran_to_end
        await job_env.executor.run(13, make_dispatch(HANG))
        ran_to_end = True

    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job)
            await wait_for_staging(job_env.output)  # data is half-written
            nursery.cancel_scope.cancel(reason="ABORT from the sentinel")
    assert not ran_to_end
    job_env.assert_nothing_left()


async def test_cancel_reraises_bare_cancelled(job_env: JobEnv) -> None:
    caught: list[BaseException] = []
    with trio.fail_after(HANG_GUARD_S), trio.move_on_after(2):
        try:
            await job_env.executor.run(14, make_dispatch(HANG))
        except BaseException as exc:
            caught.append(exc)
            raise
    assert [type(e) for e in caught] == [trio.Cancelled]
    job_env.assert_nothing_left()


async def test_guest_dying_while_its_child_holds_the_socket_fails_promptly(job_env: JobEnv) -> None:
    # Without a watch on the guest process, EOF never comes (the child keeps the
    # socket open) and the job would hang until its timeout.
    source = """
    import os, time
    class Handler:
        def execute(self, file_path):
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
            os._exit(4)
    """
    # The guard is far below the child's sleep: ending only when the child did fails.
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(11, make_dispatch(textwrap.dedent(source)))
    assert receipt.status == "FAILED"
    assert (receipt.error_message or "").startswith("guest exited with status 4")
    # the child was killed with the group; it may linger as a zombie until init reaps it
    [pgid] = job_env.pids
    with trio.fail_after(HANG_GUARD_S):
        while _live_members(pgid):
            await trio.sleep(0.05)
    assert list(job_env.work.iterdir()) == []


def _live_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members
