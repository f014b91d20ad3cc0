"""``serve_http`` on an ephemeral loopback port: pages, filters, the token, cancel and retry.

Real parts: hypercorn's Trio worker, the Starlette app, a SQLite file seeded
through another connection, and HTTP over TCP from a client thread
(``http.client``, which never follows redirects: each answer is seen as sent).
"""

from __future__ import annotations

import http.client
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import pytest
import trio
from http_seed import NOW, Seeded, seed

from casparian_trio.errors import ConfigError
from casparian_trio.http import HttpAddress
from casparian_trio.http._auth import COOKIE, csrf_value
from casparian_trio.http.server import serve_http
from casparian_trio.store import Database, JobStatus, open_database, queue

TOKEN = "integration-token-0123456789"
HANG_S = 60  # a hang guard, never a speed limit


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: str


@attrs.define
class Client:
    url: str

    async def __call__(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str = "",
    ) -> Answer:
        parts = urlsplit(self.url)

        def fetch() -> Answer:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HANG_S)
            try:
                sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
                conn.request(method, path, body=body.encode(), headers=sent)
                response = conn.getresponse()
                found = {k.lower(): v for k, v in response.getheaders()}
                return Answer(response.status, found, response.read().decode())
            finally:
                conn.close()

        return await trio.to_thread.run_sync(fetch)


@pytest.fixture
def seeded_file(tmp_path: Path) -> tuple[Path, Seeded]:
    path = tmp_path / "casparian.db"
    db = open_database(path)
    try:
        return path, db.run_sync(seed)
    finally:
        db.close()


@asynccontextmanager
async def served(path: Path, token: str | None = None) -> AsyncIterator[Client]:
    with trio.fail_after(HANG_S):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve_http(
                    HttpAddress("127.0.0.1", 0),
                    db_path=str(path),
                    token=token,
                    wall=lambda: NOW,
                    task_status=task_status,
                )
            )
            yield Client(url)
            nursery.cancel_scope.cancel(reason="test done")


def status_of(path: Path, job_id: int) -> str:
    db: Database = open_database(path)
    try:
        job = db.run_sync(lambda conn: queue.get_job(conn, job_id), readonly=True)
        assert job is not None
        return str(job.status)
    finally:
        db.close()


def card(html: str, state: str) -> int:
    match = re.search(rf'data-state="{state}">\s*<span class="count">(\d+)</span>', html)
    assert match, f"no {state} card in the page"
    return int(match.group(1))


def job_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<a href="/jobs/(\d+)">', html)]


async def test_pages_show_the_store(seeded_file: tuple[Path, Seeded]) -> None:
    path, s = seeded_file
    async with served(path) as get:
        overview = await get("/")
        assert overview.status == 200
        assert (card(overview.body, "COMPLETED"), card(overview.body, "FAILED")) == (2, 1)
        assert card(overview.body, "QUEUED") == 1
        assert "oldest queued job waiting 30s" in overview.body
        assert '<meta http-equiv="refresh"' in overview.body
        assert "<svg" in overview.body

        assert job_ids((await get("/jobs")).body) == [4, 3, 2, 1]
        assert job_ids((await get("/jobs?state=FAILED")).body) == [s.failed]
        assert job_ids((await get("/jobs?plugin=logs")).body) == [s.queued]
        assert job_ids((await get("/jobs?file=2026-02")).body) == [2]
        assert job_ids((await get("/jobs?topic=sales")).body) == [2, 1]
        assert job_ids((await get("/jobs?page=2")).body) == []  # 4 jobs fit on page 1

        failed = (await get(f"/jobs/{s.failed}")).body
        assert "ValueError: bad row 7" in failed
        assert "Traceback (most recent call last)" in failed
        assert "sales 1.2.0" in failed
        done = (await get(f"/jobs/{s.completed[0]}")).body
        assert "/out/sales/sales.job-1.parquet" in done
        assert re.search(r">sales</a></td><td class=\"num\">10</td><td class=\"num\">2<", done)

        topic = await get("/topics/sales")
        assert topic.status == 200
        assert "Contract v1" in topic.body
        assert "int64" in topic.body
        assert "15 rows" in (await get("/topics")).body.replace(
            '<td class="num">15</td>', "15 rows"
        )
        assert (await get("/workers")).status == 200
        assert (await get("/static/style.css")).headers["content-type"].startswith("text/css")

        assert (await get("/jobs/999")).status == 404
        assert (await get("/topics/nope")).status == 404
        assert (await get("/jobs?page=x")).status == 400


async def test_without_a_token_the_dashboard_is_read_only(
    seeded_file: tuple[Path, Seeded],
) -> None:
    path, s = seeded_file
    async with served(path) as get:
        page = await get(f"/jobs/{s.queued}")
        assert "<button" not in page.body
        for action in ("cancel", "retry"):
            refused = await get(f"/jobs/{s.queued}/{action}", method="POST")
            assert refused.status == 403
            assert "read-only" in refused.body
        assert (await get(f"/jobs/{s.failed}/retry", method="POST")).status == 403
    assert status_of(path, s.queued) == JobStatus.QUEUED
    assert status_of(path, s.failed) == JobStatus.FAILED


async def test_with_a_token_every_request_needs_it(seeded_file: tuple[Path, Seeded]) -> None:
    path, s = seeded_file
    async with served(path, token=TOKEN) as get:
        for target in ("/", "/jobs", "/metrics", f"/jobs/{s.queued}"):
            refused = await get(target)
            assert refused.status == 401
            assert refused.headers["www-authenticate"] == "Bearer"
        assert (await get("/", headers={"Authorization": "Bearer wrong-token"})).status == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await get("/metrics", headers=bearer)).status == 200

        login = await get(f"/jobs?state=QUEUED&token={TOKEN}")
        assert login.status == 303
        assert login.headers["location"] == "/jobs?state=QUEUED"  # the token leaves the address
        assert f"{COOKIE}={TOKEN}" in login.headers["set-cookie"]
        assert "HttpOnly" in login.headers["set-cookie"]
        cookie = {"Cookie": f"{COOKIE}={TOKEN}"}
        page = await get(f"/jobs/{s.queued}", headers=cookie)
        assert page.status == 200
        assert ">Cancel</button>" in page.body
        assert csrf_value(TOKEN) in page.body


async def test_post_without_the_token_changes_nothing(seeded_file: tuple[Path, Seeded]) -> None:
    path, s = seeded_file
    async with served(path, token=TOKEN) as post:
        refused = await post(f"/jobs/{s.queued}/cancel", method="POST")
        assert refused.status == 401
        forged = await post(  # the cookie alone, as a cross-site form would send it
            f"/jobs/{s.queued}/cancel", method="POST", headers={"Cookie": f"{COOKIE}={TOKEN}"}
        )
        assert forged.status == 403
        assert status_of(path, s.queued) == JobStatus.QUEUED

        cancel = await post(
            f"/jobs/{s.queued}/cancel",
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert cancel.status == 303
        assert cancel.headers["location"].startswith(f"/jobs/{s.queued}?done=")
        assert status_of(path, s.queued) == JobStatus.CANCELLED

        retry = await post(
            f"/jobs/{s.failed}/retry",
            method="POST",
            headers={"Cookie": f"{COOKIE}={TOKEN}"},
            body=f"csrf={csrf_value(TOKEN)}",
        )
        assert retry.status == 303
        assert status_of(path, s.failed) == JobStatus.QUEUED
        assert (
            await post(
                "/jobs/1/delete", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
            )
        ).status == 404


async def test_a_port_in_use_is_one_line(seeded_file: tuple[Path, Seeded]) -> None:
    path, _ = seeded_file
    async with served(path) as first:
        port = urlsplit(first.url).port
        assert port is not None
        with pytest.raises(ConfigError, match=rf"--http 127.0.0.1:{port}: the port is in use"):
            await serve_http(HttpAddress("127.0.0.1", port), db_path=str(path), token=None)
