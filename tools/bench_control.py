"""Benchmark the control plane: dispatch → conclude cycles/s through a real Sentinel.

A real SQLite file (made by ``init-db``), the real Sentinel service launched as
``python -m casparian_trio sentinel`` on tcp, and real workers (the real
``Worker`` service on a real DEALER socket, each its own process) whose
executor concludes at once: no guest, no file is read, nothing is written. So
every job costs exactly the control plane: claim (SQLite), DISPATCH (ZeroMQ),
CONCLUDE (ZeroMQ), complete (SQLite), and the next claim.

The figure is taken from the database: the ``updated_at`` of the first and
last completed job, so start-up (interpreters, connects) is not counted.
Beside it, two CPU figures (Linux /proc), robust to a busy machine:
"CPU ms/cycle" is the Sentinel's and the workers' CPU together from the first
completion to the last, per completed cycle; "sentinel CPU ms/job" is the
Sentinel's CPU from "sentinel serving" to the run's end, per job.
A printer only: no assertions.

Usage:
    python tools/bench_control.py [--jobs 5000] [--workers 2] [--slots 4] [--repeat 1]
    python tools/bench_control.py --keys [...]
    python tools/bench_control.py --http [--poll-interval 0.5] [...]
    python tools/bench_control.py --compare keys [--http] [--repeat 5] [...]
    python tools/bench_control.py --compare http [--keys] [--poll-interval 0.5] [--repeat 5] [...]

``--keys`` runs with CURVE on every socket (``keys init`` + one worker key per
worker, through the command line, in the run's temporary folder).

``--http`` runs the Sentinel with its dashboard (``--http 127.0.0.1:0``) and a
poller thread that fetches ``/`` and ``/metrics`` every ``--poll-interval``
seconds during the run (a browser tab reloading every 5 s and a Prometheus
scraping every 15 s ask ten to thirty times less).

``--compare keys`` / ``--compare http`` alternate a run without and a run with
keys / the dashboard, ``--repeat`` times (a noisy moment hurts both alike), and
print both medians and their ratio (issue 13's goal for keys: at least 0.80 of
the keyless throughput; issue 14's for the dashboard: within 10 %). The other
flag, when given, is on in both runs of each pair.

Structure (for options added later): ``sentinel_argv`` and ``worker_argv``
build the two command lines, ``start_sentinel`` / ``start_worker`` launch and
wait for them, ``run_once`` is one measured run in one ``Mode``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLUGIN = "bench_control"
sys.path.insert(0, str(Path(__file__).parent))
from _procs import child_env, free_port, spawn, stop, wait_for  # noqa: E402

# A hang guard for each wait: start-up, a run's last conclusion.
HANG_S = 120.0
GOAL_PER_S = 2000
# What each --compare toggles, and the goal its issue set for the on/off throughput.
COMPARE_GOALS = {
    "keys": "issue 13 goal: throughput at least 0.80, CPU ms/cycle at most 1.25x",
    "http": "issue 14 goal: throughput within 10 %",
}


# --- command lines ------------------------------------------------------------------


def sentinel_argv(db: Path, address: str, extra: Sequence[str] = ()) -> list[str]:
    """``python -m casparian_trio sentinel ...`` for this run (add flags via ``extra``)."""
    return [
        sys.executable,
        "-m",
        "casparian_trio",
        "sentinel",
        "--db",
        str(db),
        "--bind",
        address,
        *extra,
    ]


def worker_argv(address: str, worker_id: str, slots: int, extra: Sequence[str] = ()) -> list[str]:
    """This script in worker mode: the real Worker service with an instant executor."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--as-worker",
        "--connect",
        address,
        "--worker-id",
        worker_id,
        "--slots",
        str(slots),
        *extra,
    ]


# --- the worker process -------------------------------------------------------------


class InstantExecutor:
    """Concludes every job at once with SUCCESS (the control plane's cost only)."""

    async def run(self, job_id: int, dispatch: Any) -> Any:
        from casparian_trio.protocol import Conclude

        return Conclude(status="SUCCESS", metrics={"rows": 0, "bytes": 0})


class ReadyEnvs:
    """Every env is ready: the bench publishes its plugin on the system env."""

    async def prepare(self, spec: Any) -> Any:
        from casparian_trio.protocol import EnvReady

        return EnvReady(env_hash=spec.env_hash, interpreter_path=sys.executable)

    def ready_envs(self) -> list[str]:
        return ["system"]


def worker_main(args: argparse.Namespace) -> int:
    """Run one Worker (real DEALER over tcp, CURVE with ``--keys-dir``) until SIGTERM/SIGINT."""
    import trio

    from casparian_trio.cli.services import _Drain, signal_task, stop_signal_receiver
    from casparian_trio.config import WorkerConfig
    from casparian_trio.transport import open_dealer
    from casparian_trio.transport.keys import client_keys
    from casparian_trio.worker import Worker

    logging.basicConfig(level=logging.WARNING)  # a worker logs every job at INFO
    keys_dir = Path(args.keys_dir) if args.keys_dir else None
    config = WorkerConfig(
        connect=args.connect,
        worker_id=args.worker_id,
        concurrency=args.slots,
        **({} if args.prefetch is None else {"prefetch": args.prefetch}),
        keys=keys_dir,
        key=args.worker_id if keys_dir else None,
        allow_system_env=True,  # the bench plugin has no lockfile (refused under keys otherwise)
    )
    keys = client_keys(keys_dir, args.worker_id) if keys_dir else None

    async def main() -> None:
        drain = _Drain()
        with stop_signal_receiver() as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(signal_task, signals, drain.on_signal)
                with open_dealer(config.connect, identity=config.identity, keys=keys) as channel:
                    worker = Worker(
                        config=config,
                        channel=channel,
                        executor=InstantExecutor(),
                        envs=ReadyEnvs(),
                    )
                    drain.attach(worker)
                    await worker.run()
                nursery.cancel_scope.cancel()

    trio.run(main)
    return 0


# --- the run ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mode:
    """What one run switches on: CURVE keys, the polled dashboard."""

    keys: bool = False
    http: bool = False

    def label(self, poll_s: float) -> str:
        keys = "CURVE keys" if self.keys else "keyless"
        http = f"dashboard polled every {poll_s:g} s" if self.http else "no dashboard"
        return f"{keys}, {http}"


@dataclasses.dataclass(frozen=True)
class Result:
    """One run's figures."""

    rate: float  # dispatch → conclude cycles/s
    cpu_ms_per_cycle: float  # Sentinel + workers, first completion → last
    sentinel_cpu_ms_per_job: float  # Sentinel only, "sentinel serving" → the run's end
    polls: int = 0  # dashboard requests answered (--http)
    poll_failures: int = 0


def start_sentinel(
    root: Path, db: Path, address: str, *, keys: Path | None = None, http: bool = False
) -> subprocess.Popen[bytes]:
    extra = ["--keys", str(keys)] if keys is not None else []
    if http:
        extra += ["--http", "127.0.0.1:0"]
    popen, log = spawn(sentinel_argv(db, address, extra), root, "sentinel")
    try:
        wait_for(log, popen, "sentinel serving", hang_s=HANG_S)
    except BaseException:
        _stop([popen])
        raise
    return popen


# --prefetch: the workers' prefetch (empty: the worker's default).
PREFETCH: list[int] = []


def start_worker(
    root: Path, address: str, worker_id: str, slots: int, keys: Path | None = None
) -> subprocess.Popen[bytes]:
    extra = ["--keys-dir", str(keys)] if keys is not None else []
    if PREFETCH:
        extra += ["--prefetch", str(PREFETCH[0])]
    popen, _log = spawn(worker_argv(address, worker_id, slots, extra), root, f"worker-{worker_id}")
    return popen


def make_keys(root: Path, workers: int) -> Path:
    """``keys init`` and one worker key per worker, through the command line."""
    keys = root / "keys"
    base = [sys.executable, "-m", "casparian_trio", "keys"]
    commands = [[*base, "init", str(keys)]]
    commands += [
        [*base, "add", f"w{i}", "--role", "worker", "--dir", str(keys)] for i in range(workers)
    ]
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, text=True, env=child_env(root))
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[2:])}: exited {done.returncode}:\n{done.stderr}")
    return keys


def cpu_seconds(procs: Sequence[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc)."""
    ticks = 0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def dashboard_url(root: Path) -> str:
    """The address the Sentinel logged for its dashboard (``--http 127.0.0.1:0``)."""
    for line in (root / "sentinel.log").read_text(errors="replace").splitlines():
        if "dashboard on http://" in line:
            return line.split("dashboard on ", 1)[1].split()[0]
    raise SystemExit("the sentinel did not log its dashboard address")


class Poller(threading.Thread):
    """Fetches the overview and /metrics every ``interval_s`` until stopped."""

    PATHS = ("/", "/metrics")

    def __init__(self, url: str, interval_s: float) -> None:
        super().__init__(daemon=True, name="dashboard-poller")
        self.url = url
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.requests = 0
        self.failures = 0

    def run(self) -> None:
        while not self.stopped.is_set():
            for path in self.PATHS:
                try:
                    with urllib.request.urlopen(self.url + path, timeout=HANG_S) as answer:
                        answer.read()
                    self.requests += 1
                except OSError:
                    self.failures += 1
            self.stopped.wait(self.interval_s)


def init_db(db: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "casparian_trio", "init-db", "--db", str(db)],
        check=True,
        capture_output=True,
        env=child_env(db.parent),
    )


def seed(db_path: Path, root: Path, jobs: int) -> None:
    """Publish a plugin on env 'system' and queue ``jobs`` jobs on one recorded file."""
    from casparian_trio.store import catalog, open_database, queue

    inputs = root / "inputs"
    inputs.mkdir()
    (inputs / "f.csv").write_text("a\n1\n")
    source = "class Handler:\n    def execute(self, file_path):\n        return None\n"
    source_hash = hashlib.sha256(source.encode()).hexdigest()
    now = time.time()
    db = open_database(db_path)

    def fill(conn: sqlite3.Connection) -> None:
        catalog.publish_manifest(
            conn,
            plugin_name=PLUGIN,
            version="1.0.0",
            source_code=source,
            source_hash=source_hash,
            env_hash="system",
            artifact_hash=source_hash,
            manifest={"name": PLUGIN, "version": "1.0.0"},
            now=now,
        )
        root_id, _ = catalog.add_source_root(conn, str(inputs))
        for i in range(jobs):
            # one file version per job: a (file version, plugin) is queued once
            version_id, _ = catalog.record_file(
                conn,
                source_root_id=root_id,
                rel_path=f"f{i}.csv",
                size=4,
                mtime=now,
                content_hash=f"h{i}",
                now=now,
            )
            queue.enqueue(conn, version_id, PLUGIN, now=now, max_attempts=1)

    try:
        db.run_sync(fill)
    finally:
        db.close()


def completed_times(db_path: Path) -> list[float]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT updated_at FROM cf_processing_queue WHERE status = 'COMPLETED'"
            " ORDER BY updated_at"
        ).fetchall()
        return [float(r[0]) for r in rows]
    finally:
        conn.close()


def _count(db_path: Path, where: str) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        (n,) = conn.execute(f"SELECT count(*) FROM cf_processing_queue WHERE {where}").fetchone()
        return int(n)
    finally:
        conn.close()


def _count_unfinished(db_path: Path) -> int:
    return _count(
        db_path, "status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', 'SKIPPED', 'SUPERSEDED')"
    )


def _count_completed(db_path: Path) -> int:
    return _count(db_path, "status = 'COMPLETED'")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    stop(procs, grace_s=15)


def run_once(jobs: int, workers: int, slots: int, mode: Mode, *, poll_s: float = 0.5) -> Result:
    """One measured run in ``mode`` (keys: CURVE on every socket; http: the dashboard polled)."""
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        root = Path(tmp)
        db = root / "casparian.db"
        init_db(db)
        seed(db, root, jobs)
        address = f"tcp://127.0.0.1:{free_port()}"
        keys = make_keys(root, workers) if mode.keys else None
        procs = [start_sentinel(root, db, address, keys=keys, http=mode.http)]
        poller: Poller | None = None
        try:
            sentinel_cpu_start = cpu_seconds(procs[:1])
            if mode.http:
                poller = Poller(dashboard_url(root), poll_s)
                poller.start()
            procs += [start_worker(root, address, f"w{i}", slots, keys) for i in range(workers)]
            deadline = time.monotonic() + HANG_S
            cpu_start: tuple[int, float] | None = None  # (completed, CPU s) at the first one
            while _count_unfinished(db) > 0:
                if cpu_start is None and (done := _count_completed(db)) > 0:
                    cpu_start = (done, cpu_seconds(procs))
                if time.monotonic() > deadline:
                    raise SystemExit(f"jobs still unfinished after {HANG_S:g} s")
                if any(p.poll() is not None for p in procs):
                    logs = "\n".join(
                        f"--- {log.name}\n{log.read_text()[-2000:]}" for log in root.glob("*.log")
                    )
                    raise SystemExit(f"a process exited early:\n{logs}")
                time.sleep(0.05)
            cpu_end = cpu_seconds(procs)
            sentinel_cpu_s = cpu_seconds(procs[:1]) - sentinel_cpu_start
        finally:
            if poller is not None:
                poller.stopped.set()
                poller.join(HANG_S)
            _stop(procs[1:])
            _stop(procs[:1])
        times = completed_times(db)
        if len(times) < 2:
            raise SystemExit(f"only {len(times)} job(s) completed")
        first, cpu_first = cpu_start if cpu_start is not None else (len(times), cpu_end)
        return Result(
            rate=(len(times) - 1) / max(times[-1] - times[0], 1e-9),
            cpu_ms_per_cycle=1000 * (cpu_end - cpu_first) / max(len(times) - first, 1),
            sentinel_cpu_ms_per_job=1000 * sentinel_cpu_s / jobs,
            polls=poller.requests if poller is not None else 0,
            poll_failures=poller.failures if poller is not None else 0,
        )


# --- the report ---------------------------------------------------------------------


def _figures(rate: float, cpu_ms: float, sentinel_ms: float) -> str:
    return (
        f"{rate:,.0f} dispatch→conclude cycles/s, {cpu_ms:.2f} CPU ms/cycle, "
        f"sentinel CPU {sentinel_ms:.2f} ms/job"
    )


def _ratio(on: float, off: float) -> float:
    return on / off if off > 0 else float("nan")


def report_compare(what: str, off: list[Result], on: list[Result]) -> None:
    """The on/off line of ``--compare``: throughput (paired runs) and the two CPU figures."""
    pairs = [_ratio(b.rate, a.rate) for a, b in zip(off, on, strict=True)]
    ratio = statistics.median(pairs)
    of_medians = _ratio(
        statistics.median(r.rate for r in on), statistics.median(r.rate for r in off)
    )
    cpu = _ratio(
        statistics.median(r.cpu_ms_per_cycle for r in on),
        statistics.median(r.cpu_ms_per_cycle for r in off),
    )
    sentinel = _ratio(
        statistics.median(r.sentinel_cpu_ms_per_job for r in on),
        statistics.median(r.sentinel_cpu_ms_per_job for r in off),
    )
    names = {"keys": "keyed / keyless", "http": "dashboard on / off"}
    print(
        f"{names[what]}: throughput {ratio:.3f} (median of {len(pairs)} pairs: "
        f"{', '.join(f'{r:.2f}' for r in pairs)}; {(ratio - 1) * 100:+.1f} %; "
        f"ratio of the medians {of_medians:.3f}), CPU ms/cycle {cpu:.3f}x, "
        f"sentinel CPU ms/job {sentinel:.3f}x ({COMPARE_GOALS[what]})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4, help="slots per worker")
    parser.add_argument("--repeat", type=int, default=1, help="runs (pairs); the median is printed")
    parser.add_argument("--keys", action="store_true", help="CURVE keys on every socket")
    parser.add_argument(
        "--http", action="store_true", help="run the dashboard and poll it during each run"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.5, help="seconds between dashboard polls"
    )
    parser.add_argument(
        "--compare",
        choices=sorted(COMPARE_GOALS),
        help="each repeat: a run without, then one with keys / the polled dashboard",
    )
    # worker mode (what worker_argv runs)
    parser.add_argument(
        "--prefetch", type=int, help="jobs each worker holds beyond its slots (worker --prefetch)"
    )
    parser.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--connect", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", help=argparse.SUPPRESS)
    parser.add_argument("--keys-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.as_worker:
        return worker_main(args)
    if args.prefetch is not None:
        PREFETCH[:] = [args.prefetch]
    if args.compare and getattr(args, args.compare):
        parser.error(f"--compare {args.compare} already switches --{args.compare} on and off")
    if args.jobs < 2 or args.workers < 1 or args.slots < 1 or args.repeat < 1:
        parser.error("--jobs needs at least 2, --workers, --slots and --repeat at least 1")
    fixed = Mode(keys=args.keys, http=args.http)
    if args.compare:
        modes = [
            dataclasses.replace(fixed, **{args.compare: False}),
            dataclasses.replace(fixed, **{args.compare: True}),
        ]
    else:
        modes = [fixed]
    results: dict[Mode, list[Result]] = {mode: [] for mode in modes}
    for i in range(args.repeat):
        for mode in modes:  # alternating: a noisy moment hurts both alike
            result = run_once(args.jobs, args.workers, args.slots, mode, poll_s=args.poll_interval)
            results[mode].append(result)
            polled = (
                f"; dashboard polled: {result.polls} requests, {result.poll_failures} failed"
                if mode.http
                else ""
            )
            print(
                f"run {i + 1} ({mode.label(args.poll_interval)}): "
                f"{result.rate:,.0f} cycles/s, {result.cpu_ms_per_cycle:.2f} CPU ms/cycle, "
                f"sentinel CPU {result.sentinel_cpu_ms_per_job:.2f} ms/job{polled}",
                flush=True,
            )
    for mode, runs in results.items():
        median = statistics.median(r.rate for r in runs)
        figures = _figures(
            median,
            statistics.median(r.cpu_ms_per_cycle for r in runs),
            statistics.median(r.sentinel_cpu_ms_per_job for r in runs),
        )
        print(
            f"control plane ({mode.label(args.poll_interval)}): {figures} "
            f"({args.jobs} jobs, {args.workers} workers x {args.slots} slots; "
            f"goal {GOAL_PER_S:,}/s, {median / GOAL_PER_S:.2f}x of it)"
        )
    if args.compare:
        report_compare(args.compare, *results.values())
    return 0


if __name__ == "__main__":
    sys.exit(main())
