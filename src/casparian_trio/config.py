"""Frozen settings for the Sentinel and the Worker, with the defaults users expect.

Each setting is an attrs field whose metadata (``_option``) names its flag, its
help and, when it differs, its default as ``--help`` shows it, so the command
line is built from these classes. Every setting has an environment variable:
``CASPARIAN_`` and the field (TOML key) in capitals (``CASPARIAN_GRACE_S``), or
the one ``_option`` names (``CASPARIAN_BIND``, ``CASPARIAN_DB``). ``load`` layers the sources, later ones winning: defaults,
then a TOML file (``--config PATH``, else ``casparian.toml`` in the working
folder: a ``[sentinel]`` and a ``[worker]`` table keyed by field name), then
environment variables, then flags. Every invalid value is a ConfigError naming
the setting and the fix.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from casparian_trio.errors import ConfigError
from casparian_trio.protocol.limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    WORKER_ID_MAX_BYTES,
    is_worker_id,
)

C = TypeVar("C", "SentinelConfig", "WorkerConfig")

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
# LOST/GONE/STOPPED worker rows are kept a week for operators, then pruned.
DEFAULT_WORKER_RETENTION = 7 * 24 * 3600.0
KEYS_ENV = "CASPARIAN_KEYS"
# Hosts a keyless Sentinel may bind: nothing off this machine can reach them.
LOOPBACK_HOSTS = ("localhost", "[::1]", "::1")


CONFIG_FILE = "casparian.toml"  # read from the working folder when --config is not given
CONFIG_ENV = "CASPARIAN_CONFIG"  # the config file when --config is not given
ENV_PREFIX = "CASPARIAN_"


def _option(
    help: str,
    *,
    flag: str | None = None,
    env: str | None = None,
    kind: str = "value",
    default_help: str | None = None,
    metavar: str | None = None,
) -> dict[str, Any]:
    """Field metadata: the option's help, flag (default --field-name), env var and default text."""
    return {
        "help": help,
        "flag": flag,
        "env": env,
        "kind": kind,
        "default_help": default_help,
        "metavar": metavar,
    }


def options(cls: type) -> list[attrs.Attribute[Any]]:
    """The fields of ``cls`` that are command-line options (they carry ``_option`` metadata)."""
    return [f for f in attrs.fields(cls) if "help" in f.metadata]


def flag_of(field: attrs.Attribute[Any]) -> str:
    return str(field.metadata["flag"] or "--" + field.name.replace("_", "-"))


def env_of(field: attrs.Attribute[Any]) -> str:
    """The option's environment variable: the one it names, else CASPARIAN_<FIELD>."""
    return str(field.metadata["env"] or ENV_PREFIX + field.name.upper())


def _convert(field: attrs.Attribute[Any], value: object, source: str) -> object:
    """A TOML, env or flag value as the field's type ('capabilities' may be a list)."""
    kind = field.metadata["kind"]
    try:
        if kind == "path":
            return Path(str(value)).expanduser()
        if kind == "list":
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(str(v).strip() for v in items if str(v).strip())
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if kind in ("float", "int"):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value) if kind == "float" else int(str(value))  # type: ignore[arg-type]
        return str(value)
    except ValueError:
        raise ConfigError(f"{field.name} from {source}: {value!r} is not a valid {kind}") from None


def read_toml(
    path: Path | None, section: str, environ: Mapping[str, str] = os.environ
) -> dict[str, object]:
    """The ``[section]`` table of ``path`` (else $CASPARIAN_CONFIG, else ./casparian.toml).

    Raises:
        ConfigError: ``path`` given but missing, not valid TOML, or ``section`` not a table.
    """
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    if path is None:
        default = Path(CONFIG_FILE)
        if not default.is_file():
            return {}
        path = default
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [{section}] must be a table")
    return dict(table)


def load(
    cls: type[C],
    flags: Mapping[str, object],
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    section: str,
) -> C:
    """``cls`` from defaults < TOML ``[section]`` < environment < flags (None: not given).

    Raises:
        ConfigError: an unknown key in the file, or a value of the wrong type.
    """
    fields = {f.name: f for f in options(cls)}
    values: dict[str, object] = {}
    for key, value in read_toml(config_path, section, environ).items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"config file: unknown [{section}] key {key!r}; known keys: {known}")
        values[key] = _convert(fields[key], value, f"[{section}] in the config file")
    for name, field in fields.items():
        env = env_of(field)
        if env in environ:
            values[name] = _convert(field, environ[env], f"${env}")
    for name, value in flags.items():
        if value is not None and name in fields:
            values[name] = _convert(fields[name], value, flag_of(fields[name]))
    return cls(**values)  # type: ignore[arg-type]


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value}")


def is_loopback(address: str) -> bool:
    """True for ipc:// and tcp:// on 127.0.0.0/8, ::1 or localhost (a wildcard or an interface: False)."""
    if address.startswith("ipc://"):
        return True
    host = address.removeprefix("tcp://").rpartition(":")[0]
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_exposure(config: SentinelConfig) -> None:
    """A Sentinel without keys binds loopback only (unless ``--insecure``).

    Raises:
        ConfigError: one line naming ``keys init`` and ``--insecure``.
    """
    if config.keys is None and not config.insecure and not is_loopback(config.bind):
        raise ConfigError(
            f"--bind {config.bind} without keys lets anyone who reaches the port run code on "
            "every worker; run `casparian-trio keys init DIR` and pass --keys DIR, or pass "
            "--insecure on a trusted network"
        )


def _check_message_bytes(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 64 * 1024:
        raise ConfigError(f"--max-message-bytes must be at least 65536, got {value}")


def check_address(address: str, what: str) -> str:
    """Refuse an address ZeroMQ would reject later with a less helpful error."""
    if not address.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"{what} {address!r} must look like tcp://HOST:PORT or ipc:///path")
    return address


@attrs.frozen(kw_only=True)
class SentinelConfig:
    bind: str = attrs.field(
        default=DEFAULT_ADDRESS, metadata=_option("ZeroMQ address to bind", env="CASPARIAN_BIND")
    )
    keys: Path | None = attrs.field(
        default=None,
        metadata=_option(
            "keys folder (keys init): CURVE on the socket, only authorized keys get in",
            env=KEYS_ENV,
            kind="path",
            default_help="no keys: loopback only",
        ),
    )
    insecure: bool = attrs.field(
        default=False,
        metadata=_option("allow binding a non-loopback address without keys", kind="bool"),
    )
    max_message_bytes: int = attrs.field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        validator=_check_message_bytes,
        metadata=_option(
            "largest message accepted; a peer sending more is dropped (ZMQ_MAXMSGSIZE)",
            kind="int",
        ),
    )
    worker_retention_s: float = attrs.field(
        default=DEFAULT_WORKER_RETENTION,
        validator=_positive,
        metadata=_option(
            "seconds LOST/GONE/STOPPED workers stay listed before they are pruned",
            flag="--worker-retention",
            kind="float",
        ),
    )
    db: Path = attrs.field(
        default=Path(DEFAULT_DB),
        metadata=_option(
            "SQLite file (made by init-db)",
            env="CASPARIAN_DB",
            kind="path",
            default_help=DEFAULT_DB,
        ),
    )
    heartbeat_interval_s: float = attrs.field(
        default=DEFAULT_HEARTBEAT_INTERVAL,
        validator=_positive,
        metadata=_option("seconds between heartbeats", flag="--heartbeat-interval", kind="float"),
    )
    liveness_timeout_s: float | None = attrs.field(
        default=None,
        metadata=_option(
            "seconds of silence before a worker is lost",
            flag="--liveness-timeout",
            kind="float",
            default_help="3 x heartbeat interval",
        ),
    )
    job_timeout_s: float = attrs.field(
        default=DEFAULT_JOB_TIMEOUT,
        validator=_positive,
        metadata=_option(
            "seconds a job without its own timeout may run", flag="--job-timeout", kind="float"
        ),
    )
    abort_grace_s: float = attrs.field(
        default=DEFAULT_ABORT_GRACE,
        validator=_positive,
        metadata=_option("seconds a worker gets after ABORT", flag="--abort-grace", kind="float"),
    )
    db_poll_interval_s: float = attrs.field(
        default=DEFAULT_DB_POLL_INTERVAL,
        validator=_positive,
        metadata=_option(
            "seconds between looks for work other processes committed",
            flag="--db-poll-interval",
            kind="float",
        ),
    )
    env_prepare_timeout_s: float = attrs.field(
        default=DEFAULT_ENV_PREPARE_TIMEOUT,
        validator=_positive,
        metadata=_option(
            "seconds a worker may take to build an env", flag="--env-prepare-timeout", kind="float"
        ),
    )

    # The dashboard and /metrics (issue 14): off unless asked for, loopback unless a token.
    http: str | None = attrs.field(
        default=None,
        metadata=_option(
            "serve the dashboard and /metrics on HOST:PORT (or :PORT on 127.0.0.1); "
            "an address other than loopback needs --http-token",
            default_help="off",
            metavar="HOST:PORT",
        ),
    )
    http_token: str | None = attrs.field(
        default=None,
        metadata=_option(
            "token every dashboard request must carry (Bearer header, or ?token= once in a "
            "browser); enables the cancel and retry buttons",
            default_help="none: the dashboard is read-only",
            metavar="TOKEN",
        ),
    )

    @property
    def liveness_s(self) -> float:
        """Silence after which a worker is declared lost."""
        return self.liveness_timeout_s or LIVENESS_MULTIPLIER * self.heartbeat_interval_s

    @classmethod
    def load(
        cls,
        flags: Mapping[str, object] = {},
        *,
        config_path: Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> SentinelConfig:
        """Defaults < ``[sentinel]`` of the TOML file < ``CASPARIAN_*`` < flags."""
        config = load(cls, flags, config_path=config_path, environ=environ, section="sentinel")
        check_address(config.bind, "--bind")  # the in-memory transport's tests build it directly
        if config.http is not None or config.http_token is not None:
            from casparian_trio.http._address import check_http_settings

            check_http_settings(config.http, config.http_token)
        check_exposure(config)
        return config


def default_envs_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "casparian_trio" / "envs"


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@attrs.frozen(kw_only=True)
class WorkerConfig:
    connect: str = attrs.field(
        default=DEFAULT_ADDRESS, metadata=_option("Sentinel address", env="CASPARIAN_CONNECT")
    )
    output: Path = attrs.field(
        default=Path(DEFAULT_OUTPUT),
        metadata=_option(
            "output root", env="CASPARIAN_OUTPUT", kind="path", default_help=DEFAULT_OUTPUT
        ),
    )
    keys: Path | None = attrs.field(
        default=None,
        metadata=_option(
            "keys folder holding KEY.key_secret and sentinel.key (CURVE)",
            env=KEYS_ENV,
            kind="path",
            default_help="no keys",
        ),
    )
    key: str | None = attrs.field(
        default=None,
        metadata=_option("this worker's key name in --keys (its identity)", default_help="none"),
    )
    worker_id: str = attrs.field(
        default=attrs.Factory(lambda self: self.key or default_worker_id(), takes_self=True),
        metadata=_option("stable id", default_help="the key name, else HOST-PID"),
    )
    concurrency: int = attrs.field(default=1, metadata=_option("jobs at once", kind="int"))
    # Jobs held beyond --concurrency so the next small file's job is already here
    # when a slot frees (worker/service.py: "Prefetch").
    prefetch: int = attrs.field(
        default=1,
        metadata=_option(
            "jobs held ready beyond --concurrency while jobs are short (0: none)", kind="int"
        ),
    )
    capabilities: tuple[str, ...] = attrs.field(
        default=("*",), metadata=_option("comma-separated plugin names", kind="list")
    )
    heartbeat_interval_s: float = attrs.field(
        default=DEFAULT_HEARTBEAT_INTERVAL,
        validator=_positive,
        metadata=_option("seconds between heartbeats", flag="--heartbeat-interval", kind="float"),
    )
    grace_s: float = attrs.field(
        default=DEFAULT_DRAIN_GRACE,
        validator=_positive,
        metadata=_option(
            "seconds running jobs get to finish on SIGTERM", flag="--grace", kind="float"
        ),
    )
    envs_root: Path | None = attrs.field(
        default=None,
        metadata=_option(
            "where plugin envs are built",
            kind="path",
            default_help="$XDG_CACHE_HOME/casparian_trio/envs",
        ),
    )
    envs_max_bytes: int | None = attrs.field(
        default=None,
        metadata=_option(
            "evict least recently used envs beyond this size in bytes",
            kind="int",
            default_help="no limit",
        ),
    )
    allow_system_env: bool = attrs.field(
        default=False,
        metadata=_option(
            "run plugins whose env is unknown in this interpreter; with --keys, also plugins "
            "without a lockfile (env system)",
            kind="bool",
        ),
    )
    source_roots: tuple[str, ...] = attrs.field(
        default=(),
        metadata=_option(
            "comma-separated folders inputs must lie under",
            flag="--source-root",
            kind="list",
            default_help="the roots the Sentinel announces",
        ),
    )
    guest_user: str = attrs.field(
        default="nobody",
        metadata=_option("the user guests run as when the worker runs as root"),
    )
    max_message_bytes: int = attrs.field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        validator=_check_message_bytes,
        metadata=_option("largest message accepted from the Sentinel (ZMQ_MAXMSGSIZE)", kind="int"),
    )
    # Idle guests kept for the next job of their plugin version (interpreter,
    # pyarrow and the plugin loaded: no process start per job), ~80 MB each.
    warm_guests: int | None = attrs.field(
        default=None,
        metadata=_option(
            "idle guests kept for their plugin's next job (0: a new process per job)",
            kind="int",
            default_help="2 x --concurrency",
        ),
    )
    guest_max_jobs: int = attrs.field(
        default=1000, metadata=_option("jobs a guest runs before it is replaced", kind="int")
    )
    guest_max_rss_mb: int = attrs.field(
        default=1024,
        metadata=_option("a guest whose RSS passes this after a job is replaced", kind="int"),
    )
    guest_idle_s: float = attrs.field(
        default=60.0,
        metadata=_option(
            "seconds an idle guest is kept without a job", flag="--guest-idle", kind="float"
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.prefetch < 0:
            raise ConfigError(f"--prefetch must be 0 or more, got {self.prefetch}")
        if self.warm_guests is not None and self.warm_guests < 0:
            raise ConfigError(f"--warm-guests must be 0 or more, got {self.warm_guests}")
        if self.guest_max_jobs < 1:
            raise ConfigError(f"--guest-max-jobs must be at least 1, got {self.guest_max_jobs}")
        if self.guest_max_rss_mb < 1:
            raise ConfigError(f"--guest-max-rss-mb must be at least 1, got {self.guest_max_rss_mb}")
        if self.guest_idle_s <= 0:
            raise ConfigError(f"--guest-idle must be > 0, got {self.guest_idle_s}")
        if not is_worker_id(self.worker_id):  # undecodable argv bytes are no UTF-8 text either
            raise ConfigError(f"--worker-id must be 1 to {WORKER_ID_MAX_BYTES} bytes of UTF-8 text")
        if (self.keys is None) != (self.key is None):
            raise ConfigError(
                "--keys DIR and --key NAME go together (the key pair DIR/NAME.key_secret)"
            )

    @property
    def idle_guests(self) -> int:
        """Idle guests the bridge keeps: ``--warm-guests``, else two per slot."""
        return 2 * self.concurrency if self.warm_guests is None else self.warm_guests

    @property
    def liveness_s(self) -> float:
        """Silence of the Sentinel after which the worker warns (it answers every heartbeat)."""
        return LIVENESS_MULTIPLIER * self.heartbeat_interval_s

    @property
    def identity(self) -> bytes:
        """The ZeroMQ routing id: stable per worker id, so a reconnect keeps it.

        With keys it is the key name: the Sentinel refuses a worker key whose
        routing id is anything else, so no key can speak under another's route.
        """
        return (self.key or self.worker_id).encode()

    @property
    def envs_dir(self) -> Path:
        """Shared by every worker on the machine, so each env is built once."""
        return self.envs_root or default_envs_root()

    @classmethod
    def load(
        cls,
        flags: Mapping[str, object] = {},
        *,
        config_path: Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> WorkerConfig:
        """Defaults < ``[worker]`` of the TOML file < ``CASPARIAN_*`` < flags."""
        config = load(cls, flags, config_path=config_path, environ=environ, section="worker")
        check_address(config.connect, "--connect")
        return config
