"""Whatever arrives on the wire, the Sentinel logs, drops, and keeps serving."""

from __future__ import annotations

import json
import struct

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services_harness import ADDRESS, Cluster

from casparian_trio.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from casparian_trio.protocol._header import OpCode
from casparian_trio.protocol.codec import decode, encode
from casparian_trio.protocol.messages import Identify
from casparian_trio.store import Store, open_database
from casparian_trio.transport import MemoryNetwork

FIELD_NAMES = [
    "worker_id",
    "capabilities",
    "slots",
    "jobs",
    "status",
    "current_job_id",
    "metrics",
    "artifacts",
    "error_message",
    "attempt",
    "env_hash",
    "interpreter_path",
    "message",
    "plugin_name",
    "version",
    "source_code",
    "job_id",
    "free_slots",
    "cached",
    "manifest",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=4)
    ),
    max_leaves=10,
)
payloads = st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6).map(
    lambda d: json.dumps(d).encode()
)


@st.composite
def plausible_frames(draw: st.DrawFn) -> list[bytes]:
    """A valid-looking header (any opcode, sometimes a lying length) and a JSON-ish payload."""
    body = draw(payloads | st.binary(max_size=40))
    length = len(body) if draw(st.booleans()) else draw(st.integers(0, 2**32 - 1))
    header = struct.pack(
        "!BBHQI",
        draw(st.sampled_from([4, 4, 4, 3])),
        draw(st.integers(0, 12)),
        0,
        draw(st.integers(0, 2**64 - 1)),
        length,
    )
    return [header, body]


any_frames = st.lists(st.binary(max_size=24), max_size=4) | plausible_frames()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(any_frames, min_size=1, max_size=25))
def test_sentinel_survives_arbitrary_frames_then_completes_a_job(
    garbage: list[list[bytes]],
) -> None:
    trio.run(_scenario, garbage, clock=trio.testing.MockClock(autojump_threshold=0))


async def _scenario(garbage: list[list[bytes]]) -> None:
    db = open_database(":memory:", inline=True)
    try:
        async with trio.open_nursery() as nursery:
            cluster = Cluster(store=Store(db), network=MemoryNetwork(), nursery=nursery)
            sentinel = (await cluster.start_sentinel()).service
            rogue = cluster.network.connect_dealer(ADDRESS, identity=b"rogue")
            for frames in garbage:
                await sentinel.handle_frames([b"direct", *frames])  # type: ignore[union-attr]
                if frames:  # zmq cannot send an empty message either
                    await rogue.send(frames)
            await cluster.start_worker("w1")
            [job_id] = await cluster.add_jobs("ok.csv")
            row = await cluster.wait_status(job_id, "COMPLETED", within=60)
            if not any(_identifies(frames) for frames in garbage):
                # nothing registered a worker: the job's first attempt was its only one. A
                # valid IDENTIFY makes the garbage's senders workers that take a DISPATCH and
                # never answer (here two identities): the job then completes on a later attempt
                assert row.attempt == 1
            rogue.close()
            nursery.cancel_scope.cancel()
    finally:
        db.close()


def _identifies(frames: list[bytes]) -> bool:
    """Whether ``frames`` is a valid IDENTIFY: the rogue then registers as a worker."""
    try:
        return isinstance(decode(frames).payload, Identify)
    except ProtocolError:
        return False


def test_an_identify_without_a_name_is_refused() -> None:
    """An empty worker id (the example Hypothesis found) or one over 200 bytes is not a worker."""
    for worker_id in ("", "w" * 201):
        body = json.dumps({"worker_id": worker_id}).encode()
        header = struct.pack("!BBHQI", 4, int(OpCode.IDENTIFY), 0, 0, len(body))
        with pytest.raises(RemoteProtocolError, match="worker_id"):
            decode([header, body])
    with pytest.raises(LocalProtocolError, match="worker_id"):
        Identify(worker_id="")
    assert decode(encode(Identify(worker_id="w" * 200))).payload == Identify(worker_id="w" * 200)


def test_lone_surrogates_in_an_identify_neither_crash_nor_reach_sqlite_raw() -> None:
    """JSON's "\\ud800" escapes decode to text SQLite refuses: as a worker id the
    IDENTIFY is refused, in ``host`` the text is stored escaped; the Sentinel serves on."""

    async def scenario() -> None:
        db = open_database(":memory:", inline=True)
        try:
            async with trio.open_nursery() as nursery:
                cluster = Cluster(store=Store(db), network=MemoryNetwork(), nursery=nursery)
                sentinel = (await cluster.start_sentinel()).service
                for doc in ({"worker_id": "\ud800"}, {"worker_id": "w9", "host": "h\udfff"}):
                    body = json.dumps(doc).encode()  # ensure_ascii: the escapes a peer sends
                    header = struct.pack("!BBHQI", 4, int(OpCode.IDENTIFY), 0, 0, len(body))
                    await sentinel.handle_frames([b"direct", header, body])  # type: ignore[union-attr]
                await cluster.start_worker("w1")
                [job_id] = await cluster.add_jobs("ok.csv")
                await cluster.wait_status(job_id, "COMPLETED", within=60)
                hosts = {w["worker_id"]: w["host"] for w in await Store(db).list_workers()}
                assert hosts["w9"] == "h\\udfff"
                assert "\ud800" not in hosts
                nursery.cancel_scope.cancel()
        finally:
            db.close()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
