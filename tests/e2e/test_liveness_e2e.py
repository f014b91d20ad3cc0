"""Real processes: the operator view tells who is alive (a worker's goodbye, a stopped Sentinel).

``sentinel`` and ``worker`` run as separate processes over tcp on 127.0.0.1
(heartbeat 0.5 s, liveness 1.5 s); ``workers --json`` and ``status --json`` run
as the operator would, in their own processes, on the same database file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest
from e2e_procs import HANG_S, Cluster, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def ops(cluster: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casparian_trio", *argv, "--db", str(cluster.db_path)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=True,
    )


def ops_json(cluster: Cluster, *argv: str) -> Any:
    return json.loads(ops(cluster, *argv, "--json").stdout)


def worker_states(cluster: Cluster) -> dict[str, str]:
    return {w["worker_id"]: w["status"] for w in ops_json(cluster, "workers")}


def test_a_sigtermed_worker_is_stopped_and_a_stopped_sentinel_is_not_running(
    cluster: Cluster,
) -> None:
    sentinel = cluster.start_sentinel()
    worker_a = cluster.start_worker("w-a")
    worker_b = cluster.start_worker("w-b")
    assert ops_json(cluster, "status")["sentinel"]["running"] is True

    worker_a.send(signal.SIGTERM)
    assert worker_a.wait() == 0
    assert worker_states(cluster) == {"w-a": "STOPPED", "w-b": "IDLE"}
    status = ops_json(cluster, "status")
    assert status["sentinel"]["running"] is True
    assert status["workers"]["alive"] == 1
    assert status["workers"]["stopped"] == 1

    sentinel.send(signal.SIGINT)
    assert sentinel.wait() == 0
    status = ops_json(cluster, "status")
    assert status["sentinel"]["running"] is False
    assert status["sentinel"]["reason"] == "stopped"
    assert status["workers"]["alive"] == 0
    assert worker_states(cluster) == {"w-a": "STOPPED", "w-b": "UNKNOWN"}
    assert ops(cluster, "status").stdout.startswith("sentinel   not running (last seen ")

    log = sentinel.log()
    assert "worker w-a stopped (it said goodbye)" in log
    assert "lost" not in log
    worker_b.wait_for_log(r"no answer from the sentinel at \S+ for \d+ s")
    worker_b.send(signal.SIGINT)
    assert worker_b.wait() == 0
    assert cluster.leftovers() == []


def test_a_worker_with_no_sentinel_says_it_waits_then_that_it_is_connected(
    cluster: Cluster,
) -> None:
    worker = cluster.spawn(
        "worker",
        "worker",
        "--connect",
        cluster.address,
        "--worker-id",
        "w-alone",
        "--heartbeat-interval",
        "0.5",
        "--envs-root",
        str(cluster.root / "envs"),
        "--allow-system-env",
    )
    worker.wait_for_log(rf"worker w-alone connecting to {cluster.address} with 1 slot\(s\)")
    worker.wait_for_log(rf"waiting for the sentinel at {cluster.address}: no answer for \d+ s")
    assert "connected to" not in worker.log()
    sentinel = cluster.start_sentinel()
    worker.wait_for_log(rf"worker w-alone connected to {cluster.address}: the sentinel answered")
    wait_until("the worker in the worker table", lambda: "w-alone" in worker_states(cluster))
    worker.send(signal.SIGINT)
    assert worker.wait() == 0
    sentinel.send(signal.SIGINT)
    assert sentinel.wait() == 0
    assert worker_states(cluster) == {"w-alone": "STOPPED"}
    assert cluster.leftovers() == []
