"""Every command's ``--help`` tells the truth: each argument explained, its env var and default named.

The test walks the whole parser (nested commands such as ``source add`` too), so
a new option without help, default or env var fails here, not in a user's terminal.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from casparian_trio.cli import build_parser
from casparian_trio.cli.services import add_config_options
from casparian_trio.config import SentinelConfig, WorkerConfig, env_of, options

# Options whose value has a natural environment variable, wherever they appear.
ENV_OF_FLAG = {
    "--db": "CASPARIAN_DB",
    "--connect": "CASPARIAN_CONNECT",
    "--sentinel": "CASPARIAN_CONNECT",
    "--bind": "CASPARIAN_BIND",
    "--output": "CASPARIAN_OUTPUT",
    "--config": "CASPARIAN_CONFIG",
}
# Actions that explain themselves (argparse's own) or are the command choice.
SELF_EXPLAINING = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def commands(
    parser: argparse.ArgumentParser, path: str = "casparian-trio"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, f"{path} {name}")


def _help(action: argparse.Action) -> str:
    return " ".join((action.help or "").split())


def _takes_a_value(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.nargs != 0


ALL = list(commands(build_parser()))


def test_the_walk_reaches_nested_commands() -> None:
    names = {path for path, _ in ALL}
    assert {"casparian-trio source add", "casparian-trio jobs", "casparian-trio worker"} <= names


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[path for path, _ in ALL])
def test_every_argument_has_help(path: str, parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, SELF_EXPLAINING[:2]):
            continue
        assert action.help, f"{path}: {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[path for path, _ in ALL])
def test_every_option_names_its_default_and_env_var(
    path: str, parser: argparse.ArgumentParser
) -> None:
    for action in parser._actions:
        if not _takes_a_value(action) or isinstance(action, SELF_EXPLAINING):
            continue
        text = _help(action)
        flag = action.option_strings[-1]
        assert "default" in text or "required" in text, f"{path} {flag}: no default in {text!r}"
        if flag in ENV_OF_FLAG:
            assert f"${ENV_OF_FLAG[flag]}" in text, f"{path} {flag}: no env var in {text!r}"


@pytest.mark.parametrize("cls", [SentinelConfig, WorkerConfig])
def test_every_service_option_names_its_env_var(cls: type) -> None:
    parser = argparse.ArgumentParser()
    add_config_options(parser, cls)
    helps = {a.dest: _help(a) for a in parser._actions}
    for field in options(cls):
        assert f"(env ${env_of(field)}; default " in helps[field.name], helps[field.name]


def test_every_service_option_honours_its_env_var() -> None:
    environ = {
        "CASPARIAN_CONCURRENCY": "3",
        "CASPARIAN_GRACE_S": "7.5",
        "CASPARIAN_ALLOW_SYSTEM_ENV": "1",
        "CASPARIAN_OUTPUT": "out",
    }
    worker = WorkerConfig.load({}, environ=environ)
    assert (worker.concurrency, worker.grace_s, worker.allow_system_env) == (3, 7.5, True)
    assert str(worker.output) == "out"
    sentinel = SentinelConfig.load({}, environ={"CASPARIAN_JOB_TIMEOUT_S": "60"})
    assert sentinel.job_timeout_s == 60.0
    # A flag still wins over the environment.
    assert WorkerConfig.load({"concurrency": 2}, environ=environ).concurrency == 2


def test_publish_sentinel_defaults_to_casparian_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASPARIAN_CONNECT", "tcp://10.0.0.5:5555")
    args = build_parser().parse_args(["publish", "plugin.py"])
    assert args.sentinel == "tcp://10.0.0.5:5555"
    monkeypatch.delenv("CASPARIAN_CONNECT")
    assert build_parser().parse_args(["publish", "plugin.py"]).sentinel is None
