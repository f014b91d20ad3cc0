"""The guest: runs one plugin in a plugin environment and streams Arrow IPC to the host.

Role: this file is executed as a script by the environment's interpreter
(``<venv>/bin/python -I -B -u guest.py <socket> <parent pid>``). casparian_trio
is NOT installed in plugin environments, so it imports only the standard
library and pyarrow.

Start-up is split so the host can start a guest *before* it has a job for it
(see ``_pool.py``): the guest arranges to die with its parent, imports pyarrow
(the bulk of a start's cost), connects to the host's socket, and only then
blocks reading a job spec from that socket (``len:u32be`` + JSON, the fields
``host._job_spec`` sends). EOF instead of a spec means "not needed": it exits
quietly.

A reused guest runs job after job (the spec's ``reuse`` is true): it compiles
the plugin on its first job only, and each job gets a fresh ``Handler()``,
its own input, its own frames and its own END or ERROR frame; after END it
waits for the next spec on the same socket. A spec naming another plugin
version (``plugin_key``) than the one loaded is refused with an ERROR frame:
a guest only ever runs one plugin version. After an ERROR frame the guest
always exits (the host replaces it).

Invariants:
- The first thing it does is arrange to die with its parent (PR_SET_PDEATHSIG),
  then check the parent has not already gone (the race prctl cannot close).
- Exactly one terminal frame is sent per job: END (metrics) or ERROR (kind,
  message, traceback). A guest that dies without one is a crash, as far as the
  host knows. After ERROR, or after END of a job that is not ``reuse``, the
  guest leaves with ``os._exit`` (no interpreter teardown: the host is waiting
  for the exit, and kills the process group anyway).
- Frames follow the layout documented in ``casparian_trio.bridge._framing``
  (the constants below must match it; a unit test checks that they do).

Plugin shapes (the plugin source is compiled from ``plugin.py`` in the job dir,
so tracebacks show its lines):

1. The seed's shape::

       class Handler:
           def execute(self, file_path):
               yield pa_table_or_record_batch      # topic "output"

   ``execute`` may yield (or return) pyarrow Tables, RecordBatches, pandas
   DataFrames (when pandas is installed), or ``(topic, data)`` pairs.

2. The event shape::

       class Handler:
           def configure(self, ctx, config): ...   # once, before any event
           def consume(self, event): ...           # once per input file
           def close(self): ...                    # optional, after the last event

   ``ctx`` (class ``Context``) has ``job_id``, ``file_version_id``, ``topics``
   (the topics that have a sink), ``scratch_dir`` (a private temp dir),
   ``log`` (a logging.Logger writing to stderr, captured by the host) and
   ``publish(topic, data)``. ``config`` is the Dispatch's ``config`` mapping.
   ``event`` (class ``FileEvent``) has ``path``, ``job_id``,
   ``file_version_id``, ``size`` and ``open(mode="rb")``. Whatever ``consume``
   returns or yields is published to topic "output", like ``execute``.

Publishing to a topic without a sink fails the job (the error names the topic).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import struct
import sys
import threading
import traceback
from typing import Any

# Must match casparian_trio.bridge._framing (checked by tests/unit/bridge).
HEADER = struct.Struct("!I")
# The job spec the host sends is small JSON; refuse anything absurd.
MAX_SPEC_BYTES = 64 * 1024 * 1024
TOPIC_LEN = struct.Struct("!H")
END_TAG = 0
ERROR_TAG = 0xFFFFFFFF
SHARED_TAG = 0xFFFFFFFE
# A frame of at least this many bytes goes through a sealed memfd when the host
# offers it ("shm" in the job spec): one copy instead of three. Smaller frames
# (a small file's one frame) are cheaper through the socket.
SHARED_MIN_BYTES = 256 * 1024
# A frame starts in a memfd when its first batch is at least this big (else in
# memory: a small file's one batch never pays for a memfd); one that still ends
# under SHARED_MIN_BYTES is read back and goes through the socket.
SHARED_START_BYTES = 32 * 1024
# Coalesce small batches of one topic up to about this many bytes per frame:
# per-frame costs (an IPC schema, a host thread hop) stay negligible, while
# frames stay small enough for guest parsing and host writing to overlap.
FRAME_TARGET_BYTES = 4 * 1024 * 1024
# Never send a frame larger than this (the host refuses > 256 MiB).
FRAME_MAX_BYTES = 64 * 1024 * 1024
# Full frames waiting for the sender thread (each about FRAME_TARGET_BYTES).
SEND_AHEAD = 2
PR_SET_PDEATHSIG = 1
SIGKILL = 9


class PluginLoadError(Exception):
    """The plugin source cannot be compiled or defines no usable Handler."""


class TopicError(Exception):
    """The plugin published to a topic that has no sink."""


# How long jemalloc keeps freed pages before returning them (its dirty and
# muzzy decay). Measured (README, "Performance"): 2M-row jobs one after another
# in one guest, 0.5 s apart, took a median 0.29 s instead of 0.33 s, the guest's
# page faults per job fell from 35-60k to 5-20k. The price: after a big job an
# idle guest holds its peak memory up to this long (jemalloc's background
# thread then returns it); its RSS limit is checked at the job's end either way.
JEMALLOC_DECAY_MS = 10_000


def _die_with_parent(parent_pid: int) -> None:
    # Linux only; elsewhere the host's kill-on-cancel still applies.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # If the parent died before prctl ran, we were already re-parented.
    if os.getppid() != parent_pid:
        os._exit(70)


def _choose_memory_pool(pa: Any) -> None:
    """jemalloc for Arrow's buffers when this pyarrow has it and nobody chose a pool.

    Measured on a 2-core VM (README, "Performance"): with mimalloc, Arrow's
    default, a guest's first big job paid ~0.2 s of system time for fresh pages
    (its arenas are mapped anew per thread, and under the RLIMIT_AS of
    ``memory_mb`` more so); jemalloc kept the 2M-row job's parse at its warm
    speed. ``ARROW_DEFAULT_MEMORY_POOL`` (passed through when the user set
    it) still decides: a pool it names other than jemalloc is kept.

    Freed pages go back to the OS ``JEMALLOC_DECAY_MS`` after their last use,
    not Arrow's 1 s: a reused guest's next job then parses into pages it
    already has instead of faulting in its whole table again.
    """
    if (os.environ.get("ARROW_DEFAULT_MEMORY_POOL") or "jemalloc") != "jemalloc":
        return
    if "jemalloc" in pa.supported_memory_backends():
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(JEMALLOC_DECAY_MS)


def _limit_memory(limit_mb: int) -> None:
    # RLIMIT_AS counts address space, and the interpreter plus pyarrow already
    # map a lot of it; the limit is what the plugin may add on top of that.
    import resource

    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    base = pages * os.sysconf("SC_PAGE_SIZE")
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = base + limit_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_AS, (want, hard))


class Channel:
    """Frames data to the host, coalescing small batches per topic.

    Each published batch is written into its topic's open frame (``_OpenFrame``,
    Arrow IPC) before ``publish`` returns: its values are copied then, once,
    so a plugin may refill the buffers behind a batch afterwards (a numpy
    array or pandas frame pyarrow wrapped without a copy) whatever its size.
    A frame that fills up while the plugin still runs is sent by a sender
    thread, so the plugin's next batch is parsed while the host reads
    (``sendall`` releases the GIL); at most ``SEND_AHEAD`` frames wait for
    it. A send that failed fails every later frame and the job (its ERROR
    frame), even if the plugin caught the error. Frames sent at the end and
    control frames wait until the thread has sent everything before them, so
    the host reads frames in the order they were made and END or ERROR last.
    """

    def __init__(self, sock: socket.socket, topics: list[str], *, shared: bool = False) -> None:
        self.sock = sock
        self.topics = set(topics)
        self.shared = shared and hasattr(os, "memfd_create")
        self.shared_frames = 0
        self.open: dict[str, _OpenFrame] = {}
        self.rows = 0
        self.batches = 0
        # A zero-row batch per topic that has sent nothing yet: its schema still
        # reaches the host (a header-only file records its columns).
        self.empty: dict[str, Any] = {}
        self.sent: set[str] = set()
        self._ahead: queue.Queue[tuple[bytes, Any, int | None] | None] | None = None
        self._sender: threading.Thread | None = None
        self._send_error: BaseException | None = None

    def publish(self, topic: str, data: object) -> None:
        if topic not in self.topics:
            raise TopicError(
                f"plugin published to topic {topic!r}, which has no sink "
                f"(configured: {', '.join(sorted(self.topics)) or 'none'})"
            )
        for batch in _as_batches(data):
            self._add(topic, batch)

    def _add(self, topic: str, batch: Any) -> None:
        if batch.num_rows == 0:
            if topic not in self.sent and topic not in self.open:
                self.empty.setdefault(topic, batch)
            return
        frame = self.open.get(topic)
        if frame is not None and not frame.schema.equals(batch.schema):
            self._flush(topic, ahead=True)
            frame = None
        size = batch.nbytes
        if size > FRAME_MAX_BYTES and batch.num_rows > 1:
            # Split a huge batch so no frame comes near the host's limit.
            step = max(1, batch.num_rows * FRAME_TARGET_BYTES // size)
            for start in range(0, batch.num_rows, step):
                self._add(topic, batch.slice(start, step))
            return
        if frame is not None and frame.nbytes + size > FRAME_TARGET_BYTES:
            self._flush(topic, ahead=True)  # frames stay near the target, not up to twice it
            frame = None
        self._raise_send_error()  # nothing more after a lost frame
        try:
            if frame is None:
                frame = self.open[topic] = self._new_frame(batch.schema, size)
            elif self.shared and not frame.shared and frame.nbytes + size >= SHARED_MIN_BYTES:
                # Small batches add up: the frame moves to a memfd (a copy of < 256 KiB).
                frame = self.open[topic] = self._moved(frame, shared=True)
            try:
                frame.add(batch)
            except OSError:
                if not frame.shared:
                    raise
                # The memfd cannot take more (ENOMEM, ENOSPC): the socket from now on.
                self.shared = False
                frame = self.open[topic] = self._moved(frame, shared=False)
                frame.add(batch)
        except BaseException as exc:
            # Half a message may be in the frame: it is dropped, and the job fails
            # even if the plugin catches this (no END after a lost batch).
            dropped = self.open.pop(topic, None)
            if dropped is not None:
                dropped.discard()
            self._send_error = exc
            raise
        if frame.nbytes >= FRAME_TARGET_BYTES:
            self._flush(topic, ahead=True)

    def _new_frame(self, schema: Any, first_bytes: int) -> _OpenFrame:
        if self.shared and first_bytes >= SHARED_START_BYTES:
            try:
                return _OpenFrame(schema, shared=True)
            except OSError:  # no memfd or no /proc here: the socket from now on
                self.shared = False
        return _OpenFrame(schema, shared=False)

    def _moved(self, frame: _OpenFrame, *, shared: bool) -> _OpenFrame:
        """``frame``'s batches so far in a new frame: a memfd (``shared``, when one
        takes them) or memory."""
        schema, rows, batches = frame.schema, frame.rows, frame.batches
        salvaged = frame.salvage()
        moved = (
            self._new_frame(schema, SHARED_START_BYTES)
            if shared
            else _OpenFrame(schema, shared=False)
        )
        try:
            for batch in salvaged:
                moved.add(batch)
        except OSError:
            in_memfd = moved.shared
            moved.discard()
            if not in_memfd:
                raise
            self.shared = False  # the memfd cannot take them: memory, the socket from now on
            moved = _OpenFrame(schema, shared=False)
            for batch in salvaged:
                moved.add(batch)
        moved.rows, moved.batches = rows, batches  # the plugin's counts, not the salvage's
        return moved

    def _flush(self, topic: str, *, ahead: bool = False) -> None:
        opened = self.open.pop(topic, None)
        if opened is None:
            return
        try:
            self._raise_send_error()
        except BaseException:
            opened.discard()
            raise
        try:
            frame = self._finish(topic, opened)
        except BaseException as exc:
            opened.discard()
            self._send_error = exc  # its rows are lost: the job fails, caught or not
            raise
        self.rows += opened.rows
        self.batches += opened.batches
        self.sent.add(topic)
        if ahead and self._start_sender():
            assert self._ahead is not None
            self._ahead.put(frame)  # blocks while SEND_AHEAD frames wait
            return
        try:
            self._drain()
        except BaseException:
            if frame[2] is not None:
                os.close(frame[2])  # a memfd nobody will send
            raise
        try:
            self._send(frame)
        except BaseException as exc:
            self._send_error = exc  # a frame may be half sent: no more frames
            raise

    def _finish(self, topic: str, opened: _OpenFrame) -> tuple[bytes, Any, int | None]:
        name = topic.encode("utf-8")
        try:
            body, fd = opened.finish()
        except OSError:
            if not opened.shared:
                raise
            # The memfd cannot take the stream's end (ENOSPC, ENOMEM): memory instead.
            self.shared = False
            opened = self._moved(opened, shared=False)
            body, fd = opened.finish()
        if opened.unsealable:
            self.shared = False  # the socket from now on
        if fd is not None:
            self.shared_frames += 1
            return HEADER.pack(SHARED_TAG) + HEADER.pack(len(name)) + name, None, fd
        head = HEADER.pack(TOPIC_LEN.size + len(name) + len(body)) + TOPIC_LEN.pack(len(name))
        return head + name, body, None

    def _start_sender(self) -> bool:
        if self._sender is not None:
            return True
        self._ahead = queue.Queue(maxsize=SEND_AHEAD)
        thread = threading.Thread(target=self._send_ahead, name="guest-sender", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no memory for its stack under a tight memory_mb: send in line
            self._ahead = None
            return False
        self._sender = thread
        return True

    def _send_ahead(self) -> None:
        assert self._ahead is not None
        while (item := self._ahead.get()) is not None:
            if self._send_error is None:  # after a failure, drop the rest: ERROR follows
                try:
                    self._send(item)
                except BaseException as exc:  # MemoryError too: the job's ERROR frame says it
                    self._send_error = exc
            elif item[2] is not None:
                os.close(item[2])

    def _drain(self) -> None:
        """Until the sender thread has sent every frame handed to it; its error is raised here."""
        if self._sender is not None:
            assert self._ahead is not None
            self._ahead.put(None)
            self._sender.join()
            self._sender = self._ahead = None
        self._raise_send_error()

    def _raise_send_error(self) -> None:
        # Kept, not cleared: a plugin that catches the error around publish() must
        # not go on to an END frame with a frame lost (flush_all raises it again).
        if self._send_error is not None:
            for topic in list(self.open):  # their rows will never be sent
                self.open.pop(topic).discard()
            raise self._send_error

    def _send(self, frame: tuple[bytes, Any, int | None]) -> None:
        head, body, fd = frame
        if fd is None:
            self.sock.sendall(head)
            self.sock.sendall(memoryview(body))
            return
        try:  # the descriptor travels with the tag's bytes
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            sent = self.sock.sendmsg([head], rights)
            if sent < len(head):
                self.sock.sendall(head[sent:])
        finally:
            os.close(fd)

    def flush_all(self) -> None:
        self._drain()
        for topic in list(self.open):
            self._flush(topic)
        for topic, batch in self.empty.items():
            if topic not in self.sent:
                frame = self.open[topic] = _OpenFrame(batch.schema, shared=False)
                frame.add(batch)
                self._flush(topic)

    def send_control(self, tag: int, obj: dict[str, Any]) -> None:
        try:
            self._drain()  # END or ERROR comes after every data frame
        except BaseException:
            # END never follows a lost frame (flush_all raised first, inside the
            # job's try, so the guest sends ERROR); ERROR is sent whatever failed.
            if tag != ERROR_TAG:
                raise
        body = json.dumps(obj, default=str).encode("utf-8")
        self.sock.sendall(HEADER.pack(tag) + HEADER.pack(len(body)) + body)


class _OpenFrame:
    """One DATA frame being written: an Arrow IPC stream, in memory or in a memfd.

    ``add`` writes a batch's values into the stream at once (the copy every
    frame needs anyway). ``finish`` ends the stream: ``(body, None)`` for
    the socket, or ``(None, fd)``, a memfd sealed against any change (see
    ``bridge/_shared_frames.py``). A memfd frame under ``SHARED_MIN_BYTES``
    (the host refuses those) is read back and goes through the socket, as
    does one whose seals this system refuses. ``salvage`` gives back the
    batches of a frame whose write failed (its complete messages only).

    Raises OSError: the memfd cannot be made or written; pyarrow's errors
    (ArrowMemoryError) when memory runs out.
    """

    def __init__(self, schema: Any, *, shared: bool) -> None:
        import pyarrow as pa

        self.schema = schema
        self.nbytes = 0
        self.rows = 0
        self.batches = 0
        self.written = 0  # bytes of complete IPC messages in the stream
        self.fd: int | None = None
        self.unsealable = False  # finish() found this system refuses seals
        # The IPC writer keeps each field's last dictionary to compare the next
        # with, and writes it again only if it changed: a dictionary over a
        # buffer the plugin refills would compare equal to its new values.
        self.private_dictionaries = any(_has_dictionary(f.type) for f in schema)
        if shared:
            fd = os.memfd_create("casparian-frame", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                self.sink: Any = pa.OSFile(f"/proc/self/fd/{fd}", "wb")
                # A second descriptor of the memfd: not for the plugin's children.
                os.set_inheritable(self.sink.fileno(), False)
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
        else:
            self.sink = pa.BufferOutputStream()
        try:
            self.writer = pa.ipc.new_stream(self.sink, schema)
        except BaseException:
            self.discard()
            raise

    @property
    def shared(self) -> bool:
        return self.fd is not None

    def add(self, batch: Any) -> None:
        if self.private_dictionaries:
            batch = _private_copy(batch)
        self.writer.write_batch(batch)
        self.written = self.sink.tell()
        self.nbytes += batch.nbytes
        self.rows += batch.num_rows
        self.batches += 1

    def finish(self) -> tuple[Any, int | None]:
        self.writer.close()
        if self.fd is None:
            return self.sink.getvalue(), None
        import fcntl

        self.sink.close()
        fd, self.fd = self.fd, None
        try:
            size = os.fstat(fd).st_size
            if size >= SHARED_MIN_BYTES:
                seals = (
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
                )
                try:
                    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
                except OSError:  # no seals here: the socket, below
                    self.unsealable = True
                else:
                    return None, fd
            body = _read_all(fd, size)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return body, None

    def salvage(self) -> list[Any]:
        """The batches written so far, decoded from a copy of the stream; the frame is dropped."""
        import pyarrow as pa

        try:
            if not self.written:
                return []
            if self.fd is None:
                data = self.sink.getvalue()[: self.written]
            else:
                data = pa.py_buffer(_read_all(self.fd, self.written))
            return list(pa.ipc.open_stream(data))
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the frame unsent (closes its memfd and the writer's descriptor of it)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(Exception):
                self.sink.close()
            os.close(fd)


def _has_dictionary(kind: Any) -> bool:
    """``kind`` is a dictionary type or holds one at any depth (a list's values, a
    struct's field, an extension type's storage)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        return True
    if isinstance(kind, pa.ExtensionType):
        return _has_dictionary(kind.storage_type)
    return any(_has_dictionary(kind.field(i).type) for i in range(kind.num_fields))


def _private_copy(batch: Any) -> Any:
    """``batch`` backed by a copy of its values (an IPC stream in memory, read back)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    copy = pa.ipc.open_stream(sink.getvalue()).read_next_batch()
    if copy.schema.equals(batch.schema):
        return copy
    # An extension type pyarrow has not registered here comes back as its storage.
    columns = [
        pa.ExtensionArray.from_storage(field.type, column)
        if isinstance(field.type, pa.ExtensionType)
        and not isinstance(column.type, pa.ExtensionType)
        else column
        for field, column in zip(batch.schema, copy.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _read_all(fd: int, size: int) -> bytes:
    """``size`` bytes from the start of ``fd`` (pread returns at most ~2 GiB at a time)."""
    parts, at = [], 0
    while at < size:
        chunk = os.pread(fd, size - at, at)
        if not chunk:
            raise OSError(f"shared-memory frame ended at byte {at} of {size}")
        parts.append(chunk)
        at += len(chunk)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def _as_batches(data: object) -> Any:
    import pyarrow as pa

    if isinstance(data, pa.RecordBatch):
        return [data]
    if isinstance(data, pa.Table):
        if data.num_rows == 0:  # to_batches() would drop the schema with the rows
            empty = [pa.array([], type=field.type) for field in data.schema]
            return [pa.RecordBatch.from_arrays(empty, schema=data.schema)]
        return data.to_batches()
    if type(data).__module__.split(".")[0] == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False).to_batches()
    raise TypeError(
        f"plugin produced {type(data).__name__}; expected a pyarrow Table or RecordBatch "
        "(or a pandas DataFrame)"
    )


class Context:
    """What ``configure(ctx, config)`` receives (see the module docstring)."""

    def __init__(self, job: dict[str, Any], channel: Channel) -> None:
        import logging

        self.job_id = job["job_id"]
        self.file_version_id = job["file_version_id"]
        self.topics = tuple(job["topics"])
        self.scratch_dir = job.get("scratch_dir") or os.getcwd()
        self.log = logging.getLogger("plugin")
        self._channel = channel

    def publish(self, topic: str, data: object) -> None:
        """Send ``data`` (Table, RecordBatch or DataFrame) to ``topic``'s sink."""
        self._channel.publish(topic, data)


class FileEvent:
    """What ``consume(event)`` receives: the input file of this job."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.path = job["input"]
        self.job_id = job["job_id"]
        self.file_version_id = job["file_version_id"]

    @property
    def size(self) -> int:
        return os.path.getsize(self.path)

    def open(self, mode: str = "rb") -> Any:
        return open(self.path, mode)


def _load_handler_class(plugin_path: str) -> Any:
    with open(plugin_path, encoding="utf-8") as f:
        source = f.read()
    namespace: dict[str, Any] = {"__name__": "casparian_plugin", "__file__": plugin_path}
    # Compiled with its file name so tracebacks and linecache show its lines.
    code = compile(source, plugin_path, "exec")
    exec(code, namespace)
    handler_cls = namespace.get("Handler")
    if not isinstance(handler_cls, type):
        raise PluginLoadError(
            "the plugin defines no class Handler (expected `class Handler` with "
            "`execute(self, file_path)` or `configure(ctx, config)` + `consume(event)`)"
        )
    if not (hasattr(handler_cls, "execute") or hasattr(handler_cls, "consume")):
        raise PluginLoadError("class Handler has neither execute(file_path) nor consume(event)")
    return handler_cls


class Loaded:
    """The plugin this guest has compiled (once), by its ``plugin_key``."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.handler_cls: Any = None

    def handler_for(self, job: dict[str, Any]) -> Any:
        """A fresh Handler instance for ``job``, compiling the plugin on the first job."""
        key = str(job.get("plugin_key") or job["plugin"])
        if self.handler_cls is None:
            try:
                self.handler_cls = _load_handler_class(job["plugin"])
            except SyntaxError as exc:
                raise PluginLoadError(f"SyntaxError: {exc}") from exc
            self.key = key
        elif key != self.key:
            raise PluginLoadError(
                f"this guest runs plugin version {self.key}, not {key} "
                "(a guest never runs another plugin version)"
            )
        handler = self.handler_cls()
        if not (hasattr(handler, "execute") or hasattr(handler, "consume")):
            raise PluginLoadError("class Handler has neither execute(file_path) nor consume(event)")
        return handler


def _emit(channel: Channel, result: object) -> None:
    # execute()/consume() may return None, one object, or an iterable of them.
    if result is None:
        return
    if hasattr(result, "__iter__") and not _is_data(result):
        for item in result:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                channel.publish(item[0], item[1])
            elif item is not None:
                channel.publish("output", item)
        return
    channel.publish("output", result)


def _is_data(obj: object) -> bool:
    import pyarrow as pa

    if isinstance(obj, (pa.Table, pa.RecordBatch)):
        return True
    return type(obj).__module__.split(".")[0] == "pandas"


def _run_plugin(job: dict[str, Any], channel: Channel, loaded: Loaded) -> None:
    handler = loaded.handler_for(job)
    if hasattr(handler, "consume"):
        if hasattr(handler, "configure"):
            handler.configure(Context(job, channel), dict(job.get("config") or {}))
        _emit(channel, handler.consume(FileEvent(job)))
        if hasattr(handler, "close"):
            handler.close()
    else:
        _emit(channel, handler.execute(job["input"]))
    channel.flush_all()


def _error_frame(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MemoryError):
        kind = "memory"
    elif isinstance(exc, PluginLoadError):
        kind = "load"
    elif isinstance(exc, TopicError):
        kind = "topic"
    else:
        kind = "plugin"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message = str(exc) if kind in ("load", "topic") else f"{type(exc).__name__}: {exc}"
    return {"kind": kind, "message": message, "traceback": tb[-20000:]}


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def _recv_job(sock: socket.socket) -> dict[str, Any] | None:
    """Block until the host sends this guest's job spec; None on EOF (not needed)."""
    head = _recv_exactly(sock, HEADER.size)
    if head is None:
        return None
    (length,) = HEADER.unpack(head)
    if length > MAX_SPEC_BYTES:
        raise ValueError(f"job spec of {length} bytes")
    body = _recv_exactly(sock, length)
    return None if body is None else json.loads(body.decode("utf-8"))


def _exit(code: int) -> None:
    # Skip interpreter teardown (tens of ms with pyarrow/numpy loaded): the
    # terminal frame is sent and stdout/stderr are unbuffered (-u).
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main(argv: list[str]) -> int:
    socket_path, parent_pid = argv[1], int(argv[2])
    _die_with_parent(parent_pid)
    # Everything that does not depend on the job happens before its spec arrives.
    import logging

    import pyarrow  # (imported before the limit: it maps a lot)

    _choose_memory_pool(pyarrow)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    loaded = Loaded()
    limited = False
    while True:
        job = _recv_job(sock)
        if job is None:
            _exit(0)
        assert job is not None
        if job.get("memory_limit_mb") and not limited:
            # Once: a guest runs one plugin version, whose MANIFEST sets the limit.
            _limit_memory(int(job["memory_limit_mb"]))
            limited = True
        channel = Channel(sock, job["topics"], shared=bool(job.get("shm")))
        try:
            _run_plugin(job, channel, loaded)
        except Exception as exc:  # MemoryError is an Exception too
            channel.send_control(ERROR_TAG, _error_frame(exc))
            _exit(1)
        channel.send_control(
            END_TAG,
            {
                "rows": channel.rows,
                "batches": channel.batches,
                "shared_frames": channel.shared_frames,
            },
        )
        if not job.get("reuse"):
            _exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
