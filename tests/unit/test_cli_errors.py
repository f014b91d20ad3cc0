"""What a user sees when a command fails: one line naming the cause, never a group."""

from __future__ import annotations

import argparse

import pytest

from casparian_trio import cli
from casparian_trio.errors import SinkError


def _run(handler: cli.Handler, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli._run(argparse.Namespace(handler=handler, verbose=False))
    return code, capsys.readouterr().err


def test_our_error_inside_nested_groups_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(_args: argparse.Namespace) -> int:
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [SinkError("table 't' is bad")])])

    code, err = _run(handler, capsys)
    assert code == cli.EXIT_ERROR
    assert err == "error: table 't' is bad\n"


def test_several_causes_name_the_first_and_count_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def handler(_args: argparse.Namespace) -> int:
        raise ExceptionGroup("g", [SinkError("first"), OSError("second"), KeyError("third")])

    code, err = _run(handler, capsys)
    assert (code, err) == (cli.EXIT_ERROR, "error: first (and 2 more errors)\n")


def test_a_bug_inside_a_group_shows_its_own_traceback_not_the_group(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def handler(_args: argparse.Namespace) -> int:
        raise ExceptionGroup(
            "Exceptions from Trio nursery", [ZeroDivisionError("division by zero")]
        )

    code, err = _run(handler, capsys)
    assert code == cli.EXIT_ERROR
    assert "ExceptionGroup" not in err
    assert "nursery" not in err
    assert "ZeroDivisionError: division by zero" in err
    assert err.splitlines()[-1].startswith("error: unexpected ZeroDivisionError: division by zero")
