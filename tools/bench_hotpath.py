"""Where a small file's job goes in the worker: the executor alone, one reused guest.

``--files`` CSVs of ``--rows`` rows each run one after another through a real
``BridgeExecutor`` (a real guest process, reused; real Parquet output; the
input check and the output-identity promote as the worker does them), with no
Sentinel and no ZeroMQ. Prints the worker's CPU and wall time per job (the
guest's CPU is its own process's and not counted), then a second pass under
``cProfile`` that splits the job into its phases (cumulative time of the
executor's phase functions; the profiler's overhead inflates every figure, so
read the shares, not the milliseconds). A printer only: no assertions.

Usage: python tools/bench_hotpath.py [--files 500] [--rows 50]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import trio

from casparian_trio.bridge import BridgeExecutor
from casparian_trio.envs import EnvManager
from casparian_trio.protocol.messages import Dispatch, SinkConfig

PLUGIN = """
import pyarrow.csv as pacsv

class Handler:
    def execute(self, file_path):
        return pacsv.read_csv(file_path)
"""

HOST_FILE = str(Path("casparian_trio", "bridge", "host.py"))
# (label, function name in bridge/host.py as cProfile reports it) in the order a job runs them.
PHASES = [
    ("input check, before the guest and before the promote", "_check_input"),
    ("sinks opened (URI confinement, conformers)", "_open_sinks"),
    ("sinks prepared (stale check, contract read)", "_prepare_sinks"),
    ("job spec to the guest (a send that wakes the guest)", "_send_all"),
    ("guest run: stream read, decode, conform, buffer", "_stream_while_alive"),
    ("commit: Parquet encode, contract, rename", "_commit_sinks"),
]


def make_inputs(root: Path, files: int, rows: int) -> list[Path]:
    root.mkdir(parents=True)
    paths = []
    for i in range(files):
        path = root / f"f{i:05d}.csv"
        body = "".join(f"{i * rows + r},item_{r},{r * 1.5}\n" for r in range(rows))
        path.write_text("id,name,value\n" + body)
        paths.append(path)
    return paths


def dispatch(i: int, path: Path) -> Dispatch:
    st = path.stat()
    return Dispatch(
        plugin_name="hotpath",
        file_path=str(path),
        sinks=(SinkConfig("output", "parquet://hotpath"),),
        file_version_id=i + 1,
        env_hash="system",
        source_code=PLUGIN,
        artifact_hash="hotpath",
        source_root=str(path.parent),
        file_size=st.st_size,
        file_mtime=st.st_mtime,
        source_file_id=i + 1,
        source_hash="0" * 64,
        parser_version="hotpath 1.0.0",
    )


async def run_jobs(executor: BridgeExecutor, paths: list[Path], first_id: int) -> None:
    for i, path in enumerate(paths):
        receipt = await executor.run(first_id + i, dispatch(first_id + i, path))
        if receipt.status != "SUCCESS":
            raise SystemExit(f"job {first_id + i} {receipt.status}: {receipt.error_message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--rows", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hotpath-") as tmp:
        root = Path(tmp)
        paths = make_inputs(root / "in", args.files, args.rows)
        executor = BridgeExecutor(
            output_root=root / "out", envs=EnvManager(root / "envs"), work_root=root / "work"
        )
        profile = cProfile.Profile()

        async def body() -> tuple[float, float]:
            async with executor:
                executor.prewarm("system")
                await run_jobs(executor, paths[:5], 1_000_000)  # the guest loads the plugin
                cpu, wall = time.process_time(), time.perf_counter()
                await run_jobs(executor, paths, 1)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                profile.enable()
                await run_jobs(executor, paths, 2_000_000)  # the same files: replacements
                profile.disable()
            return cpu, wall

        cpu, wall = trio.run(body)
    n = args.files
    print(f"{n} jobs of {args.rows} rows through one reused guest (executor only, no Sentinel):")
    print(f"  worker CPU per job {cpu / n * 1e3:.2f} ms, wall per job {wall / n * 1e3:.2f} ms")
    stats = pstats.Stats(profile)
    cumulative: dict[str, float] = {}
    for (file, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        if file.endswith(HOST_FILE):  # the executor's own functions only
            cumulative[name] = cumulative.get(name, 0.0) + row[3]
    total = cumulative.get("run", 0.0)
    print("  phases under cProfile (share of BridgeExecutor.run; profiler overhead included):")
    for label, func in PHASES:
        share = cumulative.get(func, 0.0)
        print(f"    {share / n * 1e3:6.2f} ms  {share / total:5.1%}  {label}")
    rest = total - sum(cumulative.get(func, 0.0) for _, func in PHASES)
    print(
        f"    {rest / n * 1e3:6.2f} ms  {rest / total:5.1%}  the rest (tasks, nurseries, receipt)"
    )


if __name__ == "__main__":
    main()
