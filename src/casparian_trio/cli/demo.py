"""``casparian-trio demo``: the whole flow on an embedded default, in seconds.

A working folder (default ``./casparian-demo``) gets a fresh SQLite file, a few
generated sales CSVs (quoted fields, blank lines, empty values, one file with
malformed rows), and a sample plugin. The plugin is published, the folder is
scanned, a Sentinel and two Workers run in this process over real ZeroMQ on
an ephemeral loopback port (each job in its own guest subprocess), and the
Parquet output is read back with pyarrow. Nothing is left running. With
``--http`` the Sentinel also serves its dashboard (address printed), and
keeps serving it after the summary until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from casparian_trio import scout
from casparian_trio.cli import _render
from casparian_trio.cli._common import EXIT_OK
from casparian_trio.cli.scan import summary
from casparian_trio.cli.services import signal_task, stop_signal_receiver
from casparian_trio.config import SentinelConfig, WorkerConfig
from casparian_trio.errors import ConfigError
from casparian_trio.http import check_http_settings
from casparian_trio.publish import build_deploy, record_deploy
from casparian_trio.runtime import open_worker, serve_sentinel
from casparian_trio.scan import scan_root
from casparian_trio.store import Store, open_database
from casparian_trio.worker import Worker

logger = logging.getLogger("casparian_trio")

MARKER = ".casparian-demo"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "SUPERSEDED", "SKIPPED")
# Demo timings: quick heartbeats so the summary never waits on a slow beat.
HEARTBEAT = 0.5
DEMO_TIMEOUT = 120.0
DEMO_HTTP = "127.0.0.1:0"  # `demo --http` without an address: any free loopback port

PLUGIN_SOURCE = '''\
"""Sales CSVs into a typed `sales` table; rows that do not parse go to `rejects`."""
import pyarrow as pa
import pyarrow.csv as pacsv

MANIFEST = {
    "name": "sales_csv",
    "version": "1.0.0",
    "pattern": "*.csv",
    "priority": 5,
    "timeout": 60,
    "topics": {
        "sales": {
            "uri": "parquet://sales",
            "schema": {"order_id": "int64", "customer": "string", "amount": "float64",
                       "quantity": "int64", "order_date": "date32"},
        },
        "rejects": {"uri": "parquet://rejects"},
    },
}

TYPES = {"order_id": pa.int64(), "customer": pa.string(), "amount": pa.float64(),
         "quantity": pa.int64(), "order_date": pa.date32()}


class Handler:
    def configure(self, ctx, config):
        self.ctx = ctx

    def consume(self, event):
        with open(event.path, encoding="utf-8", newline="") as f:
            lines = f.read().splitlines()
        rejects = []
        seen = 0  # malformed rows come in file order (one reading thread)

        def line_of(text):
            # pyarrow's row.number counts records, not lines: blank lines and quoted
            # newlines shift it. The text is the row as written, so find its line.
            nonlocal seen
            first = (text or "").splitlines()[0] if text else ""
            for index in range(seen, len(lines)):
                if lines[index] == first:
                    seen = index + 1
                    return index + 1
            return None

        def on_invalid(row):
            rejects.append({"line": line_of(row.text), "text": row.text,
                            "reason": f"expected {row.expected_columns} fields, got {row.actual_columns}"})
            return "skip"

        table = pacsv.read_csv(
            event.path,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types=TYPES, strings_can_be_null=True),
        )
        self.ctx.publish("sales", table)
        if rejects:
            schema = pa.schema([("line", pa.int64()), ("text", pa.string()), ("reason", pa.string())])
            self.ctx.publish("rejects", pa.Table.from_pylist(rejects, schema=schema))
'''

CUSTOMERS = [
    "Acme Corp",
    "Doe, Jane",
    'The "Best" Shop',
    "Zhang Wei",
    "Müller GmbH",
    "O'Brien & Sons",
]


def add_commands(sub: Any) -> None:
    """``demo``."""
    p = sub.add_parser("demo", help="run the whole flow on generated sample files, in seconds")
    p.add_argument(
        "--dir", default="./casparian-demo", help="working folder (default ./casparian-demo)"
    )
    p.add_argument("--workers", type=int, default=2, help="workers to start (default 2)")
    p.add_argument(
        "--http",
        nargs="?",
        const=DEMO_HTTP,
        default=None,
        metavar="HOST:PORT",
        help="serve the dashboard while the demo runs, and after it until Ctrl-C "
        f"(default address {DEMO_HTTP}: a free loopback port)",
    )
    p.set_defaults(handler=cmd_demo, long_running=True)


async def cmd_demo(args: argparse.Namespace) -> int:
    if not args.verbose:  # the demo prints its own progress; service logs would drown it
        logging.getLogger("casparian_trio").setLevel(logging.WARNING)
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    with stop_signal_receiver() as signals:
        async with trio.open_nursery() as nursery:

            def stop(signum: signal.Signals) -> None:
                logger.info("%s: stopping the demo", signum.name)
                nursery.cancel_scope.cancel(reason="signal")

            await nursery.start(signal_task, signals, stop, name="demo.signals")
            if nursery.cancel_scope.cancel_called:
                return EXIT_OK  # stopped before it started
            code = await run_demo(Path(args.dir), workers=args.workers, http=args.http)
            nursery.cancel_scope.cancel(reason="demo finished")
            return code
    return EXIT_OK  # stopped by a signal


@attrs.frozen
class DemoLayout:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "casparian.db"

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def plugin(self) -> Path:
        return self.root / "plugins" / "sales_csv.py"


def prepare(root: Path) -> DemoLayout:
    """A clean working folder; refuses to wipe a folder the demo did not create."""
    root = root.resolve()
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise ConfigError(f"{root} exists and was not made by the demo; pick another with --dir")
    if root.exists():
        shutil.rmtree(root)
    layout = DemoLayout(root)
    for folder in (layout.incoming, layout.output, layout.plugin.parent):
        folder.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by `casparian-trio demo`; safe to delete\n")
    layout.plugin.write_text(PLUGIN_SOURCE, encoding="utf-8")
    write_samples(layout.incoming, random.Random(42))
    return layout


def write_samples(folder: Path, rng: random.Random) -> None:
    """Messy but honest CSVs: quoting, blanks, nulls; one file with broken rows."""
    order_id = 1000
    for month in range(1, 6):
        lines = ["order_id,customer,amount,quantity,order_date"]
        for _ in range(rng.randint(200, 800)):
            order_id += 1
            customer = rng.choice(CUSTOMERS).replace('"', '""')
            amount = "" if rng.random() < 0.03 else f"{rng.uniform(1, 500):.2f}"
            lines.append(
                f'{order_id},"{customer}",{amount},{rng.randint(1, 9)},2026-{month:02d}-{rng.randint(1, 28):02d}'
            )
            if rng.random() < 0.02:
                lines.append("")  # stray blank line
        (folder / f"2026-{month:02d}").mkdir(exist_ok=True)
        (folder / f"2026-{month:02d}" / "sales.csv").write_text(
            "\n".join(lines) + "\n", encoding="utf-8"
        )
    legacy = ["order_id,customer,amount,quantity,order_date", '9001,"Doe, Jane",12.50,1,2025-12-30']
    legacy += [
        "",  # a blank line: the rejects' line numbers must still be the file's (4 and 5)
        "9002,Acme Corp,7.25,2,2025-12-31,EXTRA",
        "9003;Zhang Wei;3.10;1;2025-12-31",
        '9004,"Zhang Wei",3.10,1,2025-12-31',
    ]
    (folder / "legacy-export.csv").write_text("\n".join(legacy) + "\n", encoding="utf-8")
    (folder / "README.txt").write_text("not a CSV: no routing rule matches it\n", encoding="utf-8")


async def run_demo(root: Path, *, workers: int = 2, http: str | None = None) -> int:
    """The whole flow; with ``http`` the dashboard is served, and stays up after the summary."""
    if http is not None:
        check_http_settings(http, None)  # loopback only: the demo takes no token
    started = time.monotonic()
    layout = prepare(root)
    print(f"demo folder {layout.root}")
    queued = await _publish_and_scan(layout)
    print(f"queued {queued} job(s); starting a sentinel and {workers} workers")

    async def report(stats: dict[str, int]) -> None:
        remove_empty_folders(layout.output)
        _summary(layout, stats, time.monotonic() - started)
        if http is not None:
            print("\nthe dashboard stays up until Ctrl-C", flush=True)
            await trio.sleep_forever()

    stats = await _process(layout, workers, http=http, then=report)
    return 0 if stats.get("FAILED", 0) == 0 else 1


def remove_empty_folders(root: Path) -> None:
    """Drop the folders of topics that got no rows (the default ``output`` topic here).

    A sink takes its directory lock, and so creates the directory, even when it
    has nothing to promote; the demo's folder should show only real tables.
    """
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


async def _publish_and_scan(layout: DemoLayout) -> int:
    db = open_database(layout.db)
    try:
        store = Store(db)
        result = await record_deploy(store, build_deploy(layout.plugin), now=time.time())
        print(
            f"published {result['plugin_name']} {result['version']} (artifact {result['artifact_hash'][:12]})"
        )
        root_id, _ = await store.add_source_root(str(layout.incoming))
        rules = scout.Rule.enabled(await store.routing_rules())
        counts = await trio.to_thread.run_sync(scan_root, db, root_id, layout.incoming, rules)
        print(summary(counts))
        return counts.queued
    finally:
        db.close()


async def _process(
    layout: DemoLayout,
    workers: int,
    *,
    http: str | None = None,
    then: Callable[[dict[str, int]], Awaitable[None]],
) -> dict[str, int]:
    """Run the jobs; ``then(stats)`` runs after the workers stopped, the Sentinel still up."""
    config = SentinelConfig(
        bind="tcp://127.0.0.1:*", db=layout.db, heartbeat_interval_s=HEARTBEAT, http=http
    )
    db = open_database(layout.db)
    try:
        async with trio.open_nursery() as nursery:
            sentinel = await nursery.start(serve_sentinel, config)
            if sentinel.http_url is not None:
                print(f"dashboard on {sentinel.http_url}", flush=True)
            address = sentinel.channel.endpoint
            async with trio.open_nursery() as crew:
                pool = [
                    await crew.start(_worker, layout, address, i) for i in range(1, workers + 1)
                ]
                with trio.fail_after(DEMO_TIMEOUT):
                    stats = await _watch(Store(db))
                for worker in pool:
                    worker.request_shutdown()  # idle now: they stop at once
            await then(stats)
            nursery.cancel_scope.cancel(reason="demo finished")
        return stats
    finally:
        db.close()


async def _worker(
    layout: DemoLayout, address: str, index: int, *, task_status: trio.TaskStatus[Worker]
) -> None:
    config = WorkerConfig(
        connect=address,
        output=layout.output,
        worker_id=f"demo-worker-{index}",
        heartbeat_interval_s=HEARTBEAT,
        grace_s=5.0,
        envs_root=layout.root / "envs",
    )
    async with open_worker(config) as worker:
        task_status.started(worker)
        await worker.run()


async def _watch(store: Store) -> dict[str, int]:
    """Live progress until every job is terminal."""
    progress = _render.Progress("processing", total=None)
    last_line = ""
    try:
        while True:
            stats = await store.stats()
            total = sum(stats.values())
            done = sum(stats.get(s, 0) for s in TERMINAL)
            progress.total = total
            detail = f"{stats.get('RUNNING', 0)} running, {stats.get('QUEUED', 0)} queued"
            progress.update(done, detail)
            line = progress.line(done, detail)
            if not progress.enabled and line != last_line:  # not a terminal: one line per change
                print(line)
                last_line = line
            if done == total:
                return stats
            await trio.sleep(0.1)
    finally:
        progress.close()


def _cell_text(value: object) -> str:
    return "" if value is None else str(value)


def _summary(layout: DemoLayout, stats: dict[str, int], elapsed: float) -> None:
    import pyarrow.dataset as ds

    counts = ", ".join(f"{stats.get(s, 0)} {s.lower()}" for s in TERMINAL)
    print(f"\njobs: {counts}  ({elapsed:.1f} s)")
    for topic in ("sales", "rejects"):
        path = layout.output / topic
        if not path.exists():
            continue
        table = ds.dataset(path, format="parquet").to_table()
        files = len(list(path.glob("*.parquet")))
        print(f"\n{topic}: {table.num_rows:,} rows in {files} Parquet file(s) under {path}")
        lineage = [n for n in table.column_names if n.startswith("_cf_")]
        table = table.drop_columns(lineage[1:])  # the job id stays; the rest is in the files
        columns = [_render.Column(name, shrink="end", min_width=6) for name in table.column_names]
        rows = [[_cell_text(v) for v in row.values()] for row in table.slice(0, 3).to_pylist()]
        print(_render.table(columns, rows))
    print(
        f"\nread it back: pyarrow.dataset.dataset('{layout.output / 'sales'}').to_table()"
        f'\nquery it: casparian-trio query "SELECT count(*) FROM sales" --db {layout.db}'
        f"\ninspect jobs: casparian-trio jobs --db {layout.db}",
        file=sys.stdout,
    )
