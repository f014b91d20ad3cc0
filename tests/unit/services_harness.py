"""A Sentinel and Workers over the memory transport, with scripted test doubles.

The executor's behaviour is spelled in the input file's name, so a test reads
like the scenario it runs: ``sleep-3.csv`` succeeds after 3 s, ``fail.csv``
fails, ``gone.csv`` and ``changed.csv`` are refused by the input check (SKIPPED,
SUPERSEDED), ``hang.csv`` never ends, ``deaf.csv`` ignores cancellation.

Shared by ``tests/unit/sentinel`` and ``tests/unit/worker``: their conftests
re-export the fixtures at the bottom of this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import attrs
import pytest
import trio

from casparian_trio.config import SentinelConfig, WorkerConfig
from casparian_trio.protocol import Conclude, Dispatch, EnvReady, PrepareEnv
from casparian_trio.sentinel import Sentinel
from casparian_trio.store import JobRow, Store, open_database
from casparian_trio.transport import MemoryNetwork
from casparian_trio.worker import Worker

ADDRESS = "mem://sentinel"
EPOCH = 1_800_000_000.0  # virtual wall clock = EPOCH + trio.current_time()


def wall() -> float:
    return EPOCH + trio.current_time()


@attrs.define(eq=False)
class ScriptedExecutor:
    """Runs 'plugins' whose behaviour is the input file's stem (see module docstring)."""

    calls: list[tuple[float, int, int | None]] = attrs.field(factory=list)

    async def run(self, job_id: int, dispatch: Dispatch) -> Conclude:
        self.calls.append((trio.current_time(), job_id, dispatch.attempt))
        kind, _, arg = Path(dispatch.file_path).stem.partition("-")
        if kind == "sleep":
            await trio.sleep(float(arg))
        elif kind == "fail":
            return Conclude(status="FAILED", error_message="ValueError: boom")
        elif kind in ("gone", "changed"):  # the worker's input check refused the file
            return Conclude(
                status="FAILED",
                error_message=f"file {kind}: {dispatch.file_path}",
                skip_reason="gone" if kind == "gone" else "superseded",
            )
        elif kind == "hang":
            await trio.sleep_forever()
        elif kind == "deaf":
            with trio.CancelScope(shield=True):
                await trio.sleep(float(arg or 1e6))
        return Conclude(status="SUCCESS", metrics={"rows": 3, "bytes": 100})


@attrs.define(eq=False)
class FakeEnvs:
    build_seconds: float = 1.0
    ready: set[str] = attrs.field(factory=set)
    builds: int = 0

    async def prepare(self, spec: PrepareEnv) -> EnvReady:
        cached = spec.env_hash in self.ready
        if not cached:
            await trio.sleep(self.build_seconds)
            self.builds += 1
            self.ready.add(spec.env_hash)
        return EnvReady(env_hash=spec.env_hash, interpreter_path="/fake/python", cached=cached)

    def ready_envs(self) -> list[str]:
        return sorted(self.ready)


@attrs.define(eq=False)
class Handle:
    """A running service with its own cancel scope: ``kill()`` is SIGKILL (no goodbye)."""

    scope: trio.CancelScope
    close: Callable[[], None]
    service: Sentinel | Worker
    stopped: trio.Event = attrs.field(factory=trio.Event)

    def kill(self) -> None:
        self.scope.cancel()
        self.close()


@attrs.define(eq=False)
class Cluster:
    store: Store
    network: MemoryNetwork
    nursery: trio.Nursery
    executor: ScriptedExecutor = attrs.field(factory=ScriptedExecutor)
    envs: FakeEnvs = attrs.field(factory=FakeEnvs)
    sentinel: Sentinel | None = None
    _files: int = 0
    _root_id: int | None = None

    async def start_sentinel(self, **overrides: object) -> Handle:
        config = SentinelConfig(**{"bind": ADDRESS, **overrides})  # type: ignore[arg-type]
        channel = self.network.bind_router(ADDRESS)
        sentinel = Sentinel(config=config, store=self.store, channel=channel, wall=wall)
        self.sentinel = sentinel
        return await self._start(sentinel, channel.close)

    async def start_worker(self, worker_id: str, **overrides: object) -> Handle:
        config = WorkerConfig(**{"connect": ADDRESS, "worker_id": worker_id, **overrides})  # type: ignore[arg-type]
        channel = self.network.connect_dealer(ADDRESS, identity=config.identity)
        worker = Worker(config=config, channel=channel, executor=self.executor, envs=self.envs)
        return await self._start(worker, channel.close)

    async def _start(self, service: Sentinel | Worker, close: Callable[[], None]) -> Handle:
        handle = Handle(scope=trio.CancelScope(), close=close, service=service)

        async def runner(task_status: trio.TaskStatus[None]) -> None:
            try:
                with handle.scope:
                    await service.run(task_status=task_status)
            finally:
                close()
                handle.stopped.set()

        await self.nursery.start(runner)
        return handle

    async def add_jobs(
        self,
        *names: str,
        plugin: str = "p",
        timeout_s: float | None = None,
        env_hash: str | None = None,
        max_attempts: int | None = None,
    ) -> list[int]:
        """Publish ``plugin`` (once) and queue one job per file name."""
        if self._root_id is None:
            self._root_id, _ = await self.store.add_source_root("/data")
        await self.store.publish_manifest(
            plugin_name=plugin,
            version="1",
            source_code="# test",
            source_hash=f"src-{plugin}-{env_hash}",
            env_hash=env_hash or "system",
            artifact_hash=f"art-{plugin}-{env_hash}",
            manifest={"timeout": timeout_s} if timeout_s else {},
            now=wall(),
        )
        ids = []
        for name in names:
            self._files += 1
            fv, _ = await self.store.record_file(
                source_root_id=self._root_id,
                rel_path=f"{self._files}/{name}",
                size=1,
                mtime=1.0,
                content_hash=f"hash-{self._files}",
                now=wall(),
            )
            job_id, _ = await self.store.enqueue(
                fv, plugin, now=wall(), timeout_s=timeout_s, max_attempts=max_attempts
            )
            ids.append(job_id)
        if self.sentinel is not None:
            # Same connection as the Sentinel's, so PRAGMA data_version cannot see
            # these commits; an in-process enqueue wakes the dispatcher directly.
            self.sentinel.ctx.waker.wake()
        return ids

    async def job(self, job_id: int) -> JobRow:
        row = await self.store.get_job(job_id)
        assert row is not None
        return row

    async def wait_status(self, job_id: int, *statuses: str, within: float = 120.0) -> JobRow:
        """Poll (virtual time) until the job reaches one of ``statuses``."""
        with trio.fail_after(within):
            while True:
                row = await self.job(job_id)
                if row.status in statuses:
                    return row
                await trio.sleep(0.05)

    async def quiet(self, seconds: float = 60.0) -> None:
        """Let ``seconds`` of virtual time pass and check nothing more happened.

        Ends every scenario: no late retry, no second run, no state flapping.
        """
        before = (len(self.executor.calls), await self.store.stats())
        await trio.sleep(seconds)
        assert (len(self.executor.calls), await self.store.stats()) == before

    async def wait_held(self, handle: Handle, count: int) -> None:
        """Until the worker behind ``handle`` runs ``count`` jobs (DB RUNNING comes earlier)."""
        worker = handle.service
        assert isinstance(worker, Worker)
        with trio.fail_after(60):
            while len(worker.jobs) < count:
                await trio.sleep(0.01)


# --- fixtures (re-exported by the conftests) ---------------------------------------------


@pytest.fixture(autouse=True)
def no_threads_or_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    async def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("MockClock tests must not use threads or real sockets")

    monkeypatch.setattr(trio.to_thread, "run_sync", refuse)
    monkeypatch.setattr(trio.lowlevel, "wait_readable", refuse)
    return


@pytest.fixture
def store() -> Iterator[Store]:
    db = open_database(":memory:", inline=True)
    try:
        yield Store(db)
    finally:
        db.close()


@pytest.fixture
async def cluster(store: Store) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        yield Cluster(store=store, network=MemoryNetwork(), nursery=nursery)
        nursery.cancel_scope.cancel()
