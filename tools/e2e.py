"""The seed's Phase 4 end-to-end flow, with real processes.

1. set up a SQLite database from the original system's Phase 4 schema and data
   (tests/fixtures/seed_phase4.sql) and upgrade it in place (``init-db``);
2. start a Sentinel (ROUTER on tcp://127.0.0.1:PORT) and a Worker (DEALER) as
   separate OS processes;
3. wait for the queued job: IDENTIFY → DISPATCH → plugin run → Parquet →
   CONCLUDE → COMPLETED;
4. check the Parquet file holds the seed's three rows, then stop both
   processes with SIGINT and check they exit 0.

Usage: python tools/e2e.py [--port 15557] [--keep DIR]
Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "seed_phase4.sql"
INPUT_CSV = "id,value\n1,10.5\n2,20.3\n3,30.1\n"
EXPECTED = {"id": [1, 2, 3], "value": [10.5, 20.3, 30.1]}
JOB_TIMEOUT = 60.0


def step(text: str) -> None:
    print(f"[e2e] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_database(work: Path) -> Path:
    data = work / "data"
    data.mkdir()
    (data / "test_input.csv").write_text(INPUT_CSV)
    db = work / "phase4.db"
    script = FIXTURE.read_text().replace("{{DATA_DIR}}", str(data))
    with sqlite3.connect(db) as conn:
        conn.executescript(script)
    conn.close()
    return db


def cli(*args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "casparian_trio", *args], stdout=out, stderr=out)


def job_row(db: Path) -> tuple[str, int, str | None]:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT status, attempt, error_message FROM cf_processing_queue WHERE id = 1"
        ).fetchone()
    conn.close()
    return row[0], row[1], row[2]


def wait_completed(db: Path, procs: list[subprocess.Popen[bytes]]) -> tuple[str, int, str | None]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        row = job_row(db)
        if row[0] in ("COMPLETED", "FAILED", "CANCELLED"):
            return row
        if any(p.poll() is not None for p in procs):
            raise SystemExit("[e2e] FAIL: a process exited early")
        time.sleep(0.1)
    raise SystemExit(f"[e2e] FAIL: job not finished after {JOB_TIMEOUT:g} s: {job_row(db)}")


def check_parquet(output: Path) -> Path:
    import pyarrow.parquet as pq

    files = sorted(p for p in output.rglob("*.parquet") if p.is_file())
    if len(files) != 1:
        raise SystemExit(f"[e2e] FAIL: expected one Parquet file under {output}, found {files}")
    table = pq.read_table(files[0])
    data = table.select(["id", "value"]).to_pydict()
    if data != EXPECTED:
        raise SystemExit(f"[e2e] FAIL: Parquet rows {data} != {EXPECTED}")
    lineage = set(table.column("_cf_job_id").to_pylist())
    if lineage != {1}:
        raise SystemExit(f"[e2e] FAIL: lineage _cf_job_id {lineage} != {{1}}")
    return files[0]


def stop(proc: subprocess.Popen[bytes], name: str) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"[e2e] FAIL: {name} did not stop within 15 s of SIGINT") from None
    if code != 0:
        raise SystemExit(f"[e2e] FAIL: {name} exited {code} on SIGINT")
    step(f"{name} stopped on SIGINT, exit 0")


def run(work: Path, port: int) -> None:
    db = build_database(work)
    step(f"database from the seed's Phase 4 schema: {db}")
    subprocess.run([sys.executable, "-m", "casparian_trio", "init-db", "--db", str(db)], check=True)
    address = f"tcp://127.0.0.1:{port}"
    output = work / "output"
    sentinel = cli("sentinel", "--db", str(db), "--bind", address, log=work / "sentinel.log")
    worker = cli(
        "worker", "--connect", address, "--output", str(output), "--worker-id", "phase4-worker",
        "--allow-system-env", log=work / "worker.log",
    )  # fmt: skip
    step(f"sentinel (pid {sentinel.pid}) on {address}; worker (pid {worker.pid})")
    try:
        status, attempt, error = wait_completed(db, [sentinel, worker])
        if status != "COMPLETED":
            raise SystemExit(f"[e2e] FAIL: job ended {status}: {error}")
        step(f"job 1 COMPLETED (attempt {attempt})")
        step(f"Parquet with the 3 seed rows: {check_parquet(output)}")
        stop(worker, "worker")
        stop(sentinel, "sentinel")
    finally:
        for proc in (worker, sentinel):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in ("sentinel.log", "worker.log"):
            if (work / log).exists():
                print(f"--- {log}\n{(work / log).read_text()}", flush=True)
    step("PASS")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="Sentinel port (default: a free one)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    port = args.port or free_port()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        run(args.keep, port)
    else:
        with tempfile.TemporaryDirectory(prefix="casparian-e2e-") as work:
            run(Path(work), port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
