"""Child processes for the benchmarks: spawn with a log, wait for a line, stop.

Shared by ``bench_control.py`` and ``bench_smallfiles.py`` (run as scripts, so
``tools/`` is on ``sys.path``). Never imported by src/.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(root: Path) -> dict[str, str]:
    """The caller's environment without any CASPARIAN_* (a $CASPARIAN_KEYS, a
    $CASPARIAN_CONFIG ... must not leak in), TMPDIR under ``root``, unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASPARIAN_")}
    return {**env, "TMPDIR": str(root), "PYTHONUNBUFFERED": "1"}


def spawn(argv: list[str], root: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``argv`` in ``root`` with stdout and stderr to ``root/<name>.log``."""
    log = root / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            argv, cwd=root, env=child_env(root), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    return popen, log


def wait_for(log: Path, popen: subprocess.Popen[bytes], text: str, *, hang_s: float) -> None:
    """Until ``text`` is in the log; SystemExit if the process exits or ``hang_s`` passes."""
    deadline = time.monotonic() + hang_s
    while text not in log.read_text(errors="replace"):
        if popen.poll() is not None:
            raise SystemExit(f"{log.name}: exited {popen.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{log.name}: no {text!r} within {hang_s:g} s")
        time.sleep(0.02)


def stop(procs: list[subprocess.Popen[bytes]], *, grace_s: float) -> None:
    """SIGTERM every process, wait ``grace_s`` for each, then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
