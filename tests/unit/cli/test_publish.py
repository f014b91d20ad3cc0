"""``publish``: checks without running, records into the database, re-publish is a no-op."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from cli_harness import Cli

from casparian_trio.cli import publish as cli_publish
from casparian_trio.errors import ConfigError, TransportTimeout
from casparian_trio.protocol import Deploy


def manifests(db_path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT plugin_name, version, status FROM cf_plugin_manifest ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [tuple(r) for r in rows]


def test_publish_records_the_plugin_and_its_routing_rule(
    cli: Cli, write_plugin: Callable[..., Path], db_path: Path
) -> None:
    result = cli("publish", str(write_plugin()))
    assert result.rc == 0, result.err
    assert result.out.startswith("published sales 1.0.0 (artifact ")
    assert "env system)" in result.out
    assert "files matching '*.csv' will be routed to sales" in result.out
    assert manifests(db_path) == [("sales", "1.0.0", "ACTIVE")]
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT pattern, plugin_name FROM cf_routing_rule").fetchall() == [
            ("*.csv", "sales")
        ]
    finally:
        conn.close()


def test_republishing_the_same_artifact_does_nothing(
    cli: Cli, write_plugin: Callable[..., Path], db_path: Path
) -> None:
    plugin = write_plugin()
    cli("publish", str(plugin))
    again = cli("publish", str(plugin))
    assert again.rc == 0
    assert again.out.startswith("sales 1.0.0 is already published (artifact ")
    assert again.out.rstrip().endswith("): nothing to do")
    assert manifests(db_path) == [("sales", "1.0.0", "ACTIVE")]


def test_a_new_version_supersedes_the_old_one(
    cli: Cli, write_plugin: Callable[..., Path], db_path: Path
) -> None:
    cli("publish", str(write_plugin(version="1.0.0")))
    result = cli("publish", str(write_plugin(version="1.1.0")))
    assert result.rc == 0
    assert "published sales 1.1.0" in result.out
    assert "superseding 1.0.0" in result.out
    assert manifests(db_path) == [("sales", "1.0.0", "SUPERSEDED"), ("sales", "1.1.0", "ACTIVE")]


def test_version_flag_overrides_the_manifest(
    cli: Cli, write_plugin: Callable[..., Path], db_path: Path
) -> None:
    result = cli("publish", str(write_plugin()), "--version", "2.0.0")
    assert "published sales 2.0.0" in result.out
    assert manifests(db_path) == [("sales", "2.0.0", "ACTIVE")]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("class Handler(:\n    pass\n", "line 1: syntax error"),
        ("def execute(path):\n    return []\n", "no top-level `class Handler`"),
        ("MANIFEST = {'nmae': 'x'}\nclass Handler: pass\n", "unknown MANIFEST key(s) ['nmae']"),
        ("MANIFEST = {'priority': 'high'}\nclass Handler: pass\n", "must be an integer"),
        (
            "MANIFEST = {'reuse_guest': 'no'}\nclass Handler: pass\n",
            "MANIFEST['reuse_guest'] must be True or False",
        ),
        ("MANIFEST = dict(name='x')\nclass Handler: pass\n", "MANIFEST must be a literal dict"),
        (
            "MANIFEST = {'topics': {'t': {'uri': 'parquet://t', 'schema': {'a': 'int65'}}}}\n"
            "class Handler: pass\n",
            "topic 't': column 'a' has unknown type 'int65'",
        ),
        (
            "MANIFEST = {'topics': {'t': {'uri': 'ftp://t'}}}\nclass Handler: pass\n",
            "topic 't': sink URI 'ftp://t' must be parquet://DIR or sqlite://FILE/TABLE",
        ),
        (
            "MANIFEST = {'topics': {'t': {'uri': 'parquet://t', 'mode': 'upsert'}}}\n"
            "class Handler: pass\n",
            "topic 't': mode 'upsert' must be one of",
        ),
        (
            "MANIFEST = {'topics': {'t': {'uri': 'parquet://t', 'on_invalid': 'drop'}}}\n"
            "class Handler: pass\n",
            "topic 't': on_invalid 'drop' must be one of quarantine, fail",
        ),
        (
            "MANIFEST = {'topics': {'t': {'uri': 'parquet://t', 'max_invalid_fraction': 2}}}\n"
            "class Handler: pass\n",
            "topic 't': max_invalid_fraction 2 must be a number from 0 to 1",
        ),
        (
            "MANIFEST = {'topics': {'t': {'uri': 'parquet://t', 'schema': {'_cf_id': 'int64'}}}}\n"
            "class Handler: pass\n",
            "topic 't': schema column '_cf_id' uses the reserved prefix",
        ),
    ],
)
def test_invalid_plugins_fail_with_one_line(
    cli: Cli, tmp_path: Path, db_path: Path, source: str, message: str
) -> None:
    plugin = tmp_path / "bad.py"
    plugin.write_text(source)
    result = cli("publish", str(plugin), db=tmp_path / "never.db")
    assert result.rc == 1
    assert result.out == ""
    assert result.err.startswith("error: bad.py")
    assert message in result.err
    assert result.err.count("\n") == 1  # one line, no traceback


def test_missing_plugin_file(cli: Cli, tmp_path: Path) -> None:
    result = cli("publish", str(tmp_path / "nope.py"))
    assert result.rc == 1
    assert result.err.startswith("error: cannot read plugin ")


def test_missing_lockfile_names_the_fix(
    cli: Cli, write_plugin: Callable[..., Path], tmp_path: Path
) -> None:
    result = cli("publish", str(write_plugin()), "--lockfile", str(tmp_path))
    assert result.rc == 1
    assert "run `uv lock`" in result.err


def test_init_db_names_a_missing_folder(cli: Cli, tmp_path: Path) -> None:
    result = cli("init-db", db=tmp_path / "nowhere" / "x.db")
    assert result.rc == 1
    assert "folder" in result.err
    assert "does not exist" in result.err


def test_init_db_honours_casparian_db(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CASPARIAN_DB", "x.db")
    result = cli("init-db", db=None)
    assert result.rc == 0, result.err
    assert (tmp_path / "x.db").is_file()
    assert result.out.startswith("database x.db ready")


def test_deploy_via_sentinel_times_out_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli_publish, "DEPLOY_TIMEOUT", 0.2)
    deploy = Deploy(plugin_name="p", version="1", source_code="class Handler: pass\n")
    # Nothing listens there: zmq queues the DEPLOY and the deadline fires.
    with pytest.raises(TransportTimeout, match=r"no answer from sentinel at tcp://127\.0\.0\.1:9"):
        trio.run(cli_publish.deploy_via_sentinel, "tcp://127.0.0.1:9", deploy)


def test_deploy_via_sentinel_rejects_a_bad_address() -> None:
    deploy = Deploy(plugin_name="p", version="1", source_code="class Handler: pass\n")
    with pytest.raises(ConfigError, match="--sentinel"):
        trio.run(cli_publish.deploy_via_sentinel, "localhost:5555", deploy)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_come_from_the_parser(cli: Cli, shell: str) -> None:
    result = cli("completion", shell, db=None)
    assert result.rc == 0, result.err
    assert "casparian-trio" in result.out
    assert "init-db" in result.out
    assert "--heartbeat-interval" in result.out


def test_every_option_has_help_naming_env_and_default() -> None:
    from casparian_trio.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():  # type: ignore[union-attr]
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    sentinel = " ".join(sub.choices["sentinel"].format_help().split())  # type: ignore[index]
    assert "$CASPARIAN_BIND" in sentinel
    assert "default tcp://127.0.0.1:5555" in sentinel
    assert "$CASPARIAN_DB" in sub.choices["init-db"].format_help()  # type: ignore[index]
