"""The dashboard of a real ``sentinel --http`` process: pages, /metrics, a browser, the token.

Real parts: ``sentinel`` and ``worker`` processes over ZeroMQ, the SQLite file,
hypercorn on an ephemeral loopback port (``--http 127.0.0.1:0``; the address is
read from the Sentinel's log), HTTP over TCP, headless Chromium, and
``prometheus_client``'s own parser. The numbers are checked against the store.
"""

from __future__ import annotations

import http.client
import re
import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from browser import dump_dom, require_browser, screenshot
from e2e_procs import SLOW_PLUGIN, Cluster, Proc, wait_until
from prometheus_client.parser import text_string_to_metric_families

from casparian_trio.store import queue

TOKEN = "e2e-dashboard-token-0123456789"
HANG_S = 60  # a hang guard per request, never a speed limit
URL_IN_LOG = r"dashboard on (http://127\.0\.0\.1:\d+)"


def dashboard_url(proc: Proc) -> str:
    line = proc.wait_for_log(URL_IN_LOG)
    match = re.search(URL_IN_LOG, line)
    assert match
    return match.group(1)


def fetch(
    url: str, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HANG_S)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def card(html: str, state: str) -> int:
    match = re.search(rf'data-state="{state}">\s*<span class="count">(\d+)</span>', html)
    assert match, f"no {state} count in the page"
    return int(match.group(1))


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


@pytest.mark.slow
def test_sentinel_serves_pages_and_metrics_that_match_its_store(
    cluster: Cluster, tmp_path: Path
) -> None:
    files = {f"part-{i}.txt": f"rows={n}\n" for i, n in enumerate((4, 5, 6), start=1)}
    ids = cluster.seed_jobs("slowp", SLOW_PLUGIN, files)
    sentinel = cluster.start_sentinel("--http", "127.0.0.1:0")
    url = dashboard_url(sentinel)
    cluster.start_worker("w-dash", "--concurrency", "2")
    for job_id in ids:
        cluster.wait_for_status(job_id, "COMPLETED")

    stats = cluster.db.run_sync(queue.stats, readonly=True)
    assert stats["COMPLETED"] == 3

    def worker_idle_in_store() -> bool:
        # the worker's row follows its heartbeats: BUSY until the one after its last job
        sql = "SELECT status FROM cf_worker WHERE worker_id = 'w-dash'"
        row = cluster.db.run_sync(lambda conn: conn.execute(sql).fetchone(), readonly=True)
        return row is not None and row[0] == "IDLE"

    wait_until("the worker's row to say IDLE", worker_idle_in_store)
    status, text = fetch(url, "/metrics")
    assert status == 200
    found = samples(text)
    completed = found[("casparian_jobs_completed_total", frozenset({("plugin", "slowp")}))]
    assert completed == stats["COMPLETED"]
    assert found[("casparian_jobs", frozenset({("state", "COMPLETED")}))] == stats["COMPLETED"]
    assert found[("casparian_jobs", frozenset({("state", "QUEUED")}))] == 0
    assert found[("casparian_rows_written_total", frozenset({("topic", "output")}))] == 15
    duration = ("casparian_job_duration_seconds_count", frozenset({("plugin", "slowp")}))
    assert found[duration] == 3
    assert found[("casparian_dispatch_conclude_latency_seconds_count", frozenset())] == 3
    assert found[("casparian_workers", frozenset({("state", "IDLE")}))] == 1

    def slots_free() -> float | None:
        now = samples(fetch(url, "/metrics")[1])
        free = now[("casparian_worker_slots", frozenset({("state", "free")}))]
        return free if free == 2 else None

    wait_until("the worker's two slots to be free", slots_free)

    status, page = fetch(url, "/")
    assert status == 200
    assert card(page, "COMPLETED") == 3
    assert card(page, "FAILED") == 0

    browser = require_browser()
    profile = tmp_path / "chromium"
    dom = dump_dom(browser, f"{url}/", profile)
    assert card(dom, "COMPLETED") == 3
    assert "w-dash" in dom
    job_dom = dump_dom(browser, f"{url}/jobs/{ids[0]}", profile)
    assert re.search(r'id="job-state">COMPLETED<', job_dom)
    assert "part-1.txt" in job_dom
    screenshot(browser, f"{url}/", "dashboard-overview.png", profile)
    screenshot(browser, f"{url}/jobs/{ids[0]}", "dashboard-job.png", profile)

    sentinel.send(signal.SIGINT)
    assert sentinel.wait() == 0


@pytest.mark.slow
def test_cancel_needs_the_token_and_then_reaches_the_running_job(cluster: Cluster) -> None:
    (job_id,) = cluster.seed_jobs("slowp", SLOW_PLUGIN, {"held.txt": "hold=1\n"})
    sentinel = cluster.start_sentinel("--http", "127.0.0.1:0", "--http-token", TOKEN)
    url = dashboard_url(sentinel)
    assert "token required" in sentinel.log()
    cluster.start_worker("w-held")
    cluster.wait_for_status(job_id, "RUNNING")
    wait_until("the guest to start", lambda: cluster.started_markers("held.txt"))

    assert fetch(url, "/")[0] == 401
    assert fetch(url, f"/jobs/{job_id}/cancel", method="POST")[0] == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert fetch(url, f"/jobs/{job_id}/cancel", method="POST", headers=wrong)[0] == 401
    job = cluster.job(job_id)
    assert (job.status, job.cancel_requested) == ("RUNNING", False)  # nothing changed

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, _ = fetch(url, f"/jobs/{job_id}/cancel", method="POST", headers=bearer)
    assert status == 303
    cluster.wait_for_status(job_id, "CANCELLED")  # the Sentinel aborted it on its worker
    assert cluster.attempts(job_id)[-1]["outcome"] in ("ABORTED", "CANCELLED")
    status, page = fetch(url, f"/jobs/{job_id}", headers=bearer)
    assert status == 200
    assert 'id="job-state">CANCELLED<' in page


def test_another_address_without_a_token_is_refused(cluster: Cluster) -> None:
    proc = cluster.spawn(
        "sentinel", "sentinel", "--db", str(cluster.db_path), "--http", "0.0.0.0:8080"
    )
    assert proc.wait() == 1
    lines = proc.log().strip().splitlines()
    assert lines == [
        "error: --http 0.0.0.0:8080 is not a loopback address: pass --http-token (or "
        "http_token in the config file) so only token holders see it, or use 127.0.0.1:8080"
    ]


@pytest.mark.slow
def test_demo_http_prints_its_dashboard_and_serves_it_until_ctrl_c(cluster: Cluster) -> None:
    demo = cluster.spawn("demo", "demo", "--dir", str(cluster.root / "demo"), "--http")
    url = dashboard_url(demo)
    demo.wait_for_log(r"the dashboard stays up until Ctrl-C")
    status, page = fetch(url, "/")
    assert status == 200
    assert card(page, "COMPLETED") == 6
    demo.send(signal.SIGINT)
    assert demo.wait() == 0
