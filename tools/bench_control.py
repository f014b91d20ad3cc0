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
                                  [--keys | --compare]

``--keys`` runs the same with CURVE on every socket (``keys init`` + one worker
key per worker, made in the run's temporary folder); ``--compare`` alternates
keyless and keyed runs and prints both medians and their ratio.

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
    from casparian_trio.transport.keys import client_keys

    keys_dir = Path(args.keys_dir) if args.keys_dir else None
    config = WorkerConfig(
        connect=args.connect,
        worker_id=args.worker_id,
        concurrency=args.slots,
        keys=keys_dir,
        key=args.worker_id if keys_dir else None,
        allow_system_env=True,  # the bench plugin has no lockfile
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


def start_sentinel(
    root: Path, db: Path, address: str, keys: Path | None = None
) -> subprocess.Popen[bytes]:
    extra = ["--keys", str(keys)] if keys is not None else []
    popen, log = _spawn(sentinel_argv(db, address, extra), root, "sentinel")
    _wait_for(log, popen, "sentinel serving")
    return popen


def start_worker(
    root: Path, address: str, worker_id: str, slots: int, keys: Path | None = None
) -> subprocess.Popen[bytes]:
    extra = ["--keys-dir", str(keys)] if keys is not None else []
    argv = worker_argv(address, worker_id, slots, extra)
    popen, _log = _spawn(argv, root, f"worker-{worker_id}")
    return popen


def make_keys(root: Path, workers: int) -> Path:
    """``keys init`` and one worker key per worker, through the command line."""
    keys = root / "keys"
    base = [sys.executable, "-m", "casparian_trio", "keys"]
    subprocess.run([*base, "init", str(keys)], check=True, capture_output=True)
    for i in range(workers):
        add = [*base, "add", f"w{i}", "--role", "worker", "--dir", str(keys)]
        subprocess.run(add, check=True, capture_output=True)
    return keys


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


def _cpu_s(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc)."""
    total = 0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _completed(db_path: Path) -> int:
    return len(completed_times(db_path))


def run_once(jobs: int, workers: int, slots: int, *, keyed: bool = False) -> tuple[float, float]:
    """One measured run (``keyed``: CURVE on every socket).

    Returns:
        (dispatch → conclude cycles/s, CPU ms per cycle of the Sentinel and workers
        together, from the first completion to the last: robust to a busy machine).
    """
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        root = Path(tmp)
        db = root / "casparian.db"
        init_db(db)
        seed(db, root, jobs)
        address = f"tcp://127.0.0.1:{free_port()}"
        keys = make_keys(root, workers) if keyed else None
        procs = [start_sentinel(root, db, address, keys)]
        try:
            procs += [start_worker(root, address, f"w{i}", slots, keys) for i in range(workers)]
            deadline = time.monotonic() + HANG_S
            cpu_start: tuple[int, float] | None = None
            while _count_unfinished(db) > 0:
                if cpu_start is None and (done := _completed(db)) > 0:
                    cpu_start = (done, _cpu_s(procs))
                if time.monotonic() > deadline:
                    raise SystemExit(f"jobs still unfinished after {HANG_S:g} s")
                if any(p.poll() is not None for p in procs):
                    logs = "\n".join(
                        f"--- {p.name}\n{p.read_text()[-2000:]}" for p in root.glob("*.log")
                    )
                    raise SystemExit(f"a process exited early:\n{logs}")
                time.sleep(0.05)
            cpu_end = _cpu_s(procs)
        finally:
            _stop(procs[1:])
            _stop(procs[:1])
        times = completed_times(db)
        if len(times) < 2:
            raise SystemExit(f"only {len(times)} job(s) completed")
        first, cpu_first = cpu_start if cpu_start is not None else (len(times), cpu_end)
        cpu_ms = 1000 * (cpu_end - cpu_first) / max(len(times) - first, 1)
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9), cpu_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4, help="slots per worker")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median is printed")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--keys", action="store_true", help="CURVE keys on every socket")
    mode.add_argument("--compare", action="store_true", help="keyless and keyed, alternating")
    # worker mode (what worker_argv runs)
    parser.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--connect", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", help=argparse.SUPPRESS)
    parser.add_argument("--keys-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.as_worker:
        return worker_main(args)
    modes = [False, True] if args.compare else [bool(args.keys)]
    figures: dict[bool, list[float]] = {mode: [] for mode in modes}
    cpu: dict[bool, list[float]] = {mode: [] for mode in modes}
    for i in range(args.repeat):
        for keyed in modes:  # alternating: a noisy moment hurts both alike
            rate, cpu_ms = run_once(args.jobs, args.workers, args.slots, keyed=keyed)
            figures[keyed].append(rate)
            cpu[keyed].append(cpu_ms)
            label = "keyed" if keyed else "keyless"
            print(
                f"run {i + 1} ({label}): {rate:,.0f} cycles/s, {cpu_ms:.2f} CPU ms/cycle",
                flush=True,
            )
    medians = {mode: statistics.median(rates) for mode, rates in figures.items()}
    cpu_medians = {mode: statistics.median(ms) for mode, ms in cpu.items()}
    for keyed, median in medians.items():
        print(
            f"control plane{' with CURVE keys' if keyed else ''}: {median:,.0f} "
            f"dispatch→conclude cycles/s, {cpu_medians[keyed]:.2f} CPU ms/cycle "
            f"({args.jobs} jobs, {args.workers} workers x {args.slots} slots; "
            f"goal 2,000/s, {median / 2000:.2f}x of it)"
        )
    if args.compare:
        ratio = medians[True] / medians[False]
        cpu_ratio = cpu_medians[False] / cpu_medians[True]
        print(
            f"keyed / keyless: {ratio:.2f} by cycles/s, {cpu_ratio:.2f} by CPU per cycle "
            "(issue 13 goal: at least 0.80)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
