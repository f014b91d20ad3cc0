"""A job's outcome depends on the guest's bytes alone, never on how fast the host is.

Each test makes the host slow or the guest die at a bad moment, for real (SIGSTOP
of this process at the guest's exit, SIGKILL of a guest mid-stream, a sink that
fails outside its own error mapping), and checks the receipt names the cause.
"""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import trio
from bridge_helpers import HANG_GUARD_S, JobEnv, make_dispatch, plugin_source

from casparian_trio.protocol.messages import SinkConfig

pytestmark = pytest.mark.slow  # real guest processes


async def test_host_paused_at_guest_exit_still_completes(job_env: JobEnv, tmp_path: Path) -> None:
    # The host used to give the stream a fixed 1.0 s after the guest's exit; a
    # host paused for 1.5 s at that moment failed the job every time.
    rows_file = tmp_path / "big.rows"
    rows_file.write_text("1000000")
    dispatch = make_dispatch(plugin_source("pause_host_at_exit.py"), rows_file)
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(21, dispatch)
    assert receipt.status == "SUCCESS", receipt.error_message
    assert receipt.metrics["rows"] == 1_000_000
    [artifact] = receipt.artifacts
    [written] = [p for p in job_env.output.rglob("*.parquet")]
    assert pq.read_metadata(written).num_rows == 1_000_000
    assert artifact.rows == 1_000_000


STREAM_FOREVER = """
import os, time
import pyarrow as pa
class Handler:
    def configure(self, ctx, config):
        self.ctx = ctx
    def consume(self, event):
        batch = pa.record_batch({"n": pa.array(range(1000), pa.int64())})
        for i in range(1_000_000):
            self.ctx.publish("output", batch)
            if i == 3:
                open(os.path.join(os.environ["HOME"], "streaming"), "w").close()
            time.sleep(0.001)
"""


async def _kill_when_streaming(job_env: JobEnv) -> None:
    while True:
        markers = list(job_env.work.glob("*/streaming"))
        if markers and job_env.pids:
            os.kill(job_env.pids[-1], signal.SIGKILL)
            return
        await trio.sleep(0.01)


@pytest.mark.parametrize("run", range(9))
async def test_guest_killed_mid_stream_names_the_signal(job_env: JobEnv, run: int) -> None:
    receipt = None
    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_kill_when_streaming, job_env)
            receipt = await job_env.executor.run(30 + run, make_dispatch(STREAM_FOREVER))
    assert receipt is not None
    assert receipt.status == "FAILED"
    message = receipt.error_message or ""
    assert message.startswith("guest was killed by signal SIGKILL"), message
    assert "ExceptionGroup" not in message
    assert "nursery" not in message
    job_env.assert_nothing_left()


async def test_sink_error_outside_the_sinks_own_mapping_is_named(job_env: JobEnv) -> None:
    # The SQLite file is a directory: sqlite3 raises while the sink connects,
    # before any of the sink's own error mapping.
    (job_env.output / "db.sqlite").mkdir()
    source = """
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({"a": [1, 2]})
    """
    dispatch = make_dispatch(
        textwrap.dedent(source), sinks=(SinkConfig("output", "sqlite://db.sqlite/t"),)
    )
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(40, dispatch)
    assert receipt.status == "FAILED"
    first = (receipt.error_message or "").splitlines()[0]
    assert first.startswith("topic 'output' (table 't' in "), first
    assert "OperationalError" in first
    assert "ExceptionGroup" not in (receipt.error_message or "")


async def test_guest_exits_zero_while_child_holds_socket_fails_without_end_frame(
    job_env: JobEnv,
) -> None:
    # Everything the guest wrote is read; then the open socket ends the stream.
    source = """
    import os, time
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({"a": list(range(100_000))})
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
            os._exit(0)
    """
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(41, make_dispatch(textwrap.dedent(source)))
    assert receipt.status == "FAILED"
    assert (receipt.error_message or "").startswith(
        "guest exited with status 0 without an end frame (guest exited while a process"
    ), receipt.error_message
