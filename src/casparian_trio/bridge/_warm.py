"""Warm guests: step 2 of a job (start a guest for its env) done ahead of time.

Once a job has handed its spec to its guest, the executor starts the next
guest for the same env, so a later job only pays for the hand-over, not for an
interpreter start and the pyarrow import. Still one fresh process per job,
same environment, process group and PDEATHSIG; a waiting guest holds its env
against eviction. At most ``max_warm`` wait at a time (least recently used envs
lose theirs); a dead one is discarded at take time; ``aclose()`` kills and
reaps every one and removes its dir.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import attrs

from casparian_trio.bridge._guestdir import Guest, discard, discard_now, start_guest
from casparian_trio.envs import EnvManager

logger = logging.getLogger(__name__)

# Warm guests kept at most (each is an idle interpreter with pyarrow, ~60 MB).
MAX_WARM = 2


@attrs.define(eq=False)
class WarmPool:
    """Idle guests keyed by env hash, at most ``max_warm`` (0: keep none)."""

    envs: EnvManager
    work_root: Path | None
    max_warm: int = MAX_WARM
    _guests: dict[str, Guest] = attrs.field(factory=dict)
    _open: bool = False

    def open(self) -> None:
        self._open = True

    async def aclose(self) -> None:
        """Kill, reap and remove every warm guest; keep none from now on. Idempotent."""
        self._open = False
        while self._guests:
            _, guest = self._guests.popitem()
            await discard(guest)

    def waiting(self) -> dict[str, Guest]:
        """The guests waiting now, by env hash (a copy; for monitoring and tests)."""
        return dict(self._guests)

    def take(self, env_hash: str, python: Path) -> Guest | None:
        """A live warm guest for ``env_hash`` running ``python``, or None."""
        guest = self._guests.pop(env_hash, None)
        if guest is None:
            return None
        assert guest.proc is not None
        if guest.python != python or guest.proc.returncode is not None:
            discard_now(guest)  # died while waiting: start a fresh one
            return None
        guest.env_hold.close()  # the job's own ``envs.using`` holds the env now
        return guest

    def prewarm(self, env_hash: str) -> None:
        """Start a warm guest for ``env_hash`` if none waits (no-op when closed).

        Raises:
            EnvError: the env is not available here.
        """
        if not self._open or self.max_warm <= 0 or env_hash in self._guests:
            return
        hold = contextlib.ExitStack()
        with hold:
            python = hold.enter_context(self.envs.using(env_hash))
            guest = start_guest(env_hash, python, self.work_root)
            guest.env_hold = hold.pop_all()
        self._guests[env_hash] = guest
        while len(self._guests) > self.max_warm:
            discard_now(self._guests.pop(next(iter(self._guests))))

    def replace(self, env_hash: str) -> None:
        """After a hand-over: start the next guest for this env (best effort, never raises)."""
        try:
            self.prewarm(env_hash)
        except Exception:
            logger.warning("could not start a warm guest for %s", env_hash, exc_info=True)
