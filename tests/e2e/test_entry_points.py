"""``python -m casparian_trio sentinel|worker`` as real processes: start, serve, stop on a signal.

STYLE.md §8: run both entry points, send SIGINT, assert the exit code and that
no child process is left behind.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest
from e2e_procs import Cluster, ProcInfo, alive, all_processes, descendants

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

SEED_PLUGIN = Path(__file__).parents[1] / "fixtures" / "plugins" / "seed_plugin.py"


def orphans_of(pid: int) -> list[ProcInfo]:
    """Live processes that still name ``pid`` as their parent."""
    return [p for p in all_processes() if p.ppid == pid and p.state != "Z"]


def test_sentinel_and_worker_with_defaults_run_a_job_and_exit_0_on_sigint(
    cluster: Cluster,
) -> None:
    (job_id,) = cluster.seed_jobs("seed", SEED_PLUGIN.read_text(), {"data.csv": "x\n"})

    # Defaults: database ./casparian.db and output ./output in the working
    # directory, default heartbeat, worker id HOST-PID; only the port is ours.
    sentinel = cluster.spawn("sentinel", "sentinel", "--bind", cluster.address)
    start = sentinel.wait_for_log(r"sentinel on \S+, database \S+")
    assert cluster.address in start
    assert "casparian.db" in start
    sentinel.wait_for_log(r"sentinel serving")
    worker = cluster.spawn(
        "worker",
        "worker",
        "--connect",
        cluster.address,
        "--envs-root",
        str(cluster.root / "envs"),
        "--allow-system-env",
    )
    worker.wait_for_log(rf"worker \S+-{worker.pid} connected to {re.escape(cluster.address)}")

    done = cluster.wait_for_status(job_id, "COMPLETED", "FAILED", timeout=30)
    assert done.status == "COMPLETED", done
    table = cluster.read_output("seed")
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3]
    assert table.column("_cf_job_id").to_pylist() == [job_id] * 3

    # The job's guest was reaped; what may remain is at most two warm guests
    # (interpreter + pyarrow loaded, waiting for the next job), killed at exit.
    warm = descendants(worker.pid)
    assert len(warm) <= 2, warm
    assert all("bridge/guest.py" in p.cmdline and "casparian-guest-" in p.cmdline for p in warm), (
        warm
    )
    assert descendants(sentinel.pid) == []

    worker.send(signal.SIGINT)
    assert worker.wait() == 0
    assert re.search(r"SIGINT: draining the worker", worker.log())
    assert re.search(r"worker \S+ stopped", worker.log())

    sentinel.send(signal.SIGINT)
    assert sentinel.wait() == 0
    assert "SIGINT: stopping the sentinel" in sentinel.log()
    assert "sentinel stopped" in sentinel.log()

    for proc in (worker, sentinel):
        assert "Traceback" not in proc.log()
        assert orphans_of(proc.pid) == []
    assert not [p for p in all_processes() if p.pid in {w.pid for w in warm}], (
        "warm guests outlived the worker"
    )
    assert cluster.leftovers() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_idle_worker_and_sentinel_exit_0_on_signal(cluster: Cluster, sig: signal.Signals) -> None:
    sentinel = cluster.start_sentinel()
    worker = cluster.start_worker("w-idle")
    sentinel.wait_for_log(r"worker w-idle joined")

    worker.send(sig)
    assert worker.wait() == 0
    assert f"{sig.name}: draining the worker" in worker.log()
    assert "worker w-idle stopped" in worker.log()

    sentinel.send(sig)
    assert sentinel.wait() == 0
    assert f"{sig.name}: stopping the sentinel" in sentinel.log()

    for proc in (worker, sentinel):
        assert "Traceback" not in proc.log()
        assert not alive(proc.pid)
        assert orphans_of(proc.pid) == []
    assert cluster.leftovers() == []
