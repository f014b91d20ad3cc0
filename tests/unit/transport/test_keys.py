"""The keys folder: ``init``/``add``/``revoke`` write what pyzmq's tools read, roles by folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq.auth

from casparian_trio.errors import ConfigError
from casparian_trio.transport.keys import (
    KeyRing,
    KeyWatch,
    Peer,
    Role,
    add_key,
    client_keys,
    init_keys,
    keys_dir,
    revoke_key,
    server_keys,
)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    init_keys(directory)
    return directory


def test_init_writes_a_pyzmq_certificate_pair_and_the_role_folders(keys: Path) -> None:
    public, secret = zmq.auth.load_certificate(keys / "sentinel.key_secret")
    assert secret is not None
    assert zmq.auth.load_certificate(keys / "sentinel.key") == (public, None)
    assert server_keys(keys).public == public
    assert (keys / "authorized" / "workers").is_dir()
    assert (keys / "authorized" / "admins").is_dir()
    assert stat.S_IMODE((keys / "sentinel.key_secret").stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="exists already"):
        init_keys(keys)


def test_add_authorizes_the_public_key_for_its_role_only(keys: Path) -> None:
    add_key(keys, "w1", Role.WORKER)
    add_key(keys, "ops", Role.ADMIN)
    ring = KeyRing.load(keys)
    w1 = zmq.auth.load_certificate(keys / "w1.key")[0]
    ops = zmq.auth.load_certificate(keys / "ops.key")[0]
    assert ring.peer(w1) == Peer(Role.WORKER, "w1")
    assert ring.peer(ops) == Peer(Role.ADMIN, "ops")
    assert ring.peer(zmq.curve_keypair()[0]) is None
    mine = client_keys(keys, "w1")
    assert mine.own.public == w1
    assert mine.server_public == server_keys(keys).public
    with pytest.raises(ConfigError, match="exists already"):
        add_key(keys, "w1", Role.ADMIN)


def test_revoke_counts_for_the_next_load(keys: Path) -> None:
    add_key(keys, "w1", Role.WORKER)
    w1 = zmq.auth.load_certificate(keys / "w1.key")[0]
    assert revoke_key(keys, "w1") == [Role.WORKER]
    assert KeyRing.load(keys).peer(w1) is None
    assert not (keys / "w1.key_secret").exists()
    with pytest.raises(ConfigError, match="nothing to revoke"):
        revoke_key(keys, "w1")
    add_key(keys, "w1", Role.WORKER)  # the name is free again: a new pair
    assert KeyRing.load(keys).peer(w1) is None


@pytest.mark.parametrize("name", ["sentinel", "", "../x", "a b", "x" * 65])
def test_bad_names_are_refused(keys: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="key name"):
        add_key(keys, name, Role.WORKER)


def test_missing_files_name_the_command_that_makes_them(tmp_path: Path, keys: Path) -> None:
    with pytest.raises(ConfigError, match="keys init"):
        server_keys(tmp_path)
    with pytest.raises(ConfigError, match="keys add w9"):
        client_keys(keys, "w9")
    with pytest.raises(ConfigError, match="keys init"):
        add_key(tmp_path / "nothing", "w1", Role.WORKER)


@pytest.mark.parametrize(
    ("user_id", "peer"),
    [
        ("worker:w1", Peer(Role.WORKER, "w1")),
        ("admin:ops", Peer(Role.ADMIN, "ops")),
        ("root:w1", None),
        ("w1", None),
        ("worker:", None),
        ("", None),
    ],
)
def test_user_ids_we_issue_and_only_those_name_a_peer(user_id: str, peer: Peer | None) -> None:
    assert Peer.from_user_id(user_id) == peer
    if peer is not None:
        assert peer.user_id == user_id


def test_the_folder_comes_from_the_flag_else_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CASPARIAN_KEYS", "/env/keys")
    assert keys_dir("/flag/keys") == Path("/flag/keys")
    assert keys_dir(None) == Path("/env/keys")
    monkeypatch.delenv("CASPARIAN_KEYS")
    assert keys_dir(None) is None


def test_the_watch_sees_a_revoke_and_an_add(keys: Path) -> None:
    add_key(keys, "w1", Role.WORKER)
    watch = KeyWatch(keys)
    w1, w2 = Peer(Role.WORKER, "w1"), Peer(Role.WORKER, "w2")
    assert watch.allows(w1)
    assert not watch.allows(Peer(Role.ADMIN, "w1"))  # the name in another role is not it
    revoke_key(keys, "w1")
    add_key(keys, "w2", Role.WORKER)
    # Both may fall in the clock tick of the first load: date the folder as a later change would.
    folder = keys / "authorized" / "workers"
    later = folder.stat().st_mtime_ns + 10**9
    os.utime(folder, ns=(later, later))
    assert not watch.allows(w1)
    assert watch.allows(w2)
