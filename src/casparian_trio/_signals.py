"""Stop signals from the first statement of an entry point, before Trio can take them.

Theory of operation
-------------------
A SIGTERM or SIGINT may arrive at any moment of start-up: while ``cli`` imports
trio, zmq and pyarrow, while the config is read, or inside ``trio.run`` before
``trio.open_signal_receiver`` is in place. Python's defaults would end the
process there with status -15 (SIGTERM) or a KeyboardInterrupt traceback.

So the entry points call ``install_early()`` first. Its handlers only record
the first signal; nothing is interrupted. Then:

- a long-running service (``sentinel``, ``worker``, ``demo``) keeps them until
  its Trio signal receiver takes over, and asks ``stop_requested()`` right after
  installing that receiver: a signal that came before stops the service at once.
  When the receiver exits it puts these handlers back, so a signal during the
  final teardown is recorded too; once the service has returned,
  ``ignore_from_now()`` covers interpreter finalization, and the exit status
  stays 0;
- any other command calls ``restore_default()``: Ctrl-C raises KeyboardInterrupt
  again and SIGTERM kills, and a signal recorded before means "exit 0 now".

A signal that arrives before the interpreter reaches our first statement (it
imports ``site`` and the ``.pth`` files first) meets the OS default; no code of
ours can catch that one.

Standard library only, and nothing heavy: this runs before every other import.
"""

from __future__ import annotations

import signal
from types import FrameType

# The signals that stop a service. SIGINT is installed first, so a process that
# catches SIGTERM (visible in /proc/PID/status) has both handlers in place.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_first: int | None = None  # the first stop signal recorded since the process started


def _record(signum: int, _frame: FrameType | None) -> None:
    global _first
    if _first is None:
        _first = signum


def install_early() -> None:
    """Record SIGINT and SIGTERM instead of acting on them. Idempotent.

    A signal already recorded stays recorded.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, _record)


def stop_requested() -> signal.Signals | None:
    """The first stop signal recorded by the early handlers, or None."""
    return None if _first is None else signal.Signals(_first)


def ignore_from_now() -> None:
    """Ignore SIGINT and SIGTERM for the rest of the process: it is on its way out.

    Interpreter finalization stops running Python handlers and resets them to
    SIG_DFL early, while modules are still being torn down; an ignored signal
    stays ignored, so a late signal cannot turn exit 0 into -15.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def restore_default() -> signal.Signals | None:
    """Give SIGINT and SIGTERM their default behaviour back, for a command that is no service.

    SIGINT raises KeyboardInterrupt again (``signal.default_int_handler``) and
    SIGTERM ends the process (``SIG_DFL``).

    Returns:
        The signal recorded before the restore (the caller should exit 0 at
        once), or None. The record is cleared either way.
    """
    global _first
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Read after restoring: a signal in between was recorded, one after acts.
    early = stop_requested()
    _first = None
    return early
