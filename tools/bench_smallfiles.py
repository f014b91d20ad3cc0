"""Benchmark a directory of small files: this system against a plain task queue (Huey).

One run, the same generated files for every system: ``--files`` CSVs of
``--rows`` rows each, converted to Parquet by

1. casparian-trio with default settings: a real Sentinel and ``--workers``
   real workers (``python -m casparian_trio sentinel|worker``, one slot each),
   the plugin published on the system env (guests reused);
2. the same with the plugin's MANIFEST ``reuse_guest: False`` (one guest
   process per job);
3. Huey (``SqliteHuey``, a consumer with ``--workers`` worker processes), the
   task converting the file in-process with pyarrow: no isolation at all.

Start-up is not measured for either system, and both are treated alike: Huey's
consumer gets ``STARTUP_S`` before the first task is enqueued, and so do the
casparian-trio workers once each has logged that the Sentinel answered (their
guests start meanwhile); then the jobs are queued (one transaction, as a
``scan`` would). jobs/s for casparian-trio runs from the first job's claim to
the last one's conclusion (from the database); for Huey from the first
enqueue to the last result. Every output is checked (row count and
values per file) before a figure is printed. A printer only: no assertions.

Usage: python tools/bench_smallfiles.py [--files 300] [--rows 50] [--workers 2] [--repeat 1]
(``pip install -e .[bench]`` installs huey)
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from _procs import child_env, free_port, spawn, stop, wait_for

HANG_S = 600.0
# Each system's workers are up this long before the first job is queued.
STARTUP_S = 1.0
PLUGIN_SOURCE = """
import pyarrow.csv as pacsv

MANIFEST = {MANIFEST}


class Handler:
    def execute(self, file_path):
        return pacsv.read_csv(file_path)
"""

HUEY_TASKS = """
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from huey import SqliteHuey

huey = SqliteHuey(filename={db!r})


@huey.task()
def convert(src, dst):
    table = pacsv.read_csv(src)
    pq.write_table(table, dst)
    return table.num_rows
"""


# --- inputs and checks -----------------------------------------------------------------


def make_files(root: Path, files: int, rows: int) -> list[Path]:
    root.mkdir(parents=True)
    paths = []
    for i in range(files):
        path = root / f"f{i:05d}.csv"
        lines = ["id,name,value"] + [f"{i * rows + r},item_{r},{r * 1.5}" for r in range(rows)]
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def check_outputs(parquet_files: list[Path], files: int, rows: int) -> None:
    """Every input's rows exactly once, with the right values (SystemExit otherwise)."""
    if not parquet_files:
        raise SystemExit("no output files")
    table = pa.concat_tables([pq.read_table(p, columns=["id", "value"]) for p in parquet_files])
    ids = sorted(table.column("id").to_pylist())
    if ids != list(range(files * rows)):
        raise SystemExit(f"outputs hold {len(ids)} rows, not the {files * rows} expected once each")
    values = dict(
        zip(table.column("id").to_pylist(), table.column("value").to_pylist(), strict=True)
    )
    if any(values[i] != (i % rows) * 1.5 for i in range(0, files * rows, 97)):
        raise SystemExit("output values differ from the inputs")


# --- casparian-trio --------------------------------------------------------------------------


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    stop(procs, grace_s=30)


def seed(
    db_path: Path,
    inputs: list[Path],
    plugin: str,
    manifest: dict[str, object],
    source: str | None = None,
) -> None:
    """Publish ``source`` (default: the CSV plugin) on env 'system'; queue one job per input."""
    publish(db_path, plugin, manifest, source)
    enqueue(db_path, inputs, plugin)


def publish(
    db_path: Path, plugin: str, manifest: dict[str, object], source: str | None = None
) -> None:
    """Publish ``source`` (default: the CSV plugin) as ``plugin`` 1.0.0 on env 'system'."""
    from casparian_trio.store import catalog, open_database

    if source is None:
        source = PLUGIN_SOURCE.replace("{MANIFEST}", repr(manifest))
    source_hash = hashlib.sha256(source.encode()).hexdigest()
    db = open_database(db_path)

    def fill(conn: sqlite3.Connection) -> None:
        catalog.publish_manifest(
            conn,
            plugin_name=plugin,
            version="1.0.0",
            source_code=source,
            source_hash=source_hash,
            env_hash="system",
            artifact_hash=source_hash,
            manifest={"name": plugin, "version": "1.0.0", **manifest},
            now=time.time(),
        )

    try:
        db.run_sync(fill)
    finally:
        db.close()


def enqueue(db_path: Path, inputs: list[Path], plugin: str) -> None:
    """Record every input and queue one job per input for ``plugin``, in one transaction."""
    from casparian_trio.store import catalog, open_database, queue

    now = time.time()
    db = open_database(db_path)

    def fill(conn: sqlite3.Connection) -> None:
        root_id, _ = catalog.add_source_root(conn, str(inputs[0].parent))
        for path in inputs:
            stat = path.stat()
            version_id, _ = catalog.record_file(
                conn,
                source_root_id=root_id,
                rel_path=path.name,
                size=stat.st_size,
                mtime=stat.st_mtime,
                content_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
                now=now,
            )
            queue.enqueue(conn, version_id, plugin, now=now, max_attempts=1)

    try:
        db.run_sync(fill)
    finally:
        db.close()


def _progress(db_path: Path) -> tuple[int, int, list[tuple[float, float]]]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        done = conn.execute(
            "SELECT count(*) FROM cf_processing_queue WHERE status = 'COMPLETED'"
        ).fetchone()[0]
        bad = conn.execute(
            "SELECT count(*) FROM cf_processing_queue WHERE status IN ('FAILED', 'CANCELLED', 'SKIPPED', 'SUPERSEDED')"
        ).fetchone()[0]
        spans = conn.execute(
            "SELECT started_at, updated_at FROM cf_processing_queue WHERE status = 'COMPLETED'"
            " ORDER BY id"
        ).fetchall()
        return int(done), int(bad), [(float(a), float(b)) for a, b in spans]
    finally:
        conn.close()


def run_casparian(
    work: Path,
    inputs: list[Path],
    workers: int,
    *,
    reuse: bool,
    source: str | None = None,
    check: bool = True,
) -> float:
    """jobs/s of one casparian-trio run over ``inputs`` (``source``: another plugin)."""
    root = work / ("casparian-reuse" if reuse else "casparian-single")
    root.mkdir()
    db = root / "casparian.db"
    subprocess.run(
        [sys.executable, "-m", "casparian_trio", "init-db", "--db", str(db)],
        check=True,
        capture_output=True,
        env=child_env(root),
    )
    plugin = "smallfiles"
    publish(db, plugin, {} if reuse else {"reuse_guest": False}, source)
    address = f"tcp://127.0.0.1:{free_port()}"
    sentinel, log = spawn(
        [sys.executable, "-m", "casparian_trio", "sentinel", "--db", str(db), "--bind", address],
        root,
        "sentinel",
    )
    procs = [sentinel]
    logs: list[Path] = []
    try:
        wait_for(log, sentinel, "sentinel serving", hang_s=HANG_S)
        for i in range(workers):
            worker_argv = [
                sys.executable,
                "-m",
                "casparian_trio",
                "worker",
                "--connect",
                address,
                "--output",
                str(root / "output"),
                "--worker-id",
                f"w{i}",
                "--envs-root",
                str(root / "envs"),
                "--allow-system-env",
                *WORKER_ARGS,
            ]
            procs.append(spawn(worker_argv, root, f"worker-{i}")[0])
            logs.append(root / f"worker-{i}.log")
        for proc, worker_log in zip(procs[1:], logs, strict=True):
            wait_for(worker_log, proc, "the sentinel answered", hang_s=HANG_S)
        time.sleep(STARTUP_S)  # as Huey's consumer gets: the workers' guests start
        enqueue(db, inputs, plugin)
        deadline = time.monotonic() + HANG_S
        while True:
            done, bad, spans = _progress(db)
            if bad:
                raise SystemExit(f"{bad} job(s) failed, skipped or superseded; see {root}/*.log")
            if done == len(inputs):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done}/{len(inputs)} jobs done after {HANG_S:g} s")
            time.sleep(0.05)
    finally:
        _stop(procs[1:])
        _stop(procs[:1])
    if check:
        check_outputs(sorted((root / "output" / plugin).rglob("*.parquet")), len(inputs), ROWS[0])
    OUTPUTS[:] = sorted((root / "output" / plugin).rglob("*.parquet"))
    SPANS[:] = spans
    first = min(a for a, _ in spans)
    last = max(b for _, b in spans)
    return len(inputs) / (last - first)


# --- Huey ------------------------------------------------------------------------------------


def run_huey(work: Path, inputs: list[Path], workers: int) -> float:
    """jobs/s of Huey (SqliteHuey, process workers) converting ``inputs`` in-process."""
    root = work / "huey"
    out = root / "output"
    out.mkdir(parents=True)
    (root / "bench_tasks.py").write_text(HUEY_TASKS.format(db=str(root / "huey.db")))
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, '.'); from bench_tasks import huey\n"
            "from huey.consumer import Consumer\n"
            f"Consumer(huey, workers={workers}, worker_type='process', periodic=False,"
            " initial_delay=0.001, max_delay=0.01, backoff=1.05).run()\n",
        ],
        cwd=root,
        env=child_env(root),
        stdout=subprocess.DEVNULL,
        stderr=open(root / "consumer.log", "wb"),  # noqa: SIM115 (closed with the process)
    )
    try:
        sys.path.insert(0, str(root))
        import bench_tasks  # type: ignore[import-not-found]

        time.sleep(STARTUP_S)  # the consumer's processes start (not measured either way)
        start = time.perf_counter()
        results = [bench_tasks.convert(str(p), str(out / f"{p.stem}.parquet")) for p in inputs]
        deadline = time.monotonic() + HANG_S
        for result in results:
            while result.get() is None:
                if time.monotonic() > deadline:
                    raise SystemExit("huey did not finish")
                time.sleep(0.002)
        elapsed = time.perf_counter() - start
    finally:
        consumer.terminate()
        consumer.wait(30)
        sys.path.remove(str(root))
        sys.modules.pop("bench_tasks", None)
    check_outputs(sorted(out.glob("*.parquet")), len(inputs), ROWS[0])
    return len(inputs) / elapsed


ROWS = [50]
WORKER_ARGS: list[str] = []  # --worker-arg: extra worker options (default: none)
OUTPUTS: list[Path] = []  # the last casparian run's Parquet files
SPANS: list[tuple[float, float]] = []  # and its jobs' (claimed, concluded), in queue order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs; medians are printed")
    parser.add_argument("--skip-single", action="store_true", help="skip reuse_guest: False")
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra option for every worker, e.g. --worker-arg=--concurrency=2 (repeatable)",
    )
    args = parser.parse_args(argv)
    ROWS[0] = args.rows
    WORKER_ARGS[:] = args.worker_arg
    figures: dict[str, list[float]] = {"reuse": [], "single": [], "huey": []}
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-smallfiles-") as tmp:
            work = Path(tmp)
            inputs = make_files(work / "inputs", args.files, args.rows)
            figures["reuse"].append(run_casparian(work, inputs, args.workers, reuse=True))
            if not args.skip_single:
                figures["single"].append(run_casparian(work, inputs, args.workers, reuse=False))
            figures["huey"].append(run_huey(work, inputs, args.workers))
        print(
            f"run {i + 1}: "
            + ", ".join(f"{k} {v[-1]:.1f} jobs/s" for k, v in figures.items() if v),
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in figures.items() if v}
    huey = med["huey"]
    print(
        f"{args.files} CSVs x {args.rows} rows, {args.workers} workers (median of {args.repeat}):"
    )
    print(f"  casparian-trio (default, reused guests): {med['reuse']:8.1f} jobs/s")
    if "single" in med:
        print(f"  casparian-trio (reuse_guest: False):     {med['single']:8.1f} jobs/s")
    print(f"  huey in-process (SqliteHuey, processes): {huey:8.1f} jobs/s")
    print(f"  ratio default / huey: {med['reuse'] / huey:.2f}x (target >= 1.0x, must >= 0.5x)")
    if "single" in med:
        print(f"  ratio single-use / huey: {med['single'] / huey:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
