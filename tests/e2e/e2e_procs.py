"""Helpers for the end-to-end tests: real ``sentinel``/``worker`` processes.

Every process this module starts runs ``python -m casparian_trio`` with its
working directory, database, output root and TMPDIR inside the test's
``tmp_path``; its stderr goes to a log file there, so a failure can dump it.
Guests of a worker make their job dirs under that TMPDIR, so "is anything of
this test still running?" is a /proc scan for command lines naming
``tmp_path`` (a zombie has an empty command line and does not match).

No psutil: /proc is read directly (Linux only, like PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pyarrow as pa
import pyarrow.parquet as pq

from casparian_trio.store import Database, JobRow, catalog, open_database, queue

T = TypeVar("T")

# Short enough that a lost worker is noticed in ~1.5 s, long enough not to flap
# on a loaded CI machine.
HEARTBEAT = 0.5
LIVENESS = 1.5
# How long any one wait (a process starting and logging its start line, a job
# reaching a status, a process exiting after a signal) may take before the test
# is declared hung. A hang guard, never a speed limit: on an idle machine each
# of them takes a few seconds at most; tools/under_load.sh makes them slower.
HANG_S = 60.0
START_TIMEOUT = HANG_S
EXIT_TIMEOUT = HANG_S
LOG_TAIL = 6000

# A plugin whose behaviour is driven by its input file (one ``key=value`` per
# line), so one published plugin serves every test:
#   hold=1    wait until ``<input>.release`` exists (``Cluster.release``): the
#             job stays mid-job until the test has done what it must meanwhile
#   sleep=S   seconds to sleep before yielding (a job that must last S s)
#   rows=N    how many rows to yield (id 0..N-1, value id * 1.5)
# Before holding or sleeping it writes ``<input>.started.<pid>`` with its own
# pid, so a test knows the job is running and which process is the guest.
SLOW_PLUGIN = """
from __future__ import annotations

import os
import time

import pyarrow as pa


def _settings(path):
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key:
                out[key] = value
    return out


class Handler:
    def execute(self, file_path):
        settings = _settings(file_path)
        with open(f"{file_path}.started.{os.getpid()}", "w") as f:
            f.write(str(os.getpid()))
        if settings.get("hold"):
            while not os.path.exists(f"{file_path}.release"):
                time.sleep(0.05)
        time.sleep(float(settings.get("sleep", "0")))
        n = int(settings.get("rows", "3"))
        yield pa.table({"id": list(range(n)), "value": [i * 1.5 for i in range(n)]})
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float = HANG_S, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy; AssertionError after ``timeout``.

    ``timeout`` only stops a hung test: wait for the condition, never for a time.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- /proc ------------------------------------------------------------------------


@attrs.frozen
class ProcInfo:
    pid: int
    ppid: int
    state: str
    cmdline: str


def _read_proc(pid: int) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("utf-8", "replace")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid ..." -- comm may contain spaces and parentheses.
    fields = stat[stat.rfind(")") + 2 :].split()
    return ProcInfo(pid=pid, ppid=int(fields[1]), state=fields[0], cmdline=cmdline)


def all_processes() -> list[ProcInfo]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _read_proc(int(entry))
            if info is not None:
                found.append(info)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    info = _read_proc(pid)
    return info is not None and info.state != "Z"


def descendants(pid: int) -> list[ProcInfo]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    procs = [p for p in all_processes() if p.state != "Z"]
    found: list[ProcInfo] = []
    parents = {pid}
    while True:
        new = [p for p in procs if p.ppid in parents and p not in found]
        if not new:
            return found
        found.extend(new)
        parents = {p.pid for p in new}


def processes_mentioning(text: str, *, exclude: Iterable[int] = ()) -> list[ProcInfo]:
    """Live processes whose command line contains ``text`` (zombies have none)."""
    skip = {os.getpid(), *exclude}
    return [p for p in all_processes() if text in p.cmdline and p.pid not in skip]


# --- the processes under test ----------------------------------------------------------


@attrs.define(eq=False)
class Proc:
    """One ``python -m casparian_trio ...`` process with stderr in a log file."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = START_TIMEOUT, *, after: int = 0) -> str:
        """Wait for a log line matching ``pattern`` (regex) at or past offset ``after``."""
        regex = re.compile(pattern)

        def probe() -> str | None:
            text = self.log()[after:]
            match = regex.search(text)
            if match:
                return match.group(0)
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.popen.returncode} before logging {pattern!r}"
                )
            return None

        return wait_until(f"{self.name} to log {pattern!r}", probe, timeout)

    def send(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout:g} s") from None

    def stop(self) -> None:
        """SIGKILL if still running (cleanup only), and reap."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(EXIT_TIMEOUT)


@attrs.define(eq=False)
class Cluster:
    """A test's database, address, output root and the processes it started."""

    root: Path
    port: int = attrs.field(factory=free_port)
    procs: list[Proc] = attrs.field(factory=list)
    _db: Database | None = None

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.root / "casparian.db"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def tmpdir(self) -> Path:
        """TMPDIR of every process: workers make their per-job dirs here."""
        return self.root / "tmp"

    # --- processes -------------------------------------------------------------------

    def spawn(self, name: str, *args: str) -> Proc:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{name}.{len(self.procs)}.log"
        argv = [sys.executable, "-m", "casparian_trio", *args]
        env = {**os.environ, "TMPDIR": str(self.tmpdir), "PYTHONUNBUFFERED": "1"}
        for key in ("CASPARIAN_DB", "CASPARIAN_BIND", "CASPARIAN_CONNECT", "CASPARIAN_OUTPUT"):
            env.pop(key, None)
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        proc = Proc(name=name, argv=argv, popen=popen, log_path=log_path)
        self.procs.append(proc)
        return proc

    def init_db(self) -> None:
        """``init-db``, as a user runs it first: only it creates a database."""
        subprocess.run(
            [sys.executable, "-m", "casparian_trio", "init-db", "--db", str(self.db_path)],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )

    def start_sentinel(self, *extra: str, fast: bool = True) -> Proc:
        args = ["sentinel", "--db", str(self.db_path), "--bind", self.address]
        if fast:
            args += ["--heartbeat-interval", str(HEARTBEAT), "--liveness-timeout", str(LIVENESS)]
        proc = self.spawn("sentinel", *args, *extra)
        proc.wait_for_log(r"sentinel serving")
        return proc

    def start_worker(self, worker_id: str, *extra: str, fast: bool = True) -> Proc:
        args = [
            "worker",
            "--connect",
            self.address,
            "--output",
            str(self.output),
            "--worker-id",
            worker_id,
            "--envs-root",
            str(self.root / "envs"),
            "--allow-system-env",
        ]
        if fast:
            args += ["--heartbeat-interval", str(HEARTBEAT)]
        proc = self.spawn(f"worker-{worker_id}", *args, *extra)
        proc.wait_for_log(rf"worker {re.escape(worker_id)} connected to")
        return proc

    def leftovers(self) -> list[ProcInfo]:
        """Live processes (other than pytest) whose command line names this test's root."""
        return processes_mentioning(str(self.root))

    def guests(self) -> list[ProcInfo]:
        return [p for p in self.leftovers() if "guest.py" in p.cmdline]

    def diagnostics(self) -> str:
        parts = []
        for proc in self.procs:
            rc = proc.popen.poll()
            text = proc.log()
            parts.append(
                f"----- {proc.name} (pid {proc.pid}, exit {rc}) {proc.log_path.name} -----\n"
                f"{text[-LOG_TAIL:]}"
            )
        for info in self.leftovers():
            parts.append(f"----- still running: {info}")
        return "\n".join(parts)

    def shutdown(self) -> None:
        """Test teardown: SIGKILL whatever is still running, and any guest left behind."""
        for proc in self.procs:
            proc.stop()
        for info in self.guests():
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- database ----------------------------------------------------------------------

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = open_database(self.db_path)
        return self._db

    def seed_jobs(
        self, plugin_name: str, source: str, files: dict[str, str], *, max_attempts: int = 3
    ) -> list[int]:
        """Publish ``source`` (env 'system'), record ``files`` and queue one job per file."""
        self.inputs.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (self.inputs / name).write_text(content)
        source_hash = hashlib.sha256(source.encode()).hexdigest()
        now = time.time()

        def seed(conn: Any) -> list[int]:
            catalog.publish_manifest(
                conn,
                plugin_name=plugin_name,
                version="1.0.0",
                source_code=source,
                source_hash=source_hash,
                env_hash="system",
                artifact_hash=source_hash,
                manifest={"name": plugin_name, "version": "1.0.0"},
                now=now,
            )
            root_id, _ = catalog.add_source_root(conn, str(self.inputs))
            job_ids = []
            for name, content in files.items():
                version_id, _ = catalog.record_file(
                    conn,
                    source_root_id=root_id,
                    rel_path=name,
                    # what a scan would record: the worker checks both before it runs
                    size=(self.inputs / name).stat().st_size,
                    mtime=(self.inputs / name).stat().st_mtime,
                    content_hash=hashlib.sha256(content.encode()).hexdigest(),
                    now=now,
                )
                job_id, _ = queue.enqueue(
                    conn, version_id, plugin_name, now=now, max_attempts=max_attempts
                )
                job_ids.append(job_id)
            return job_ids

        return self.db.run_sync(seed)

    def job(self, job_id: int) -> JobRow:
        row = self.db.run_sync(lambda conn: queue.get_job(conn, job_id), readonly=True)
        assert row is not None, f"job {job_id} does not exist"
        return row

    def attempts(self, job_id: int) -> list[dict[str, Any]]:
        return self.db.run_sync(lambda conn: queue.attempts(conn, job_id), readonly=True)

    def wait_for_status(self, job_id: int, *statuses: str, timeout: float = HANG_S) -> JobRow:
        def probe() -> JobRow | None:
            row = self.job(job_id)
            return row if row.status in statuses else None

        try:
            return wait_until(f"job {job_id} to be {'/'.join(statuses)}", probe, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; job is {self.job(job_id)}") from None

    def release(self, input_name: str) -> None:
        """Let SLOW_PLUGIN jobs on ``input_name`` with ``hold=1`` go on (now and later)."""
        (self.inputs / f"{input_name}.release").write_text("")

    def started_markers(self, input_name: str) -> list[int]:
        """Pids of the guests that started on ``input_name`` (written by SLOW_PLUGIN)."""
        return sorted(
            int(p.name.rsplit(".", 1)[1]) for p in self.inputs.glob(f"{input_name}.started.*")
        )

    # --- output ------------------------------------------------------------------------

    def parquet_files(self, plugin_name: str) -> list[Path]:
        return sorted((self.output / plugin_name).glob("*.parquet"))

    def read_output(self, plugin_name: str) -> pa.Table:
        files = self.parquet_files(plugin_name)
        assert files, f"no Parquet files under {self.output / plugin_name}"
        return pa.concat_tables([pq.read_table(f) for f in files])
