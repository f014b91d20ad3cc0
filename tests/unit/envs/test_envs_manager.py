"""EnvManager without uv: hashing, lookup, fallback, eviction, in-use protection."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from casparian_trio.envs import (
    READY_MARKER,
    SYSTEM_ENV,
    EnvManager,
    _index,
    compute_env_hash,
    is_env_hash,
)
from casparian_trio.errors import EnvError
from casparian_trio.protocol.messages import PrepareEnv


def test_hash_format() -> None:
    h = compute_env_hash("lock", "proj", "3.11")
    assert is_env_hash(h)
    assert h == compute_env_hash("lock", "proj", "3.11") == compute_env_hash("lock", "proj", "3.11")
    assert compute_env_hash("lock\r\n", "proj", "3.11") == compute_env_hash(
        "lock\n", "proj", "3.11"
    )
    variants = {
        h,
        compute_env_hash("lock", "proj", "3.12"),
        compute_env_hash("lock", None, "3.11"),
        compute_env_hash("lockproj", "", "3.11"),
        compute_env_hash("lock2", "proj", "3.11"),
    }
    assert len(variants) == 5


def fake_env(root: Path, h: str, size: int, last_use: float) -> None:
    (root / h / "bin").mkdir(parents=True)
    (root / h / "bin" / "python").write_text("")
    (root / h / READY_MARKER).write_text("")
    _index.update(
        root, lambda e: e.__setitem__(h, {"size": size, "built": 0, "last_use": last_use})
    )


def test_interpreter_lookup(tmp_path: Path) -> None:
    m = EnvManager(tmp_path)
    assert m.interpreter(SYSTEM_ENV) == Path(sys.executable)
    with pytest.raises(EnvError, match="is not provisioned on this worker") as info:
        m.interpreter("ab" * 32)
    assert info.value.env_hash == "ab" * 32
    fake_env(tmp_path, "cd" * 32, 10, 0)
    assert m.interpreter("cd" * 32) == tmp_path / ("cd" * 32) / "bin" / "python"
    assert _index.read(tmp_path)["cd" * 32]["last_use"] > time.time() - 60
    assert m.ready_envs() == ["cd" * 32]


def test_system_fallback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = EnvManager(tmp_path, allow_system_fallback=True)
    assert m.interpreter("ab" * 32) == Path(sys.executable)
    assert "not provisioned" in caplog.text


async def test_prepare_refuses_mismatched_hash(tmp_path: Path) -> None:
    spec = PrepareEnv(env_hash="ab" * 32, lockfile="x", pyproject="y")
    with pytest.raises(EnvError, match="does not match its content"):
        await EnvManager(tmp_path).prepare(spec)


async def test_prepare_finds_existing_env(tmp_path: Path) -> None:
    spec = PrepareEnv(env_hash=compute_env_hash("l", "p", None), lockfile="l", pyproject="p")
    fake_env(tmp_path, spec.env_hash, 1, 0)
    ready = await EnvManager(tmp_path).prepare(spec)
    assert ready.cached
    assert ready.interpreter_path.endswith("/bin/python")
    system = await EnvManager(tmp_path).prepare(PrepareEnv(env_hash=SYSTEM_ENV, lockfile=""))
    assert system.interpreter_path == sys.executable


def test_lru_eviction_skips_envs_in_use(tmp_path: Path) -> None:
    a, b, c, new = "a" * 64, "b" * 64, "c" * 64, "d" * 64
    for i, h in enumerate((a, b, c, new)):
        fake_env(tmp_path, h, 100, float(i))
    m = EnvManager(tmp_path, max_bytes=250)
    with m.using(a):  # oldest, but a job is running in it
        m._evict(keep=new)
    assert m.ready_envs() == [a, new]
    assert set(json.loads((tmp_path / "index.json").read_text())) == {a, new}
    assert not any(p.name.startswith(".trash") for p in tmp_path.iterdir())


async def test_waiting_builder_is_not_starved_by_an_env_in_use(tmp_path: Path) -> None:
    """Process B waits for A's build; A then keeps the env in use (a warm guest).

    B must still find the env ready: a long LOCK_SH must not block B's build wait
    (they were one lock file once, and B waited forever).
    """
    import fcntl
    import os

    import trio
    import trio.testing

    spec = PrepareEnv(env_hash=compute_env_hash("lock", "proj", "3.11"), lockfile="lock",
                      pyproject="proj", python_version="3.11")  # fmt: skip
    a, b = EnvManager(root=tmp_path), EnvManager(root=tmp_path)
    build_lock = os.open(tmp_path / f"{spec.env_hash}.build.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(build_lock, fcntl.LOCK_EX)  # A is building
    results: list[object] = []
    # A hang guard only: B may be slow to start waiting, and slow to finish, on a
    # loaded machine; the test waits for what it needs to see, never a fixed time.
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _collect(b, spec, results))
            await trio.testing.wait_all_tasks_blocked()  # B is waiting for the build lock
            assert results == []
            fake_env(tmp_path, spec.env_hash, 1, time.time())  # A's build lands
            with a.using(spec.env_hash):  # and A keeps using it
                os.close(build_lock)  # A's build is done
                while not results:  # B finishes while A still holds the env
                    await trio.sleep(0.01)
                assert [r.cached for r in results] == [True]  # type: ignore[attr-defined]


async def _collect(manager: EnvManager, spec: PrepareEnv, out: list[object]) -> None:
    out.append(await manager.prepare(spec))
