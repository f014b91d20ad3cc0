"""Whatever arrives on the wire, the Sentinel logs, drops, and keeps serving."""

from __future__ import annotations

import json
import struct

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services_harness import ADDRESS, Cluster

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
            assert row.attempt == 1
            rogue.close()
            nursery.cancel_scope.cancel()
    finally:
        db.close()
