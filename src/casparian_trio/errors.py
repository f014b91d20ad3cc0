"""The whole exception tree of casparian_trio, in one place.

Errors carry fields, not only strings, so handlers can decide without parsing
messages. A user's job that fails is data (a Conclude receipt), never one of
these crossing a nursery.
"""

from __future__ import annotations


class CasparianError(Exception):
    """Root of every error this package raises on purpose."""


# --- protocol -----------------------------------------------------------------


class ProtocolError(CasparianError):
    """A message that does not follow protocol v4."""


class LocalProtocolError(ProtocolError):
    """We tried to build or send an invalid message (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent an invalid message; drop it and keep serving.

    Attributes:
        field: the offending payload field, when one is to blame.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --- transport ----------------------------------------------------------------


class TransportError(CasparianError):
    """Sending or receiving on a socket failed."""


class TransportClosed(TransportError):
    """The socket was closed (by us, possibly while a task waited on it)."""


class TransportTimeout(TransportError):
    """A send or receive did not finish in time."""


class PeerUnreachable(TransportError):
    """A ROUTER could not route to the identity (departed or unknown peer).

    Attributes:
        identity: the routing identity that could not be reached.
    """

    def __init__(self, identity: bytes) -> None:
        super().__init__(f"peer {identity!r} is not connected")
        self.identity = identity


# --- store --------------------------------------------------------------------


class StoreError(CasparianError):
    """The database could not do what was asked."""


class SchemaError(StoreError):
    """The database's schema is newer than this program or cannot be upgraded."""


class CatalogError(StoreError):
    """A job references something the catalog does not have.

    Attributes:
        job_id: the job that cannot be resolved.
    """

    def __init__(self, message: str, *, job_id: int | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


# --- environments, sinks, bridge ---------------------------------------------


class EnvError(CasparianError):
    """An environment could not be built or found.

    Attributes:
        env_hash: the environment concerned.
    """

    def __init__(self, message: str, *, env_hash: str | None = None) -> None:
        super().__init__(message)
        self.env_hash = env_hash


class SinkError(CasparianError):
    """Output could not be written, or a sink URI or schema is invalid."""


class OutputSuperseded(SinkError):
    """A newer version of the job's source file already has its output promoted.

    The job's own output is stale: the worker drops it and the receipt ends the
    job SUPERSEDED (not counted, not retried), like an input changed since scan.
    """


class BridgeError(CasparianError):
    """The guest process misbehaved (bad frames, no end frame, crash)."""


class GuestCrashed(BridgeError):
    """The guest exited without finishing its stream.

    Attributes:
        returncode: the guest's exit status (negative: killed by that signal).
        stderr_tail: the last lines the guest wrote to stderr.
    """

    def __init__(self, returncode: int | None, stderr_tail: str) -> None:
        super().__init__(f"guest exited with status {returncode}: {stderr_tail.strip()[-500:]}")
        self.returncode = returncode
        self.stderr_tail = stderr_tail


# --- configuration and command line --------------------------------------------


class ConfigError(CasparianError):
    """A setting, command-line argument or input file is invalid."""


class PluginError(CasparianError):
    """A plugin file cannot be published (syntax, no Handler, bad MANIFEST)."""


class ShutdownRequested(CasparianError):
    """Raised inside an intake nursery to stop taking work (hypercorn's trio/run.py shape)."""


# --- naming a failure in one line ---------------------------------------------


def leaves(exc: BaseException) -> list[BaseException]:
    """Every non-group exception inside ``exc``, depth first (``[exc]`` for a plain one)."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    found: list[BaseException] = []
    for inner in exc.exceptions:
        found.extend(leaves(inner))
    return found


def first_cause(exc: BaseException) -> tuple[BaseException, int]:
    """The exception that names a failure, and how many other causes came with it.

    Trio nurseries wrap everything in ExceptionGroups; a user must never see one.
    The first of our own errors (``CasparianError``) wins, else the first leaf.

    Returns:
        ``(cause, others)``: the leaf to report and the count of the other leaves.
    """
    found = leaves(exc)
    ours = [e for e in found if isinstance(e, CasparianError)]
    cause = ours[0] if ours else found[0]
    return cause, len(found) - 1


def one_line(exc: BaseException) -> str:
    """``exc`` as one line for a receipt, log or terminal: its first cause, others counted.

    Our own errors are shown by their message; anything else as ``Type: message``.
    Never mentions ExceptionGroup.
    """
    cause, others = first_cause(exc)
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    if not isinstance(cause, CasparianError):
        text = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    elif not text:
        text = type(cause).__name__
    if others:
        text += f" (and {others} more error{'s' if others > 1 else ''})"
    return text
