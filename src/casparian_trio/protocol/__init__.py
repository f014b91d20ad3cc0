"""Protocol v4, sans-I/O: header codec, opcodes and one frozen class per payload.

Nothing in this package imports trio, zmq or sqlite3.
"""

from __future__ import annotations

from casparian_trio.protocol._header import HEADER_SIZE, VERSION, OpCode, pack_header, unpack_header
from casparian_trio.protocol.codec import Message, decode, encode
from casparian_trio.protocol.liveness import AnswerWatch, PeerEvent, PeerEventKind
from casparian_trio.protocol.messages import (
    ANSWER_STATUS,
    ERR_DEPLOY,
    ERR_ENV_BUILD,
    ERR_UNKNOWN_WORKER,
    SINK_MODES,
    Abort,
    Artifact,
    Conclude,
    Deploy,
    Dispatch,
    EnvReady,
    Err,
    Heartbeat,
    Identify,
    JobRef,
    Payload,
    PrepareEnv,
    Reload,
    SinkConfig,
)

__all__ = [
    "ANSWER_STATUS",
    "ERR_DEPLOY",
    "ERR_ENV_BUILD",
    "ERR_UNKNOWN_WORKER",
    "HEADER_SIZE",
    "SINK_MODES",
    "VERSION",
    "Abort",
    "AnswerWatch",
    "Artifact",
    "Conclude",
    "Deploy",
    "Dispatch",
    "EnvReady",
    "Err",
    "Heartbeat",
    "Identify",
    "JobRef",
    "Message",
    "OpCode",
    "Payload",
    "PeerEvent",
    "PeerEventKind",
    "PrepareEnv",
    "Reload",
    "SinkConfig",
    "decode",
    "encode",
    "pack_header",
    "unpack_header",
]
