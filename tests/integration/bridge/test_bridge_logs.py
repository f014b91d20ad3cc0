"""What a receipt carries of the plugin's output: a success's log tail, a failure's traceback."""

from __future__ import annotations

import textwrap

import pytest
import trio
from bridge_helpers import HANG_GUARD_S, JobEnv, make_dispatch, plugin_source

from casparian_trio import failure_text
from casparian_trio.protocol.messages import Conclude

pytestmark = pytest.mark.slow  # real guest processes

PRINTS_THEN_SUCCEEDS = """
import sys
import pyarrow as pa

class Handler:
    def execute(self, file_path):
        for i in range({lines}):
            print(f"reading chunk {{i}}")
        print("a warning on stderr", file=sys.stderr)
        yield pa.table({{"id": [1, 2]}}).to_batches()[0]
        print("done")
"""

RAISES_IN_A_HELPER = """
def check(row):
    if row == 3:
        raise ValueError(f"bad row {row}")

class Handler:
    def execute(self, file_path):
        for row in range(5):
            print(f"row {row} ok?")
            check(row)
        yield
"""


async def run(env: JobEnv, source: str) -> Conclude:
    with trio.fail_after(HANG_GUARD_S):
        return await env.executor.run(5, make_dispatch(textwrap.dedent(source)))


async def test_a_successful_receipt_keeps_the_plugins_log(job_env: JobEnv) -> None:
    receipt = await run(job_env, PRINTS_THEN_SUCCEEDS.format(lines=3))
    assert receipt.status == "SUCCESS", receipt.error_message
    assert receipt.log_tail is not None
    lines = receipt.log_tail.splitlines()
    assert lines[:3] == ["reading chunk 0", "reading chunk 1", "reading chunk 2"]
    assert "a warning on stderr" in lines  # stderr too: one pipe, as written
    assert lines[-1] == "done"
    assert receipt.traceback is None
    job_env.assert_nothing_left(failed=False)


async def test_the_log_tail_is_bounded_and_keeps_the_end(job_env: JobEnv) -> None:
    receipt = await run(job_env, PRINTS_THEN_SUCCEEDS.format(lines=2000))
    assert receipt.status == "SUCCESS", receipt.error_message
    assert receipt.log_tail is not None
    assert len(receipt.log_tail.encode()) <= failure_text.LOG_TAIL_BYTES
    lines = receipt.log_tail.splitlines()
    assert lines[0].startswith("reading chunk ")  # whole lines only
    assert lines[-1] == "done"
    assert "reading chunk 0" not in lines


async def test_a_silent_plugin_sends_no_log(job_env: JobEnv) -> None:
    receipt = await run(job_env, plugin_source("seed_plugin.py"))
    assert receipt.status == "SUCCESS", receipt.error_message
    assert receipt.log_tail is None
    assert "log_tail" not in receipt.to_json()


async def test_a_failed_receipt_has_the_traceback_apart(job_env: JobEnv) -> None:
    receipt = await run(job_env, RAISES_IN_A_HELPER)
    assert receipt.status == "FAILED"
    assert receipt.error_message is not None
    assert receipt.traceback is not None
    head = "plugin 'test_plugin' raised ValueError: bad row 3"
    # the whole text in error_message still, for a Sentinel that does not read `traceback`
    assert receipt.error_message == f"{head}\n{receipt.traceback}"
    assert receipt.traceback.startswith("Traceback (most recent call last):")
    file_line, source_line, exception = failure_text.last_frame(receipt.traceback)
    assert file_line.startswith('File "')
    assert file_line.endswith('plugin.py", line 4, in check')
    assert source_line == 'raise ValueError(f"bad row {row}")'
    assert exception == "ValueError: bad row 3"
    tail = failure_text.output_tail(receipt.traceback)
    assert tail is not None
    assert tail.splitlines() == [f"row {i} ok?" for i in range(4)]
    job_env.assert_nothing_left()


async def test_a_crashed_guests_traceback_is_its_output(job_env: JobEnv) -> None:
    receipt = await run(
        job_env,
        """
        import os, sys
        class Handler:
            def execute(self, file_path):
                print("dying now", file=sys.stderr)
                os._exit(3)
        """,
    )
    assert receipt.status == "FAILED"
    assert receipt.error_message is not None
    assert receipt.error_message.splitlines()[0].startswith("guest exited with status 3")
    assert failure_text.last_frame(receipt.traceback) == []
    assert failure_text.output_tail(receipt.traceback) == "dying now"
