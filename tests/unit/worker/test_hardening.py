"""How a worker starts guests: setpriv's command line, decided once from who the worker is."""

from __future__ import annotations

import pytest

from casparian_trio.bridge._privileges import GuestPrivileges
from casparian_trio.errors import ConfigError
from casparian_trio.worker import hardening


def test_the_prefix_drops_every_capability_and_switches_user_when_told() -> None:
    caps_only = GuestPrivileges("/usr/bin/setpriv").prefix()
    assert caps_only[0] == "/usr/bin/setpriv"
    assert {"--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"} <= set(caps_only)
    assert caps_only[-1] == "--"
    assert not any(a.startswith("--reuid") for a in caps_only)
    other = GuestPrivileges("/usr/bin/setpriv", 65534, 65534).prefix()
    assert {"--reuid=65534", "--regid=65534", "--clear-groups"} <= set(other)


def test_a_worker_that_is_not_root_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardening.os, "geteuid", lambda: 1000)
    assert hardening.guest_privileges("nobody") is None


def test_root_gets_the_guest_user_or_root_without_capabilities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hardening.os, "geteuid", lambda: 0)
    monkeypatch.setattr(hardening, "find_setpriv", lambda: "/usr/bin/setpriv")
    monkeypatch.setattr(hardening, "_probe", lambda privileges, python: None)
    chosen = hardening.guest_privileges("nobody")
    assert chosen is not None
    assert chosen.uid is not None
    assert chosen.uid != 0
    monkeypatch.setattr(hardening, "_probe", lambda privileges, python: "Permission denied")
    fallback = hardening.guest_privileges("nobody")
    assert fallback == GuestPrivileges("/usr/bin/setpriv")  # root, capabilities dropped
    assert hardening.guest_privileges("root") == GuestPrivileges("/usr/bin/setpriv")
    with pytest.raises(ConfigError, match="no such user"):
        hardening.guest_privileges("no-such-user-here")
    monkeypatch.setattr(hardening, "find_setpriv", lambda: None)
    with pytest.raises(ConfigError, match="setpriv"):
        hardening.guest_privileges("nobody")


def test_make_undumpable_marks_a_child_process() -> None:
    import subprocess
    import sys

    code = (
        "import ctypes\nfrom casparian_trio.worker.hardening import make_undumpable\n"
        "assert make_undumpable()\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"  # PR_GET_DUMPABLE
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0"
