"""Wire the real parts together: a ROUTER + SQLite for the Sentinel, a DEALER + bridge for a Worker.

Tests build the same services over the in-memory transport and test doubles;
this module is what the command line (and the demo) run for real.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from casparian_trio.config import SentinelConfig, WorkerConfig, check_exposure
from casparian_trio.errors import ConfigError, TransportError
from casparian_trio.sentinel import Sentinel
from casparian_trio.store import Store, open_database
from casparian_trio.transport import open_dealer, open_router
from casparian_trio.transport.keys import KeyWatch, client_keys
from casparian_trio.worker import Worker

logger = logging.getLogger(__name__)


async def serve_sentinel(
    config: SentinelConfig, *, task_status: trio.TaskStatus[Sentinel] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a Sentinel on its database and address until cancelled."""
    check_exposure(config)
    try:
        channel = open_router(
            config.bind, keys=config.keys, max_message_bytes=config.max_message_bytes
        )
    except TransportError as exc:
        hint = (
            "another sentinel runs there; stop it or"
            if "in use" in str(exc)
            else "check the address, or"
        )
        raise ConfigError(f"{exc}; {hint} pass another --bind") from exc
    with channel:
        config.db.parent.mkdir(parents=True, exist_ok=True)
        # quick: the per-job transactions skip the thread hop (store/_db.py)
        db = open_database(config.db, quick=True)
        try:
            watch = None if config.keys is None else KeyWatch(config.keys)
            sentinel = Sentinel(config=config, store=Store(db), channel=channel, key_watch=watch)
            logger.info(
                "sentinel on %s, database %s, %s",
                channel.endpoint,
                config.db,
                f"keys {config.keys}" if config.keys else "no keys",
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(sentinel.run)
                task_status.started(sentinel)
        finally:
            db.close()


@asynccontextmanager
async def open_worker(config: WorkerConfig) -> AsyncIterator[Worker]:
    """A Worker on a DEALER socket with the bridge executor and the uv env manager."""
    from casparian_trio.bridge import BridgeExecutor, _privileges
    from casparian_trio.envs import SYSTEM_ENV, EnvManager
    from casparian_trio.worker.hardening import guest_privileges, make_undumpable

    make_undumpable()  # before any guest exists: none can read our memory or environ
    privileges = await trio.to_thread.run_sync(guest_privileges, config.guest_user)
    _privileges.configure(privileges)
    keys = None if config.keys is None else client_keys(config.keys, str(config.key))

    config.output.mkdir(parents=True, exist_ok=True)
    envs = EnvManager(
        root=config.envs_dir,
        max_bytes=config.envs_max_bytes,
        allow_system_fallback=config.allow_system_env,
    )
    # ``async with``: after a job, its guest (interpreter, pyarrow and the plugin
    # loaded) waits for the next job of that plugin version; leaving kills them.
    executor = BridgeExecutor(
        output_root=config.output,
        envs=envs,
        max_idle=config.idle_guests,
        guest_max_jobs=config.guest_max_jobs,
        guest_max_rss_mb=config.guest_max_rss_mb,
        guest_idle_s=config.guest_idle_s,
    )
    async with executor:
        # The system env's first job need not wait for an interpreter start:
        # a blank guest waits for it (killed after --guest-idle when unused).
        try:
            executor.prewarm(SYSTEM_ENV)
        except OSError as exc:  # no guest ahead of time: the first job starts one
            logger.warning("could not start a guest ahead of the first job: %s", exc)
        with open_dealer(
            config.connect,
            identity=config.identity,
            keys=keys,
            max_message_bytes=config.max_message_bytes,
        ) as channel:
            yield Worker(config=config, channel=channel, executor=executor, envs=envs)
