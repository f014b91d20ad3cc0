"""CURVE key files and roles: the keys directory ``keys init|add|revoke`` manage.

Layout (certificates in the format ``zmq.auth.create_certificates`` writes)::

    DIR/sentinel.key, DIR/sentinel.key_secret    the Sentinel's key pair
    DIR/NAME.key, DIR/NAME.key_secret            a worker's or an admin's key pair
    DIR/authorized/workers/NAME.key              public keys allowed to act as workers
    DIR/authorized/admins/NAME.key               public keys allowed to DEPLOY

A peer is authorized by the public key in ``authorized/<role>s/``; the file's
name (without ``.key``) is its name, and for a worker its identity: the
Sentinel takes the worker id from the key, never from what the peer says.
``KeyRing.load`` reads the ``authorized`` folders afresh, so adding or revoking
a key takes effect for the next connection without a restart.

Secret files are written 0600 and the folders 0700: whoever reads a secret key
is that peer.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import zmq.auth

from casparian_trio.errors import ConfigError

SENTINEL_KEY = "sentinel"
KEYS_ENV = "CASPARIAN_KEYS"
# Names become file names and log fields: keep them plain and short.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The ZAP User-Id the authenticator gives a key: "<role>:<name>".
_USER_ID_SEP = ":"
# KeyWatch re-reads the authorized folders at least this often (seconds).
RELOAD_S = 1.0


class Role(enum.Enum):
    WORKER = "worker"
    ADMIN = "admin"

    @property
    def folder(self) -> str:
        return f"{self.value}s"


@attrs.frozen
class Peer:
    """An authenticated key: its role and its name (a worker's identity)."""

    role: Role
    name: str

    @property
    def user_id(self) -> str:
        """The ZAP User-Id the Sentinel reads back from every message."""
        return f"{self.role.value}{_USER_ID_SEP}{self.name}"

    @classmethod
    def from_user_id(cls, user_id: str) -> Peer | None:
        """The peer a User-Id names; None for anything our authenticator never issues."""
        role, sep, name = user_id.partition(_USER_ID_SEP)
        if not sep or not _NAME.fullmatch(name):
            return None
        try:
            return cls(Role(role), name)
        except ValueError:
            return None


@attrs.frozen
class KeyPair:
    """z85-encoded CURVE keys (``secret`` None for a public certificate)."""

    public: bytes
    secret: bytes | None


@attrs.frozen
class ClientKeys:
    """What a worker or a publisher needs to connect: its own pair, the Sentinel's public key."""

    name: str
    own: KeyPair
    server_public: bytes


def check_name(name: str) -> str:
    """Raises ConfigError unless ``name`` is a usable key name."""
    if name == SENTINEL_KEY or not _NAME.fullmatch(name):
        raise ConfigError(
            f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not 'sentinel')"
        )
    return name


def keys_dir(value: str | os.PathLike[str] | None) -> Path | None:
    """The keys folder from a flag, else ``$CASPARIAN_KEYS``, else None (no keys)."""
    chosen = value if value is not None else os.environ.get(KEYS_ENV) or None
    return None if chosen is None else Path(chosen).expanduser()


@contextlib.contextmanager
def _private_files() -> Iterator[None]:
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        yield
    finally:
        os.umask(old)


def init_keys(directory: Path) -> Path:
    """Create the Sentinel's key pair and the empty ``authorized`` folders.

    Returns:
        The Sentinel's public certificate (``DIR/sentinel.key``): copy it to workers.

    Raises:
        ConfigError: ``DIR`` already holds a Sentinel key (it would lock every worker out).
    """
    secret = directory / f"{SENTINEL_KEY}.key_secret"
    if secret.exists():
        raise ConfigError(f"{secret} exists already; keep it, or choose another folder")
    with _private_files():
        for role in Role:
            (directory / "authorized" / role.folder).mkdir(parents=True, exist_ok=True)
        public, _ = zmq.auth.create_certificates(directory, SENTINEL_KEY)
    return Path(public)


def add_key(directory: Path, name: str, role: Role) -> Path:
    """Create ``DIR/NAME.key`` + ``.key_secret`` and authorize the public key for ``role``.

    Returns:
        The secret certificate: give it (and ``sentinel.key``) to that worker or admin.

    Raises:
        ConfigError: no ``keys init`` here, a bad name, or the name is taken.
    """
    check_name(name)
    _require_init(directory)
    if (directory / f"{name}.key_secret").exists() or authorized_roles(directory, name):
        raise ConfigError(f"key {name!r} exists already in {directory}; revoke it first")
    with _private_files():
        public, secret = zmq.auth.create_certificates(directory, name)
        target = directory / "authorized" / role.folder / f"{name}.key"
        shutil.copyfile(public, target)
    return Path(secret)


def revoke_key(directory: Path, name: str) -> list[Role]:
    """Remove ``name``'s authorization (every role) and its key pair files in ``directory``.

    Returns:
        The roles it had.

    Raises:
        ConfigError: ``name`` is not authorized in ``directory``.
    """
    check_name(name)
    roles = authorized_roles(directory, name)
    if not roles:
        raise ConfigError(f"key {name!r} is not authorized in {directory}; nothing to revoke")
    for role in roles:
        (directory / "authorized" / role.folder / f"{name}.key").unlink()
    for suffix in (".key", ".key_secret"):
        (directory / f"{name}{suffix}").unlink(missing_ok=True)
    return roles


def authorized_roles(directory: Path, name: str) -> list[Role]:
    return [r for r in Role if (directory / "authorized" / r.folder / f"{name}.key").is_file()]


def _require_init(directory: Path) -> None:
    if not (directory / f"{SENTINEL_KEY}.key").is_file():
        raise ConfigError(
            f"no sentinel key in {directory}; run `casparian-trio keys init {directory}`"
        )


def _load(path: Path, *, secret: bool) -> KeyPair:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read key {path}: {exc}") from None
    if secret and secret_key is None:
        raise ConfigError(f"{path} holds no secret key")
    return KeyPair(public, secret_key)


def server_keys(directory: Path) -> KeyPair:
    """The Sentinel's own pair (``DIR/sentinel.key_secret``).

    Raises:
        ConfigError: it is missing (with the ``keys init`` command that makes it).
    """
    path = directory / f"{SENTINEL_KEY}.key_secret"
    if not path.is_file():
        raise ConfigError(f"no {path}; run `casparian-trio keys init {directory}` first")
    return _load(path, secret=True)


def client_keys(directory: Path, name: str) -> ClientKeys:
    """A worker's or admin's pair (``DIR/NAME.key_secret``) and ``DIR/sentinel.key``.

    Raises:
        ConfigError: a file is missing (naming ``keys add``) or unreadable.
    """
    check_name(name)
    own = directory / f"{name}.key_secret"
    if not own.is_file():
        raise ConfigError(
            f"no {own}; run `casparian-trio keys add {name} --role worker|admin --dir {directory}`"
        )
    server = directory / f"{SENTINEL_KEY}.key"
    if not server.is_file():
        raise ConfigError(f"no {server}: copy the sentinel's public key there")
    return ClientKeys(name, _load(own, secret=True), _load(server, secret=False).public)


@attrs.frozen
class KeyRing:
    """Authorized public keys (z85) → the peer each one is; a snapshot of the folders."""

    peers: dict[bytes, Peer]

    @classmethod
    def load(cls, directory: Path) -> KeyRing:
        """Read ``authorized/workers`` and ``authorized/admins`` (an unreadable file is skipped)."""
        peers: dict[bytes, Peer] = {}
        for role in Role:
            folder = directory / "authorized" / role.folder
            for path in sorted(folder.glob("*.key")) if folder.is_dir() else []:
                name = path.name.removesuffix(".key")
                with contextlib.suppress(ConfigError):
                    if _NAME.fullmatch(name):
                        peers[_load(path, secret=False).public] = Peer(role, name)
        return cls(peers)

    def peer(self, public_z85: bytes) -> Peer | None:
        return self.peers.get(public_z85)


@attrs.define(eq=False)
class KeyWatch:
    """Which key names are authorized now: re-read when an ``authorized`` folder changes.

    The Sentinel asks for every message, so a revoke also cuts off connections
    that are already open; the check costs two ``stat`` calls while nothing changes.
    A folder's mtime can miss two changes within one clock tick, so the folders
    are also re-read at least every RELOAD_S.
    """

    directory: Path
    _stamp: tuple[int, ...] = ()
    _loaded_at: float = -math.inf
    _peers: frozenset[Peer] = frozenset()

    def allows(self, peer: Peer) -> bool:
        stamp, now = self._folder_stamp(), time.monotonic()
        if stamp != self._stamp or now - self._loaded_at >= RELOAD_S:
            self._peers = frozenset(KeyRing.load(self.directory).peers.values())
            self._stamp, self._loaded_at = stamp, now
        return peer in self._peers

    def _folder_stamp(self) -> tuple[int, ...]:
        stamp = []
        for role in Role:
            try:
                stamp.append((self.directory / "authorized" / role.folder).stat().st_mtime_ns)
            except OSError:
                stamp.append(-1)
        return tuple(stamp)
