"""Settings layer as users expect: defaults < TOML file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from casparian_trio.config import SentinelConfig, WorkerConfig
from casparian_trio.errors import ConfigError


def test_flags_override_the_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[sentinel]\nheartbeat_interval_s = 1.5\njob_timeout_s = 60\n"
        '[worker]\nconcurrency = 3\ncapabilities = ["a", "b"]\n'
    )
    config = SentinelConfig.load({"job_timeout_s": 5.0}, config_path=path, environ={})
    assert (config.heartbeat_interval_s, config.job_timeout_s) == (1.5, 5.0)
    assert config.abort_grace_s == 10.0  # the default
    worker = WorkerConfig.load({}, config_path=path, environ={"CASPARIAN_OUTPUT": "out"})
    assert (worker.concurrency, worker.capabilities, worker.output) == (3, ("a", "b"), Path("out"))


def test_casparian_toml_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "casparian.toml").write_text('[sentinel]\nbind = "tcp://127.0.0.1:6000"\n')
    assert SentinelConfig.load({}, environ={}).bind == "tcp://127.0.0.1:6000"


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[sentinel]\nheartbeat = 1\n")
    with pytest.raises(ConfigError, match="unknown \\[sentinel\\] key 'heartbeat'"):
        SentinelConfig.load({}, config_path=path, environ={})


def test_guest_pool_defaults_follow_the_slots() -> None:
    worker = WorkerConfig.load({"concurrency": 3}, environ={})
    assert worker.idle_guests == 6  # two per slot unless --warm-guests says otherwise
    assert (worker.guest_max_jobs, worker.guest_max_rss_mb, worker.guest_idle_s) == (
        1000,
        1024,
        60.0,
    )
    assert WorkerConfig.load({"warm_guests": 0}, environ={}).idle_guests == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"guest_max_jobs": 0}, "--guest-max-jobs must be at least 1"),
        ({"guest_max_rss_mb": 0}, "--guest-max-rss-mb must be at least 1"),
        ({"guest_idle_s": 0.0}, "--guest-idle must be > 0"),
        ({"warm_guests": -1}, "--warm-guests must be 0 or more"),
    ],
)
def test_bad_guest_pool_settings_are_named(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerConfig.load(flags, environ={})


@pytest.mark.parametrize(
    "worker_id",
    ["", "w" * 201, "é" * 101, "caf\udce9"],  # the last: a non-UTF-8 byte from the command line
)
def test_a_worker_id_that_is_no_name_is_a_config_error(worker_id: str) -> None:
    with pytest.raises(ConfigError, match="--worker-id must be 1 to 200 bytes of UTF-8 text"):
        WorkerConfig.load({"worker_id": worker_id}, environ={})
