"""``_signals``: record SIGINT/SIGTERM before Trio, hand them to Trio, give them back.

Signals are real (``signal.raise_signal`` to this process); every test leaves
the handlers and the record as it found them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import trio
import trio.lowlevel

from casparian_trio import _signals


@pytest.fixture(autouse=True)
def saved_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in _signals.STOP_SIGNALS}
    _signals.restore_default()  # clears any record a previous test left
    try:
        yield
    finally:
        _signals.restore_default()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("sig", _signals.STOP_SIGNALS, ids=lambda s: s.name)
def test_early_handlers_record_a_signal_and_interrupt_nothing(sig: signal.Signals) -> None:
    _signals.install_early()
    assert _signals.stop_requested() is None
    signal.raise_signal(sig)  # would raise KeyboardInterrupt or end the process by default
    assert _signals.stop_requested() is sig


def test_the_first_signal_is_kept_and_install_early_is_idempotent() -> None:
    _signals.install_early()
    signal.raise_signal(signal.SIGTERM)
    _signals.install_early()  # what cli.main() does after __main__ did it
    signal.raise_signal(signal.SIGINT)
    assert _signals.stop_requested() is signal.SIGTERM


def test_restore_default_returns_the_early_signal_once_and_gives_defaults_back() -> None:
    _signals.install_early()
    signal.raise_signal(signal.SIGINT)
    assert _signals.restore_default() is signal.SIGINT
    assert _signals.stop_requested() is None
    assert _signals.restore_default() is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_ignore_from_now_survives_what_finalization_resets() -> None:
    _signals.install_early()
    _signals.ignore_from_now()
    for sig in _signals.STOP_SIGNALS:
        assert signal.getsignal(sig) == signal.SIG_IGN
        signal.raise_signal(sig)
    assert _signals.stop_requested() is None


# --- what cli.py relies on from Trio ---------------------------------------------------


def test_trio_run_leaves_the_early_sigint_handler_alone() -> None:
    # trio.run installs its KeyboardInterrupt delivery only over default_int_handler:
    # a SIGINT before the service's receiver is recorded, never raised.
    async def before_the_receiver() -> None:
        signal.raise_signal(signal.SIGINT)
        await trio.lowlevel.checkpoint()

    _signals.install_early()
    trio.run(before_the_receiver)
    assert _signals.stop_requested() is signal.SIGINT


def test_trio_receiver_takes_over_and_puts_the_early_handlers_back() -> None:
    async def with_receiver() -> int:
        with trio.open_signal_receiver(*_signals.STOP_SIGNALS) as signals:
            signal.raise_signal(signal.SIGTERM)
            async for signum in signals:
                return signum
        raise AssertionError("the receiver closed without a signal")

    _signals.install_early()
    assert trio.run(with_receiver) == signal.SIGTERM
    assert _signals.stop_requested() is None  # the receiver had it, not the early handler
    signal.raise_signal(signal.SIGTERM)  # final teardown: recorded again
    assert _signals.stop_requested() is signal.SIGTERM
