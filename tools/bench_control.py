"""Benchmark the control plane: dispatch → conclude cycles/s through a real Sentinel.

A real SQLite file (made by ``init-db``), the real Sentinel service launched as
``python -m casparian_trio sentinel`` on tcp, and real workers (the real
``Worker`` service on a real DEALER socket, each its own process) whose
executor concludes at once: no guest, no file is read, nothing is written. So
every job costs exactly the control plane: claim (SQLite), DISPATCH (ZeroMQ),
CONCLUDE (ZeroMQ), complete (SQLite), and the next claim.

The figure is taken from the database: the ``updated_at`` of the first and
last completed job, so start-up (interpreters, connects) is not counted.
A printer only: no assertions.

Usage:
    python tools/bench_control.py [--jobs 5000] [--workers 2] [--slots 4] [--repeat 1]

Structure (for options added later): ``sentinel_argv`` and ``worker_argv``
build the two command lines, ``start_sentinel`` / ``start_worker`` launch and
wait for them, ``run_once`` is one measured run.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLUGIN = "bench_control"
# A hang guard for each wait: start-up, a run's last conclusion.
HANG_S = 120.0


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
    """Run one Worker (real DEALER over tcp) until SIGTERM/SIGINT."""
    import trio

    from casparian_trio.cli.services import _Drain, signal_task, stop_signal_receiver
    from casparian_trio.config import WorkerConfig
    from casparian_trio.transport import open_dealer
    from casparian_trio.worker import Worker

    logging.basicConfig(level=logging.WARNING)  # a worker logs every job at INFO
    config = WorkerConfig(connect=args.connect, worker_id=args.worker_id, concurrency=args.slots)

    async def main() -> None:
        drain = _Drain()
        with stop_signal_receiver() as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(signal_task, signals, drain.on_signal)
                with open_dealer(config.connect, identity=config.identity) as channel:
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(root), "PYTHONUNBUFFERED": "1"}
    for key in ("CASPARIAN_DB", "CASPARIAN_BIND", "CASPARIAN_CONNECT", "CASPARIAN_OUTPUT"):
        env.pop(key, None)
    return env


def _spawn(argv: list[str], root: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = root / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            argv, cwd=root, env=_env(root), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    return popen, log


def _wait_for(log: Path, popen: subprocess.Popen[bytes], text: str) -> None:
    deadline = time.monotonic() + HANG_S
    while text not in log.read_text(errors="replace"):
        if popen.poll() is not None:
            raise SystemExit(f"{log.name}: exited {popen.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{log.name}: no {text!r} within {HANG_S:g} s")
        time.sleep(0.02)


def start_sentinel(root: Path, db: Path, address: str) -> subprocess.Popen[bytes]:
    popen, log = _spawn(sentinel_argv(db, address), root, "sentinel")
    _wait_for(log, popen, "sentinel serving")
    return popen


def start_worker(root: Path, address: str, worker_id: str, slots: int) -> subprocess.Popen[bytes]:
    popen, _log = _spawn(worker_argv(address, worker_id, slots), root, f"worker-{worker_id}")
    return popen


def init_db(db: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "casparian_trio", "init-db", "--db", str(db)],
        check=True,
        capture_output=True,
        env=_env(db.parent),
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


def _count_unfinished(db_path: Path) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        (n,) = conn.execute(
            "SELECT count(*) FROM cf_processing_queue"
            " WHERE status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', 'SKIPPED', 'SUPERSEDED')"
        ).fetchone()
        return int(n)
    finally:
        conn.close()


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_once(jobs: int, workers: int, slots: int) -> float:
    """One measured run; returns dispatch → conclude cycles/s."""
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        root = Path(tmp)
        db = root / "casparian.db"
        init_db(db)
        seed(db, root, jobs)
        address = f"tcp://127.0.0.1:{free_port()}"
        procs = [start_sentinel(root, db, address)]
        try:
            procs += [start_worker(root, address, f"w{i}", slots) for i in range(workers)]
            deadline = time.monotonic() + HANG_S
            while _count_unfinished(db) > 0:
                if time.monotonic() > deadline:
                    raise SystemExit(f"jobs still unfinished after {HANG_S:g} s")
                if any(p.poll() is not None for p in procs):
                    logs = "\n".join(
                        f"--- {p.name}\n{p.read_text()[-2000:]}" for p in root.glob("*.log")
                    )
                    raise SystemExit(f"a process exited early:\n{logs}")
                time.sleep(0.05)
        finally:
            _stop(procs[1:])
            _stop(procs[:1])
        times = completed_times(db)
        if len(times) < 2:
            raise SystemExit(f"only {len(times)} job(s) completed")
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4, help="slots per worker")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median is printed")
    # worker mode (what worker_argv runs)
    parser.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--connect", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.as_worker:
        return worker_main(args)
    figures = []
    for i in range(args.repeat):
        rate = run_once(args.jobs, args.workers, args.slots)
        figures.append(rate)
        print(f"run {i + 1}: {rate:,.0f} cycles/s", flush=True)
    median = statistics.median(figures)
    print(
        f"control plane: {median:,.0f} dispatch→conclude cycles/s "
        f"({args.jobs} jobs, {args.workers} workers x {args.slots} slots; goal 2,000/s, "
        f"{median / 2000:.2f}x of it)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
