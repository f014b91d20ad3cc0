"""The guest pool: idle guests that run the next job of their plugin version.

A guest is started for one environment; its first job fixes its plugin version
(``PluginKey``: env, interpreter, artifact hash, source hash, memory limit) and
it never runs another. After a job that ended with an END frame the host hands
the guest back (``give_back``); the pool keeps it idle unless ``retire_reason``
says otherwise: it failed (any job that did not end in END: crash, ERROR frame,
memory cap, timeout, abort never come back), it ran ``max_jobs`` jobs, its RSS
passed ``max_rss_mb``, its plugin opts out (MANIFEST ``reuse_guest: false``),
or the pool is closed or full. The next job of the same version takes it
(``take``); a job of another version never does.

Blank guests (started ahead of time, no plugin loaded yet: ``prewarm`` and the
replacement started after a single-use guest takes its job) may be taken by
any plugin of their env.

Bounds: at most ``max_idle`` idle guests (the longest idle goes first); one
idle longer than ``idle_s`` is killed by ``reap`` (the executor runs it
periodically, and reaps the killed ones: ``reap_leaving``). An idle guest
holds its env against eviction. ``aclose()``
kills, reaps and removes every idle guest. Nothing here awaits except
``aclose`` (decisions are ``retire_reason``, a pure function).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import attrs
import trio

from casparian_trio.bridge._guestdir import (
    CLEANUP_GRACE_S,
    Guest,
    PluginKey,
    discard,
    discard_now,
    start_guest,
)
from casparian_trio.envs import EnvManager

logger = logging.getLogger(__name__)

# A guest is replaced after this many jobs (--guest-max-jobs): bounds what a
# plugin's leaks (caches, globals) can accumulate.
MAX_JOBS = 1000
# ... and when its resident memory passes this (--guest-max-rss-mb).
MAX_RSS_MB = 1024
# Idle guests are killed after this long without a job (--guest-idle).
IDLE_S = 60.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def retire_reason(
    *,
    succeeded: bool,
    reusable: bool,
    alive: bool,
    jobs: int,
    rss_mb: float | None,
    max_jobs: int,
    max_rss_mb: int,
) -> str | None:
    """Why a guest that just finished a job must not run another (None: keep it)."""
    if not succeeded:
        return "its job did not succeed"
    if not reusable:
        return "its plugin does not reuse guests"
    if not alive:
        return "it exited"
    if jobs >= max_jobs:
        return f"it ran {jobs} jobs (--guest-max-jobs {max_jobs})"
    if rss_mb is not None and rss_mb > max_rss_mb:
        return f"its RSS is {rss_mb:.0f} MB (--guest-max-rss-mb {max_rss_mb})"
    return None


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (None: gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return None


@attrs.define(eq=False)
class GuestPool:
    """Idle guests, most recently used last (see the module docstring)."""

    envs: EnvManager
    work_root: Path | None
    max_idle: int = 2
    max_jobs: int = MAX_JOBS
    max_rss_mb: int = MAX_RSS_MB
    idle_s: float = IDLE_S
    _idle: list[Guest] = attrs.field(factory=list)
    _leaving: list[Guest] = attrs.field(factory=list)  # killed, not yet reaped
    _open: bool = False

    @property
    def is_open(self) -> bool:
        """Guests are kept (inside the executor's ``async with``, and max_idle > 0)."""
        return self._open and self.max_idle > 0

    def open(self) -> None:
        self._open = True

    async def aclose(self) -> None:
        """Kill, reap and remove every idle guest; keep none from now on. Idempotent."""
        self._open = False
        while self._idle:
            await discard(self._idle.pop())
        await self.reap_leaving()

    async def reap_leaving(self) -> None:
        """Wait for the guests killed without waiting (bounded, shielded)."""
        while self._leaving:
            guest = self._leaving.pop()
            assert guest.proc is not None
            with trio.move_on_after(CLEANUP_GRACE_S, shield=True):
                await guest.proc.wait()

    def idle(self) -> list[Guest]:
        """The idle guests now, longest idle first (a copy; for monitoring and tests)."""
        return list(self._idle)

    def take(self, key: PluginKey, python: Path) -> Guest | None:
        """A live idle guest of this plugin version, else a blank one of its env, else None."""
        for want_blank in (False, True):
            for guest in reversed(self._idle):
                fits = guest.key is None if want_blank else guest.key == key
                if not fits or guest.python != python or guest.env_hash != key.env_hash:
                    continue
                self._idle.remove(guest)
                assert guest.proc is not None
                if guest.proc.returncode is not None:
                    self._kill(guest)  # died while idle: look further
                    return self.take(key, python)
                guest.env_hold.close()  # the job's own ``envs.using`` holds the env now
                return guest
        return None

    def give_back(self, guest: Guest, *, reusable: bool, now: float) -> str | None:
        """Keep ``guest`` (after a successful job) idle; else return why not (then discard it).

        Call while the job still holds the env (inside its ``envs.using``).
        """
        assert guest.proc is not None
        reason = retire_reason(
            succeeded=True,
            reusable=reusable,
            alive=guest.proc.returncode is None,
            jobs=guest.jobs,
            rss_mb=rss_mb(guest.proc.pid),
            max_jobs=self.max_jobs,
            max_rss_mb=self.max_rss_mb,
        )
        if reason is None and not self.is_open:
            reason = "the pool is closed"
        if reason is None:
            try:
                guest.env_hold.enter_context(self.envs.using(guest.env_hash))
            except Exception as exc:  # evicted meanwhile: not worth keeping
                reason = f"its env is going away ({exc})"
        if reason is not None:
            return reason  # the caller discards it
        guest.idle_since = now
        self._idle.append(guest)
        self._trim()
        return None

    def reap(self, now: float) -> int:
        """Kill the guests idle for longer than ``idle_s``; how many."""
        old = [g for g in self._idle if now - g.idle_since >= self.idle_s]
        for guest in old:
            self._idle.remove(guest)
            self._kill(guest)
        return len(old)

    def prewarm(self, env_hash: str) -> None:
        """Start a blank guest for ``env_hash`` unless one is idle (no-op when closed).

        Raises:
            EnvError: the env is not available here.
        """
        if not self.is_open:
            return
        if any(g.key is None and g.env_hash == env_hash for g in self._idle):
            return
        hold = contextlib.ExitStack()
        with hold:
            python = hold.enter_context(self.envs.using(env_hash))
            guest = start_guest(env_hash, python, self.work_root)
            guest.env_hold = hold.pop_all()
        guest.idle_since = trio.current_time()
        self._idle.append(guest)
        self._trim()

    def _trim(self) -> None:
        while len(self._idle) > self.max_idle:
            self._kill(self._idle.pop(0))  # the longest idle

    def _kill(self, guest: Guest) -> None:
        discard_now(guest)
        assert guest.proc is not None
        if guest.proc.returncode is None:
            self._leaving.append(guest)  # reaped by reap_leaving

    def replace(self, env_hash: str) -> None:
        """After a single-use guest took its job: start the next one (best effort, never raises)."""
        try:
            self.prewarm(env_hash)
        except Exception:
            logger.warning("could not start a guest ahead for %s", env_hash, exc_info=True)
