"""A keyed Sentinel as a real process, attacked and used over real ZeroMQ sockets (issue 13).

Each "Must show" of the issue: keyed jobs complete end to end; a plain DEALER,
an unknown CURVE key and a worker key without the job change nothing; an
admin's DEPLOY works; revoking a key counts for the next connection.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import zmq
import zmq.auth
from e2e_procs import SLOW_PLUGIN, Cluster
from keyed_peers import (
    ANSWER_WITHIN_S,
    SILENCE_S,
    RawPeer,
    busy,
    evil_deploy,
    identify,
    keys_cli,
    make_keys,
    success,
)

from casparian_trio.protocol import Dispatch, Err, Heartbeat, JobRef
from casparian_trio.store import reports, workers


def worker_rows(cluster: Cluster) -> dict[str, str]:
    return {w["worker_id"]: w["status"] for w in cluster.db.run_sync(workers.list_workers)}


def manifest(cluster: Cluster, name: str) -> dict[str, object] | None:
    return cluster.db.run_sync(lambda c: reports.active_manifest(c, plugin_name=name))


def start_keyed_sentinel(cluster: Cluster, keys: Path) -> None:
    # Default timing: the raw peers below heartbeat by hand, within 6 s liveness.
    cluster.start_sentinel("--keys", str(keys), fast=False)


def server_key(keys: Path) -> bytes:
    return zmq.auth.load_certificate(keys / "sentinel.key")[0]


def test_keyed_jobs_complete_end_to_end_and_an_admin_deploy_works(cluster: Cluster) -> None:
    keys = make_keys(cluster.root / "keys", workers=("w1",), admins=("ops",))
    start_keyed_sentinel(cluster, keys)
    cluster.start_worker("w1", "--keys", str(keys), "--key", "w1")
    job_ids = cluster.seed_jobs("slow", SLOW_PLUGIN, {"a.txt": "rows=3\n", "b.txt": "rows=2\n"})
    for job_id in job_ids:
        assert cluster.wait_for_status(job_id, "COMPLETED", "FAILED").status == "COMPLETED"
    assert set(worker_rows(cluster)) == {"w1"}  # named after its key
    rows = sum(pq.read_table(p).num_rows for p in cluster.output.rglob("*.parquet"))
    assert rows == 5

    plugin = cluster.root / "hello.py"
    plugin.write_text(
        "import pyarrow as pa\nMANIFEST = {'name': 'hello', 'version': '1.0'}\n"
        "class Handler:\n    def execute(self, file_path):\n        yield pa.table({'x': [1]})\n"
    )
    base = [sys.executable, "-m", "casparian_trio", "publish", str(plugin)]
    base += ["--sentinel", cluster.address, "--keys", str(keys)]
    done = subprocess.run([*base, "--key", "ops"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "published hello 1.0" in done.stdout
    assert manifest(cluster, "hello") is not None


def test_a_plain_dealer_and_an_unknown_key_get_nothing(cluster: Cluster) -> None:
    keys = make_keys(cluster.root / "keys", workers=("w1",), admins=())
    start_keyed_sentinel(cluster, keys)
    [job_id] = cluster.seed_jobs("slow", SLOW_PLUGIN, {"a.txt": "rows=1\n"})
    plain = RawPeer(cluster.address, b"evil-plain")
    public, secret = zmq.curve_keypair()
    unknown = RawPeer(cluster.address, b"evil-key", server_key(keys), own_keys=(public, secret))
    try:
        for peer, name in ((plain, "evil-plain"), (unknown, "evil-key")):
            identify(peer, name, slots=50)
            peer.send(evil_deploy())
        for peer in (plain, unknown):
            assert peer.collect(SILENCE_S) == []  # no answer, no DISPATCH
    finally:
        plain.close()
        unknown.close()
    assert worker_rows(cluster) == {}
    assert manifest(cluster, "evil") is None
    assert cluster.job(job_id).status == "QUEUED"


def _take_job(peer: RawPeer, name: str) -> tuple[int, int]:
    """IDENTIFY as ``name`` and wait for a DISPATCH: (job id, attempt)."""
    identify(peer, name)
    for message in peer.collect(ANSWER_WITHIN_S, until=Dispatch):
        if isinstance(message.payload, Dispatch):
            assert message.payload.attempt is not None
            return message.job_id, message.payload.attempt
    raise AssertionError(f"{name} got no DISPATCH")


def test_a_worker_key_cannot_deploy_nor_report_on_another_workers_job(cluster: Cluster) -> None:
    keys = make_keys(cluster.root / "keys", workers=("w1", "w2"), admins=())
    start_keyed_sentinel(cluster, keys)
    [job_id] = cluster.seed_jobs("slow", SLOW_PLUGIN, {"a.txt": "rows=1\n"})
    sk = server_key(keys)
    real = RawPeer(cluster.address, b"w1", sk, keys / "w1.key_secret")
    own_route = RawPeer(cluster.address, b"w2", sk, keys / "w2.key_secret")
    peers = [real, own_route]
    try:
        taken, attempt = _take_job(real, "w1")
        assert taken == job_id
        busy(real, "w1", job_id, attempt)

        # w2 under its own routing id: DEPLOY refused with ERR; receipts and
        # heartbeats naming w1's job change nothing.
        own_route.send(evil_deploy())
        answers = own_route.collect(ANSWER_WITHIN_S, until=Err)
        assert any(isinstance(m.payload, Err) and "admin" in m.payload.message for m in answers)
        identify(own_route, "w1")  # claims to be w1: the Sentinel names it w2
        own_route.send(*success(job_id, attempt))
        busy(own_route, "w1", job_id, attempt)

        # w2 with w1's routing id, while w1 is connected and after it has gone.
        hijack = RawPeer(cluster.address, b"w1", sk, keys / "w2.key_secret")
        peers.append(hijack)
        hijack.send(*success(job_id, attempt))
        busy(hijack, "w1", job_id, attempt)
        assert hijack.collect(SILENCE_S) == []
        busy(real, "w1", job_id, attempt)
        assert cluster.job(job_id).status == "RUNNING"
        assert manifest(cluster, "evil") is None
        assert set(worker_rows(cluster)) == {"w1", "w2"}

        # The real holder's receipt is accepted: the refusals above were about the key.
        real.send(*success(job_id, attempt))
        assert cluster.wait_for_status(job_id, "COMPLETED").worker_id == "w1"
    finally:
        for peer in peers:
            peer.close()


def test_the_hijacker_is_refused_once_the_route_is_free(cluster: Cluster) -> None:
    keys = make_keys(cluster.root / "keys", workers=("w1", "w2"), admins=())
    start_keyed_sentinel(cluster, keys)
    [job_id] = cluster.seed_jobs("slow", SLOW_PLUGIN, {"a.txt": "rows=1\n"})
    sk = server_key(keys)
    real = RawPeer(cluster.address, b"w1", sk, keys / "w1.key_secret")
    taken, attempt = _take_job(real, "w1")
    real.close()  # w1's route is free now; its job is still RUNNING for w1
    hijack = RawPeer(cluster.address, b"w1", sk, keys / "w2.key_secret")
    try:
        identify(hijack, "w1", jobs=(JobRef(taken, attempt),))
        hijack.send(*success(taken, attempt))
        assert not [m for m in hijack.collect(SILENCE_S) if not isinstance(m.payload, Heartbeat)]
    finally:
        hijack.close()
    # Never COMPLETED by the hijacker: w1 is lost, and the job requeued for another attempt.
    assert cluster.wait_for_status(job_id, "QUEUED", "COMPLETED").status == "QUEUED"
    assert [a["outcome"] for a in cluster.attempts(job_id)] == ["WORKER_LOST"]
    assert "w2" not in worker_rows(cluster)


def test_revoking_a_key_cuts_it_off_without_a_restart(cluster: Cluster) -> None:
    keys = make_keys(cluster.root / "keys", workers=("w1",), admins=())
    start_keyed_sentinel(cluster, keys)
    secret = cluster.root / "w1.key_secret"
    secret.write_bytes((keys / "w1.key_secret").read_bytes())  # the worker's own copy
    first = RawPeer(cluster.address, b"w1", server_key(keys), secret)
    second: RawPeer | None = None
    try:
        identify(first, "w1")
        answers = first.collect(ANSWER_WITHIN_S, until=Heartbeat)
        assert any(isinstance(m.payload, Heartbeat) for m in answers)
        first.collect(SILENCE_S)  # the answer to identify()'s heartbeat
        keys_cli("revoke", "w1", "--dir", str(keys))
        identify(first, "w1")  # the open connection: no longer served
        assert first.collect(SILENCE_S) == []
        second = RawPeer(cluster.address, b"w2", server_key(keys), secret)
        identify(second, "w1")  # a new connection: refused at the handshake
        assert second.collect(SILENCE_S) == []
    finally:
        first.close()
        if second is not None:
            second.close()
    log = cluster.procs[0].log()
    assert "refused a CURVE key" in log
    assert "IDENTIFY from a connection without a known key" in log


def test_without_keys_a_public_bind_exits_naming_insecure(cluster: Cluster) -> None:
    argv = [sys.executable, "-m", "casparian_trio", "sentinel", "--db", str(cluster.db_path)]
    argv += ["--bind", f"tcp://0.0.0.0:{cluster.port}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cluster.root)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--insecure" in lines[0]
    assert "keys init" in lines[0]
