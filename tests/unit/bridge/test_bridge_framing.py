"""Frame format: the guest's constants agree with the host's; parsing edge cases."""

from __future__ import annotations

import ast
import importlib.util
import json
import signal
import sys
from pathlib import Path

import pytest

from casparian_trio.bridge import _failures, _framing, _guestproc
from casparian_trio.bridge._stream import GuestReportedError
from casparian_trio.errors import GuestCrashed, SinkError


def load_guest():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("guest_under_test", _guestproc.GUEST_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_guest_constants_match_host() -> None:
    guest = load_guest()
    assert guest.HEADER.format == _framing.HEADER.format
    assert guest.TOPIC_LEN.format == _framing.TOPIC_LEN.format
    assert (guest.END_TAG, guest.ERROR_TAG) == (_framing.END_TAG, _framing.ERROR_TAG)
    assert guest.FRAME_MAX_BYTES < _framing.MAX_FRAME_BYTES


def test_guest_imports_only_stdlib_and_pyarrow() -> None:
    tree = ast.parse(_guestproc.GUEST_SCRIPT.read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    top = {m.split(".")[0] for m in modules}
    assert top - {"pyarrow", "__future__"} <= set(sys.stdlib_module_names)


@pytest.mark.parametrize(
    ("tag", "error"),
    [
        (_framing.MAX_FRAME_BYTES + 1, _framing.OversizedFrame),
        (2, _framing.InvalidFrame),
    ],
)
def test_data_length_checks(tag: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        _framing.check_data_length(tag)


def test_parse_data_and_control() -> None:
    body = bytearray(b"\x00\x05hello" + b"IPC")
    frame = _framing.parse_data(body)
    assert frame.topic == "hello"
    assert bytes(frame.ipc) == b"IPC"
    with pytest.raises(_framing.InvalidFrame, match="topic length"):
        _framing.parse_data(bytearray(b"\x00\x09abc"))
    assert _framing.parse_control(json.dumps({"rows": 3}).encode()) == {"rows": 3}
    with pytest.raises(_framing.InvalidFrame):
        _framing.parse_control(b"[1]")
    with pytest.raises(_framing.OversizedFrame):
        _framing.check_control_length(_framing.MAX_CONTROL_BYTES + 1)


def test_describe_failures() -> None:
    reported = GuestReportedError("memory", "MemoryError: ", "Traceback ...\nMemoryError")
    msg = _failures.describe(reported, plugin="p", output_tail="", memory_limit_mb=64)
    assert msg.splitlines()[0] == "memory limit exceeded (64 MB): plugin 'p' raised MemoryError: "
    crashed = GuestCrashed(-signal.SIGKILL, "last words")
    msg = _failures.describe(crashed, plugin="p", output_tail="last words", memory_limit_mb=None)
    assert msg.splitlines()[0] == "guest was killed by signal SIGKILL before sending its end frame"
    assert msg.endswith("last words")
    huge = _failures.describe(
        SinkError("x" * 50), plugin="p", output_tail="y" * 20000, memory_limit_mb=None
    )
    assert len(huge) <= _failures.MAX_MESSAGE_CHARS
    assert huge.startswith("x" * 50)


def test_output_tail_is_bounded() -> None:
    tail = _guestproc.OutputTail(1)
    for i in range(10_000):
        tail._keep(f"line {i}\n".encode())
    text = tail.text()
    assert len(text) <= _guestproc.TAIL_BYTES
    assert text.endswith("line 9999\n")


def test_sweep_removes_only_dead_workers_guest_dirs(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from casparian_trio.bridge.host import sweep_dead_guest_dirs

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead, mine, odd = (
        tmp_path / f"casparian-guest-{gone.stdout.strip()}-a",
        tmp_path / f"casparian-guest-{os.getpid()}-b",
        tmp_path / "casparian-guest-x-c",
    )
    for d in (dead, mine, odd):
        (d / "tmp").mkdir(parents=True)
    assert sweep_dead_guest_dirs(tmp_path) == 1
    assert not dead.exists()
    assert mine.exists()
    assert odd.exists()


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_frame_cut_short_is_an_invalid_frame(cut: float) -> None:
    """pyarrow reports a body shorter than its message header says as an OSError, not a disk's."""
    import pyarrow as pa

    from casparian_trio.bridge import _stream

    batch = pa.record_batch({"v": pa.array(range(10_000))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    body = sink.getvalue().to_pybytes()
    frame = _framing.DataFrame(topic="output", ipc=memoryview(body[: int(len(body) * cut)]))
    with pytest.raises(_framing.InvalidFrame, match="not an Arrow IPC stream"):
        _stream.write_frame(None, frame)  # type: ignore[arg-type]  (never reached)
