"""The dashboard's ASGI app (Starlette): pages rendered on the server, ``/metrics``, two POSTs.

Every handler is ``async`` and reads the store with one ``Database.run`` on the
dashboard's own connection (a worker thread with its own limiter), then
renders a Jinja2 template from the package (``templates/``, ``static/``: no
CDN, nothing fetched by the browser from elsewhere). The facts shown are the
command line's: the same store reads (``reports``, ``queue``, ``topics``) and
the same decisions (``cli.workers.worker_views``, ``cli.detail.status_text``).

Routes: ``/`` overview (refreshes itself), ``/jobs`` (filters, pages),
``/jobs/{id}``, ``POST /jobs/{id}/cancel`` and ``/retry`` (token only, see
``_auth``), ``/topics``, ``/topics/{name}``, ``/workers``, ``/metrics``.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote

import attrs
import jinja2
import trio
from markupsafe import Markup
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from casparian_trio import failure_text
from casparian_trio.cli import _render
from casparian_trio.cli.detail import failure_doc, status_text
from casparian_trio.cli.topics import summary_doc, topic_doc
from casparian_trio.cli.workers import (
    THROUGHPUT_WINDOW,
    collect_status,
    sentinel_text,
    worker_views,
)
from casparian_trio.errors import StoreError
from casparian_trio.http import _auth
from casparian_trio.http._chart import throughput_svg
from casparian_trio.http._live import live_slots
from casparian_trio.http.metrics import WINDOW_S, Metrics, StoreCollector
from casparian_trio.sentinel.registry import Registry
from casparian_trio.store import Database, JobStatus, reports, topics
from casparian_trio.store import dashboard as reads

logger = logging.getLogger(__name__)

# The overview reloads itself this often: lively, yet one small read per view.
REFRESH_S = 5
# The chart: 30 one-minute bars, the last half hour.
CHART_BUCKET_S = 60.0
CHART_BUCKETS = 30
PAGE_SIZE = 50  # jobs per page: the CLI's `jobs` default
# The POSTs, and the store call each one makes (``reports.steer``, as `cancel` / `retry`).
STEER_ACTIONS = ("cancel", "retry")
Endpoint = Callable[[Request], Awaitable[Response]]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("casparian_trio.http", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        time_text=_render.time_text,
        human_bytes=_render.human_bytes,
        duration=_render.short_duration,
        first_line=_render.first_line,
        status_text=status_text,
    )
    env.globals["ago"] = _render.ago
    return env


@functools.cache
def _static(name: str) -> bytes:
    return importlib.resources.files("casparian_trio.http").joinpath("static", name).read_bytes()


STATIC_TYPES = {"style.css": "text/css; charset=utf-8"}


@attrs.define(eq=False, kw_only=True)
class Dashboard:
    """The app's state: its own database connection, the token, the Sentinel's registry.

    Attributes:
        db: the dashboard's connection (never the Sentinel's writer).
        token: None: read-only, open on loopback; else required on every request.
        registry: the running Sentinel's workers (live slots); None outside a Sentinel.
        wall: unix time, for ages and windows.
    """

    db: Database
    token: str | None = None
    registry: Registry | None = None
    wall: Callable[[], float] = time.time
    env: jinja2.Environment = attrs.field(factory=_environment)
    metrics: Metrics = attrs.field(init=False)
    scrape_lock: trio.Lock = attrs.field(factory=trio.Lock)

    def __attrs_post_init__(self) -> None:
        collector = StoreCollector(slots=lambda: live_slots(self.registry), clock=self.wall)
        self.metrics = Metrics(collector=collector)

    # --- plumbing ----------------------------------------------------------------------

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        context.update(
            path=request.url.path,
            now=self.wall(),
            can_steer=self.token is not None,  # every request carried it (``TokenGuard``)
            csrf=_auth.csrf_value(self.token) if self.token is not None else "",
        )
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code)

    def timed(self, route: str, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` counted and timed in the dashboard's own metrics."""

        async def run(request: Request) -> Response:
            started = trio.current_time()
            try:
                response = await endpoint(request)
            except StoreError as exc:  # "no job 7" is a 404; a database in trouble is not
                code = 404 if str(exc).startswith("no ") else 503
                response = self.page(request, "error.html", code, message=str(exc))
            except ValueError as exc:
                response = self.page(request, "error.html", 400, message=str(exc))
            self.metrics.requests.labels(route, str(response.status_code)).inc()
            self.metrics.request_seconds.labels(route).observe(trio.current_time() - started)
            return response

        return run

    async def read(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        return await self.db.run(functools.partial(fn, **kwargs), readonly=True)

    # --- pages ---------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        now = self.wall()
        snapshot = await self.read(reports.status_snapshot, since=now - THROUGHPUT_WINDOW)
        buckets = await self.read(
            reads.throughput,
            since=now - CHART_BUCKETS * CHART_BUCKET_S,
            bucket_s=CHART_BUCKET_S,
            buckets=CHART_BUCKETS,
        )
        doc = collect_status(snapshot, now=now)
        _, workers = worker_views(snapshot.sentinel, snapshot.workers, now=now)
        return self.page(
            request,
            "overview.html",
            refresh_s=REFRESH_S,
            doc=doc,
            sentinel_line=sentinel_text(doc["sentinel"]),
            states=[(str(s), snapshot.jobs.get(str(s), 0)) for s in JobStatus],
            total=sum(snapshot.jobs.values()),
            chart=Markup(throughput_svg(buckets, bucket_s=CHART_BUCKET_S)),
            chart_total=sum(sum(b.values()) for b in buckets),
            workers=workers,
            slots=live_slots(self.registry),
        )

    async def jobs(self, request: Request) -> Response:
        params = request.query_params
        page_text = params.get("page") or "1"
        page = int(page_text) if page_text.isdigit() else 0
        if page < 1:
            raise ValueError(f"page must be a number from 1, got {page_text!r}")
        selection = reads.JobFilter(
            status=params.get("state") or None,
            plugin=params.get("plugin") or None,
            topic=params.get("topic") or None,
            file=params.get("file") or None,
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
        views, more = await self.read(reads.job_page, selection=selection)
        plugins, topic_names = await self.read(reads.filter_choices)
        kept = {k: v for k, v in params.items() if k != "page" and v}
        return self.page(
            request,
            "jobs.html",
            views=views,
            selection=selection,
            page_no=page,
            more=more,
            kept=kept,
            states=[str(s) for s in JobStatus],
            plugins=plugins,
            topic_names=topic_names,
        )

    async def job(self, request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        detail = await self.read(reads.job_detail, job_id=job_id)
        job = detail.view.job
        summary = job.result_summary or {}
        return self.page(
            request,
            "job.html",
            detail=detail,
            job=job,
            failure=failure_doc(job),
            traceback=failure_text.traceback_part(job.error_traceback) or None,
            metrics=summary.get("metrics") or {},
            artifacts=[a for a in summary.get("artifacts") or [] if isinstance(a, dict)],
            steerable=job.status in (JobStatus.QUEUED, JobStatus.RUNNING),
            retryable=job.status in (JobStatus.FAILED, JobStatus.CANCELLED),
            message=request.query_params.get("done"),
        )

    async def steer(self, request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        action = request.path_params["action"]
        if action not in STEER_ACTIONS:
            return self.page(request, "error.html", 404, message=f"no action {action!r}")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        csrf = next(iter(form.get("csrf", [])), None)
        auth = request.scope.get("state", {}).get("auth", _auth.Auth.OPEN)
        refusal = _auth.may_steer(self.token, auth, csrf)
        if refusal is not None:
            return self.page(request, "error.html", refusal[0], message=refusal[1])
        now = self.wall()
        before, after = await self.db.run(
            functools.partial(reports.steer, job_id=job_id, action=action, now=now)
        )
        logger.info(
            "dashboard: %s job %d (%s -> %s)",
            action,
            job_id,
            before,
            after,
            extra={"event": f"http.{action}", "job_id": job_id},
        )
        done = quote(f"{action}: {before} → {after}")
        return RedirectResponse(f"/jobs/{job_id}?done={done}", status_code=303)

    async def topics(self, request: Request) -> Response:
        rows = await self.read(topics.list_topics)
        return self.page(request, "topics.html", topics=[summary_doc(r) for r in rows])

    async def topic(self, request: Request) -> Response:
        detail = await self.read(topics.topic_detail, name=request.path_params["name"])
        return self.page(request, "topic.html", doc=topic_doc(detail))

    async def workers(self, request: Request) -> Response:
        now = self.wall()
        record, known = await self.read(reports.worker_table)
        sentinel, rows = worker_views(record, known, now=now)
        return self.page(
            request,
            "workers.html",
            sentinel_line=sentinel_text(sentinel),
            workers=rows,
            slots=live_slots(self.registry),
        )

    async def scrape(self, request: Request) -> Response:
        collector = self.metrics.collector
        async with self.scrape_lock:  # each ended row is added to the tally once
            snapshot = await self.read(
                reads.metrics_snapshot,
                after_id=collector.tally.max_id,
                open_ids=frozenset(collector.tally.open_ids),
                now=self.wall(),
                window_s=WINDOW_S,
            )
            # No await between taking the snapshot and generating: one scrape, one snapshot.
            collector.take(snapshot)
            text = generate_latest(self.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_TYPES:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(_static(name), media_type=STATIC_TYPES[name])


def build_app(dashboard: Dashboard) -> Starlette:
    """The Starlette app over ``dashboard``, behind the token guard."""
    d = dashboard
    routes = [
        Route("/", d.timed("overview", d.overview)),
        Route("/jobs", d.timed("jobs", d.jobs)),
        Route("/jobs/{job_id:int}", d.timed("job", d.job)),
        Route(
            "/jobs/{job_id:int}/{action:str}",
            d.timed("steer", d.steer),
            methods=["POST"],
        ),
        Route("/topics", d.timed("topics", d.topics)),
        Route("/topics/{name:str}", d.timed("topic", d.topic)),
        Route("/workers", d.timed("workers", d.workers)),
        Route("/metrics", d.timed("metrics", d.scrape)),
        Route("/static/{name:str}", d.static),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_auth.TokenGuard, token=d.token)])
    return app
