"""Safe by default: a Sentinel without keys binds loopback only; worker key settings go together."""

from __future__ import annotations

from pathlib import Path

import pytest

from casparian_trio.config import SentinelConfig, WorkerConfig, is_loopback
from casparian_trio.errors import ConfigError


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.8.9.1:*", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/sentinel.sock", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://eth0:5555", False),
        ("tcp://10.0.0.5:5555", False),
        ("tcp://[::]:5555", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_a_public_bind_needs_keys_or_insecure() -> None:
    public = {"bind": "tcp://0.0.0.0:5555"}
    with pytest.raises(ConfigError, match="keys init") as caught:
        SentinelConfig.load(public, environ={})
    assert "--insecure" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert SentinelConfig.load({**public, "insecure": True}, environ={}).insecure
    keyed = SentinelConfig.load(public, environ={"CASPARIAN_KEYS": "/k"})
    assert keyed.keys == Path("/k")
    assert SentinelConfig.load({}, environ={}).keys is None  # the loopback default


def test_a_keyed_worker_is_named_and_routed_after_its_key() -> None:
    config = WorkerConfig.load({"keys": "/k", "key": "w1"}, environ={})
    assert config.worker_id == "w1"
    assert config.identity == b"w1"
    with pytest.raises(ConfigError, match="go together"):
        WorkerConfig.load({"key": "w1"}, environ={})
    with pytest.raises(ConfigError, match="go together"):
        WorkerConfig.load({"keys": "/k"}, environ={})


def test_message_size_limits_have_a_floor() -> None:
    with pytest.raises(ConfigError, match="max-message-bytes"):
        SentinelConfig.load({"max_message_bytes": 10}, environ={})
