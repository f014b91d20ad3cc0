"""What a guest can see and what happens to it when its worker dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import trio
from bridge_helpers import HANG_GUARD_S, JobEnv, make_dispatch

pytestmark = pytest.mark.slow  # real guest processes

PROBE = """
import json, os, stat, sys
import pyarrow as pa
class Handler:
    def execute(self, file_path):
        home = os.environ.get("HOME", "")
        info = {
            "env": dict(os.environ),
            "isolated": sys.flags.isolated,
            "home_mode": oct(stat.S_IMODE(os.stat(home).st_mode)),
            "ppid": os.getppid(),
            "pgid": os.getpgid(0),
            "pid": os.getpid(),
            "modules": sorted(m for m in sys.modules if m.startswith("casparian")),
        }
        yield pa.table({"info": [json.dumps(info)]})
"""


async def test_clean_environment_and_private_dir(
    job_env: JobEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2-very-secret")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(3, make_dispatch(textwrap.dedent(PROBE)))
    assert receipt.status == "SUCCESS", receipt.error_message
    info = json.loads(pq.read_table(receipt.artifacts[0].uri).column("info")[0].as_py())
    env = info["env"]
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "hunter2-very-secret" not in json.dumps(env)
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE", "TZ"}
    assert Path(env["HOME"]).parent == job_env.work
    assert env["TMPDIR"] == env["HOME"] + "/tmp"
    assert info["home_mode"] == "0o700"
    assert info["isolated"] == 1
    assert info["ppid"] == os.getpid()
    assert info["pgid"] == info["pid"]
    assert info["modules"] == []  # casparian_trio is not importable in the guest
    job_env.assert_nothing_left(failed=False)


async def test_guest_output_is_logged(job_env: JobEnv, caplog: pytest.LogCaptureFixture) -> None:
    source = """
    import sys
    class Handler:
        def execute(self, file_path):
            print("hello from the plugin")
            print("and from stderr", file=sys.stderr)
            return None
    """
    with caplog.at_level("INFO", logger="casparian_trio.bridge"), trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(3, make_dispatch(textwrap.dedent(source)))
    assert receipt.status == "SUCCESS"
    assert receipt.artifacts == ()  # the topic got no rows: no file
    logged = [r.getMessage() for r in caplog.records]
    assert "job 3 guest: hello from the plugin" in logged
    assert "job 3 guest: and from stderr" in logged


HOST = """
import sys, trio
from pathlib import Path
from casparian_trio.bridge import BridgeExecutor
from casparian_trio.envs import EnvManager
from casparian_trio.protocol.messages import Dispatch, SinkConfig

SOURCE = '''
import os, time
class Handler:
    def execute(self, file_path):
        with open(file_path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(600)
'''
root = Path(sys.argv[1])
ex = BridgeExecutor(output_root=root / "out", envs=EnvManager(root / "envs"), work_root=root / "work")
d = Dispatch(plugin_name="p", file_path=str(root / "guest.pid"), sinks=(SinkConfig("output", "parquet://o"),),
             file_version_id=1, env_hash="system", source_code=SOURCE, artifact_hash="x")
trio.run(ex.run, 1, d)
"""


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (its reaper may be slow)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_guest_dies_with_sigkilled_worker(tmp_path: Path) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST, str(tmp_path)])
    pid_file = tmp_path / "guest.pid"
    guest = 0
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "guest never started"
            assert host.poll() is None, "host died"
            time.sleep(0.05)
        guest = int(pid_file.read_text())
        assert alive(guest)
        host.send_signal(signal.SIGKILL)
        host.wait(HANG_GUARD_S)
        deadline = time.monotonic() + HANG_GUARD_S
        while alive(guest):
            assert time.monotonic() < deadline, "guest outlived its worker"
            time.sleep(0.05)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        if guest and alive(guest):
            os.kill(guest, signal.SIGKILL)
