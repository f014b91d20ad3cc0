"""What ``scan`` costs on a folder of many small files (issue 11's Speed).

Usage: ``python tools/bench_scan.py [--files 10000] [--repeat 3] [--src PATH ...]``

Generates ``--files`` small CSVs in one source folder, publishes a plugin whose
pattern matches them, and times the real command (``python -m casparian_trio
scan``, a fresh process each time, as a user runs it), median of ``--repeat``:

- first scan: every file new (hashed, recorded, one job each);
- again, nothing changed (the common case: stat only, no hashing);
- after ``touch`` on every file (same content: each is hashed again, none gets
  a new version or a job);
- one file's content changed: one new version, one job.

``--src`` runs the same on other checkouts' ``src`` folders (e.g. a worktree of
an older commit) in the same run, so the figures compare; ratios are against
the first. Never imported by src/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = """
MANIFEST = {"name": "bench_scan", "version": "1", "pattern": "*.csv"}


class Handler:
    def execute(self, file_path):
        return None
"""


CPU: dict[str, list[float]] = {}  # the last run's CPU seconds (user + system), per src


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(src: Path, *argv: str) -> tuple[float, str]:
    """(wall seconds, stdout) of one command; its CPU seconds go to ``CPU[str(src)]``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "casparian_trio", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    CPU.setdefault(str(src), []).append(_children_cpu() - cpu)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with {src}: {done.stderr.strip()}")
    return elapsed, done.stdout


def bench(src: Path, files: int, repeat: int, work: Path) -> dict[str, float]:
    folder = work / "inputs"
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"f{i:06d}.csv").write_text(f"id,val\n{i},{i * 2}\n")
    db = str(work / "casparian.db")
    plugin = work / "bench_scan.py"
    plugin.write_text(PLUGIN)
    run(src, "init-db", "--db", db)
    run(src, "publish", str(plugin), "--db", db)
    run(src, "source", "add", str(folder), "--db", db)
    figures: dict[str, float] = {}
    figures["first"], out = run(src, "scan", "--db", db, "--json")
    assert json.loads(out)["queued"] == files, out
    figures["first_cpu"] = CPU[str(src)][-1]
    figures["unchanged"] = statistics.median(run(src, "scan", "--db", db)[0] for _ in range(repeat))
    figures["unchanged_cpu"] = statistics.median(CPU[str(src)][-repeat:])
    touched = []
    for _ in range(repeat):
        now = time.time() + len(touched) + 1
        for path in folder.iterdir():
            os.utime(path, (now, now))
        touched.append(run(src, "scan", "--db", db)[0])
    figures["touched"] = statistics.median(touched)
    figures["touched_cpu"] = statistics.median(CPU[str(src)][-repeat:])
    (folder / "f000000.csv").write_text("id,val\n0,1\n1,2\n")
    figures["one_changed"], out = run(src, "scan", "--db", db, "--json")
    assert json.loads(out)["queued"] == 1, out
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--src",
        action="append",
        type=Path,
        help="a src folder to measure (repeatable; default: this checkout's)",
    )
    args = parser.parse_args()
    sources = args.src or [Path(__file__).resolve().parents[1] / "src"]
    results = {}
    for src in sources:
        with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
            results[str(src)] = bench(src, args.files, args.repeat, Path(tmp))
    base = results[str(sources[0])]
    print(
        f"scan of {args.files:,} small files (seconds, median of {args.repeat}; a fresh "
        "process each; cpu = user + system of the process, steadier on a busy machine)"
    )
    print(
        f"{'src':40} {'first':>7} {'unchanged':>10} {'(cpu)':>6} {'touched':>8} {'(cpu)':>6} "
        f"{'1 changed':>10}"
    )
    for src, fig in results.items():
        print(
            f"{src[-40:]:40} {fig['first']:7.2f} {fig['unchanged']:10.2f} "
            f"{fig['unchanged_cpu']:6.2f} {fig['touched']:8.2f} {fig['touched_cpu']:6.2f} "
            f"{fig['one_changed']:10.2f}"
        )
        if fig is not base:
            ratios = "  ".join(f"{k} {fig[k] / base[k]:.2f}x" for k in fig)
            print(f"{'':40} vs first src: {ratios}")


if __name__ == "__main__":
    main()
