"""Frozen settings for the Sentinel and the Worker, with the defaults users expect.

Values come from the command line (cli.py) or from ``CASPARIAN_*`` environment
variables; every invalid value is a ConfigError naming the setting and the fix.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import attrs

from casparian_trio.errors import ConfigError

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
DEFAULT_DB = "./casparian.db"
DEFAULT_OUTPUT = "./output"
# Heartbeat every 2 s and declare a worker dead after 3 missed beats: quick
# recovery of a dead worker's job without flapping on a busy machine.
DEFAULT_HEARTBEAT_INTERVAL = 2.0
LIVENESS_MULTIPLIER = 3.0
# A job without its own timeout may run an hour; the worker enforces it, the
# Sentinel aborts after this plus ABORT_GRACE as a backstop.
DEFAULT_JOB_TIMEOUT = 3600.0
DEFAULT_ABORT_GRACE = 10.0
# How often the Sentinel looks for work committed by other processes (CLI scan,
# submit, cancel): PRAGMA data_version is a cheap read, and users expect < 1 s.
DEFAULT_DB_POLL_INTERVAL = 0.5
DEFAULT_DRAIN_GRACE = 30.0
# An env build downloads packages; give it much longer than a job start.
DEFAULT_ENV_PREPARE_TIMEOUT = 900.0


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value}")


def check_address(address: str, what: str) -> str:
    """Refuse an address ZeroMQ would reject later with a less helpful error."""
    if not address.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"{what} {address!r} must look like tcp://HOST:PORT or ipc:///path")
    return address


@attrs.frozen(kw_only=True)
class SentinelConfig:
    bind: str = DEFAULT_ADDRESS
    db: Path = Path(DEFAULT_DB)
    heartbeat_interval: float = attrs.field(default=DEFAULT_HEARTBEAT_INTERVAL, validator=_positive)
    liveness_timeout: float | None = None
    job_timeout: float = attrs.field(default=DEFAULT_JOB_TIMEOUT, validator=_positive)
    abort_grace: float = attrs.field(default=DEFAULT_ABORT_GRACE, validator=_positive)
    db_poll_interval: float = attrs.field(default=DEFAULT_DB_POLL_INTERVAL, validator=_positive)
    env_prepare_timeout: float = attrs.field(
        default=DEFAULT_ENV_PREPARE_TIMEOUT, validator=_positive
    )

    @property
    def liveness(self) -> float:
        """Silence after which a worker is declared lost."""
        return self.liveness_timeout or LIVENESS_MULTIPLIER * self.heartbeat_interval

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] = os.environ, **overrides: object
    ) -> SentinelConfig:
        values: dict[str, object] = {}
        if "CASPARIAN_BIND" in environ:
            values["bind"] = environ["CASPARIAN_BIND"]
        if "CASPARIAN_DB" in environ:
            values["db"] = Path(environ["CASPARIAN_DB"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        check_address(str(values.get("bind", DEFAULT_ADDRESS)), "--bind")
        return cls(**values)  # type: ignore[arg-type]


def default_envs_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "casparian_trio" / "envs"


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@attrs.frozen(kw_only=True)
class WorkerConfig:
    connect: str = DEFAULT_ADDRESS
    output: Path = Path(DEFAULT_OUTPUT)
    worker_id: str = attrs.field(factory=default_worker_id)
    concurrency: int = 1
    capabilities: tuple[str, ...] = ("*",)
    heartbeat_interval: float = attrs.field(default=DEFAULT_HEARTBEAT_INTERVAL, validator=_positive)
    grace: float = attrs.field(default=DEFAULT_DRAIN_GRACE, validator=_positive)
    envs_root: Path | None = None
    envs_max_bytes: int | None = None
    allow_system_env: bool = False
    # Guests kept started (interpreter + pyarrow loaded), one for each of this many
    # recently used envs: ~17 ms instead of ~150 ms per job start, ~80 MB each.
    warm_guests: int = 2

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.warm_guests < 0:
            raise ConfigError(f"--warm-guests must be 0 or more, got {self.warm_guests}")
        if not self.worker_id or len(self.worker_id.encode()) > 200:
            raise ConfigError("--worker-id must be 1 to 200 bytes")

    @property
    def liveness(self) -> float:
        """Silence of the Sentinel after which the worker warns (it answers every heartbeat)."""
        return LIVENESS_MULTIPLIER * self.heartbeat_interval

    @property
    def identity(self) -> bytes:
        """The ZeroMQ routing id: stable per worker id, so a reconnect keeps it."""
        return self.worker_id.encode()

    @property
    def envs_dir(self) -> Path:
        """Shared by every worker on the machine, so each env is built once."""
        return self.envs_root or default_envs_root()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: object) -> WorkerConfig:
        values: dict[str, object] = {}
        if "CASPARIAN_CONNECT" in environ:
            values["connect"] = environ["CASPARIAN_CONNECT"]
        if "CASPARIAN_OUTPUT" in environ:
            values["output"] = Path(environ["CASPARIAN_OUTPUT"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        check_address(str(values.get("connect", DEFAULT_ADDRESS)), "--connect")
        return cls(**values)  # type: ignore[arg-type]
