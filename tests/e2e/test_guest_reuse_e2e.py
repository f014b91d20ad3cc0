"""Reused guests as users run them: a real Sentinel and worker, plugins published twice.

SLOW_PLUGIN writes ``<input>.started.<pid>`` from inside its guest, so each
job's guest process is known. Jobs of one plugin version share a guest; a
newly published version of the plugin never runs in the old version's guest.
"""

from __future__ import annotations

import signal

import pytest
from e2e_procs import SLOW_PLUGIN, Cluster

pytestmark = pytest.mark.slow

PLUGIN = "reuse_probe"


def run_one(cluster: Cluster, source: str, name: str) -> int:
    """Queue one job of ``source`` on a new input; wait for it; return its guest's pid."""
    (job_id,) = cluster.seed_jobs(PLUGIN, source, {name: "rows=2\n"})
    done = cluster.wait_for_status(job_id, "COMPLETED", "FAILED")
    assert done.status == "COMPLETED", done
    (pid,) = cluster.started_markers(name)
    return pid


def test_one_guest_per_plugin_version_across_publishes(cluster: Cluster) -> None:
    cluster.init_db()
    sentinel = cluster.start_sentinel()
    worker = cluster.start_worker("w-reuse")
    v2 = SLOW_PLUGIN + "\n# version 2\n"

    first = run_one(cluster, SLOW_PLUGIN, "a.txt")
    assert run_one(cluster, SLOW_PLUGIN, "b.txt") == first  # the same version: reused
    newer = run_one(cluster, v2, "c.txt")  # published anew: ACTIVE now
    assert newer != first
    assert run_one(cluster, v2, "d.txt") == newer
    assert run_one(cluster, SLOW_PLUGIN, "e.txt") == first  # republished v1, its guest again

    for proc in (worker, sentinel):
        proc.send(signal.SIGINT)
        assert proc.wait() == 0
    assert cluster.leftovers() == []
