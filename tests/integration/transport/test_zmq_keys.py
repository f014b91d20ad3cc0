"""CURVE and bounded messages on the real shim: User-Id per message, refusals, MAXMSGSIZE."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from casparian_trio.transport import open_dealer, open_router
from casparian_trio.transport.keys import Role, add_key, client_keys, init_keys, revoke_key

# A hang guard, not a speed limit.
TIMEOUT = 60
# Long enough that a message that would arrive, does (a loopback handshake takes ms).
SILENCE_S = 1.0


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    init_keys(directory)
    add_key(directory, "w1", Role.WORKER)
    add_key(directory, "ops", Role.ADMIN)
    return directory


async def test_every_message_carries_its_keys_user_id(keys: Path) -> None:
    with (
        trio.fail_after(TIMEOUT),
        open_router("tcp://127.0.0.1:*", keys=keys) as router,
        open_dealer(router.endpoint, identity=b"w1", keys=client_keys(keys, "w1")) as w1,
        open_dealer(router.endpoint, identity=b"p", keys=client_keys(keys, "ops")) as ops,
    ):
        await w1.send([b"hello"])
        await ops.send([b"deploy"])
        got = {}
        for _ in range(2):
            frames, user_id = await router.receive_authenticated()
            got[frames[1]] = (frames[0], user_id)
        assert got == {b"hello": (b"w1", "worker:w1"), b"deploy": (b"p", "admin:ops")}
        await w1.send([b"again"])  # the no-wait receive reads the same metadata
        while (drained := router.receive_nowait_authenticated()) is None:
            await trio.sleep(0.01)
        assert drained == ([b"w1", b"again"], "worker:w1")
        await router.send([b"w1", b"answer"])  # and the way back is encrypted too
        assert await w1.receive() == [b"answer"]


async def test_plain_and_revoked_peers_are_never_heard(keys: Path) -> None:
    with trio.fail_after(TIMEOUT), open_router("tcp://127.0.0.1:*", keys=keys) as router:
        mine = client_keys(keys, "w1")
        revoke_key(keys, "w1")  # after the worker got its copy; no restart
        with (
            open_dealer(router.endpoint, identity=b"plain") as plain,
            open_dealer(router.endpoint, identity=b"w1", keys=mine) as revoked,
        ):
            await plain.send([b"plain"])
            await revoked.send([b"revoked"])
            with trio.move_on_after(SILENCE_S) as waited:
                await router.receive_authenticated()
            assert waited.cancelled_caught


async def test_a_message_past_the_limit_drops_the_peer_not_the_router() -> None:
    limit = 1 << 20
    with trio.fail_after(TIMEOUT):
        with open_router("tcp://127.0.0.1:*", max_message_bytes=limit) as router:
            with open_dealer(router.endpoint, identity=b"big") as big:
                await big.send([b"x" * (limit + 1)])
                with trio.move_on_after(SILENCE_S) as waited:
                    await router.receive()
                assert waited.cancelled_caught
            with open_dealer(router.endpoint, identity=b"small") as small:
                await small.send([b"y" * limit])
                frames, user_id = await router.receive_authenticated()
                assert frames == [b"small", b"y" * limit]
                assert user_id is None  # no keys: no User-Id
