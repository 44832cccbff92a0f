"""A small gRPC server speaking HTTP/2 (via ``h2``) over any byte stream.

On a BuildKit session the daemon is the HTTP/2 client and we are the server, and the bytes
travel inside ``Control.Session`` messages. grpcio's server can only listen on sockets and costs
hundreds of microseconds per streamed message, which made uploads of many small files several
times slower than buildctl. Serving HTTP/2 ourselves lets us write straight into the session
stream and coalesce many small gRPC messages into one ``BytesMessage``.

Handlers keep grpcio's shapes: ``fn(request, context)`` for unary methods and
``fn(request_iterator, context)`` returning an iterator for streaming ones; ``context`` offers
``invocation_metadata()`` and ``abort(code, details)``. Those call-side types are in `h2calls`;
this module is the connection: frames, flow control and the writers waiting for window.
"""

from __future__ import annotations

import contextlib
import queue
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# The call side lives in h2calls; its handler-facing names are re-exported from here.
from envd_core.buildkit.session.h2calls import (
    END,
    Batch,
    CallContext,
    CallContextImpl,
    CallState,
    Cancelled,
    Framed,
    Method,
    RequestStream,
    RpcAbort,
)

__all__ = [
    "Batch",
    "Buffer",
    "CallContext",
    "FlowStats",
    "Framed",
    "H2GrpcConnection",
    "Method",
    "RequestStream",
    "RpcAbort",
]

# What a transport's ``write_parts`` gets: frame headers and slices of handlers' buffers.
Buffer = bytes | bytearray | memoryview

# Our receive windows: big enough that an export streamed to us is never throttled by us.
STREAM_WINDOW = 8 << 20
CONNECTION_WINDOW = 32 << 20
MAX_MESSAGE = 16 << 20
# Events that may give writers flow-control window, and events that end streams.
_WINDOW_EVENTS: tuple[type, ...] = ()
_WAKE_EVENTS: tuple[type, ...] = ()
_WINDOW_UPDATED: type = type(None)
_PING_RECEIVED: type = type(None)


@dataclass
class FlowStats:
    """Counters of one HTTP/2 connection (cheap; read by benchmarks and tests).

    ``window_waits``/``window_wait_seconds``: how often and how long a sender had data but no
    flow-control window from the peer. ``backlog_waits``: pauses because the transport had
    ``max_backlog`` bytes queued.
    """

    data_frames_out: int = 0
    data_bytes_out: int = 0
    window_updates_in: int = 0
    pings_in: int = 0
    window_waits: int = 0
    window_wait_seconds: float = 0.0
    backlog_waits: int = 0


class H2GrpcConnection:
    """Serves gRPC on one HTTP/2 connection whose bytes we are fed and whose output we write.

    ``write(data)`` is called in order, under the connection lock; ``write_parts(parts)``, if
    given, takes DATA frames as a list of buffers to join once where they leave (frame headers
    and slices of a handler's buffer: writing them costs no copy here); ``backlog()`` tells
    writers how many written bytes are not yet delivered, so producers pause above
    ``max_backlog``.
    """

    def __init__(
        self,
        methods: Mapping[str, Method],
        write: Callable[[bytes], None],
        *,
        write_parts: Callable[[list[Buffer]], None] | None = None,
        backlog: Callable[[], int] | None = None,
        max_backlog: int = 8 << 20,
    ) -> None:
        import h2.config
        import h2.connection
        import h2.settings

        self.methods = dict(methods)
        self._write = write
        self._write_parts = write_parts or (lambda parts: write(b"".join(parts)))
        self._backlog = backlog
        self._max_backlog = max_backlog
        self._cond = threading.Condition(threading.RLock())
        self._streams: dict[int, CallState] = {}
        self.closed = False
        self.stats = FlowStats()
        global _WINDOW_EVENTS, _WAKE_EVENTS, _WINDOW_UPDATED, _PING_RECEIVED
        if not _WAKE_EVENTS:
            import h2.events

            _WINDOW_EVENTS = (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)
            _WAKE_EVENTS = (h2.events.StreamReset, h2.events.ConnectionTerminated)
            _WINDOW_UPDATED = h2.events.WindowUpdated
            _PING_RECEIVED = h2.events.PingReceived
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self._h2 = h2.connection.H2Connection(config=config)
        with self._cond:
            self._h2.initiate_connection()
            self._h2.update_settings(
                {
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
                    h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20,
                }
            )
            self._h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
            self._flush()

    # -- plumbing -----------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._write(data)

    def notify(self) -> None:
        """Wake writers waiting for backlog space (the transport drained some bytes)."""
        with self._cond:
            self._cond.notify_all()

    def _wait_backlog(self, stream: CallState) -> None:
        if self._backlog is None:
            return
        if self._backlog() > self._max_backlog:
            self.stats.backlog_waits += 1
        while self._backlog() > self._max_backlog and not (stream.cancelled or self.closed):
            self._cond.wait(1.0)

    def feed(self, data: bytes) -> None:
        """Process bytes from the peer."""
        import h2.events
        import h2.exceptions

        started: list[CallState] = []
        stream: CallState | None
        wake = window_opened = False
        with self._cond:
            if self.closed:
                return
            try:
                events = self._h2.receive_data(data)
            except h2.exceptions.ProtocolError:
                self._terminate()
                raise
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    pairs = [(_text(k), _text(v)) for k, v in event.headers]
                    metadata = [(k, v) for k, v in pairs if not k.startswith(":")]
                    new = CallState(event.stream_id, dict(pairs).get(":path", ""), metadata)
                    self._streams[event.stream_id] = new
                    started.append(new)
                elif isinstance(event, h2.events.DataReceived):
                    stream = self._streams.get(event.stream_id)
                    # Message bytes are acknowledged when the handler consumes them, so a slow
                    # consumer (an export written to a slow disk) throttles the daemon instead
                    # of filling our memory; padding and orphaned data are acknowledged now.
                    unconsumed = len(event.data) if stream is not None else 0
                    if event.flow_controlled_length > unconsumed:
                        self._h2.acknowledge_received_data(
                            event.flow_controlled_length - unconsumed, event.stream_id
                        )
                    if stream is not None:
                        stream.buffer += event.data
                        self._deliver(stream)
                elif isinstance(event, h2.events.StreamEnded):
                    stream = self._streams.get(event.stream_id)
                    if stream is not None:
                        stream.inbox.put(END)
                elif isinstance(event, h2.events.StreamReset):
                    stream = self._streams.pop(event.stream_id, None)
                    if stream is not None:
                        stream.cancelled = True
                        stream.inbox.put(END)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self._terminate()
                if isinstance(event, _WINDOW_EVENTS):
                    window_opened = True
                    if isinstance(event, _WINDOW_UPDATED):
                        self.stats.window_updates_in += 1
                elif isinstance(event, _WAKE_EVENTS):
                    wake = True
                elif isinstance(event, _PING_RECEIVED):
                    self.stats.pings_in += 1
            if window_opened:
                # Data waiting for window leaves now, from this thread; its writer is only
                # woken once all of it is out. Smallest first: a health-check answer must not
                # wait behind an upload that always has more queued.
                waiting = [s for s in self._streams.values() if s.pending is not None]
                waiting.sort(key=lambda s: len(s.pending or b""))
                for each in waiting:
                    if self._pump(each):
                        wake = True
            if wake:
                self._cond.notify_all()
            self._flush()
        for stream in started:
            threading.Thread(
                target=self._run, args=(stream,), name="envd-session-rpc", daemon=True
            ).start()

    def _deliver(self, stream: CallState) -> None:
        buf = stream.buffer
        while len(buf) >= 5:
            compressed, length = struct.unpack_from(">BI", buf, 0)
            if len(buf) < 5 + length:
                break
            if compressed:
                stream.cancelled = True
                stream.inbox.put(END)
                return
            stream.inbox.put(bytes(buf[5 : 5 + length]))
            del buf[: 5 + length]

    def _acknowledge(self, stream_id: int, size: int) -> None:
        """Give the daemon back flow-control window for consumed message bytes."""
        with self._cond:
            if self.closed:
                return
            try:
                self._h2.acknowledge_received_data(size, stream_id)
            except Exception:  # noqa: BLE001 - h2 state errors or a failed write: going away
                return
            self._flush()

    def _terminate(self) -> None:
        self.closed = True
        for stream in self._streams.values():
            stream.cancelled = True
            stream.inbox.put(END)
        self._streams.clear()
        self._cond.notify_all()

    def close(self) -> None:
        """Tell the peer we are going away and fail every open call."""
        with self._cond:
            if self.closed:
                return
            # Best effort: the peer may be gone already (h2 state error or a failed write).
            with contextlib.suppress(Exception):
                self._h2.close_connection()
                self._flush()
            self._terminate()

    # -- calls --------------------------------------------------------------------------------

    def _run(self, stream: CallState) -> None:
        method = self.methods.get(stream.path)
        if method is None:
            self._finish(stream, 12, f"unknown method {stream.path}")  # UNIMPLEMENTED
            return
        context = CallContextImpl(stream)
        requests = RequestStream(stream, method.deserialize, self._acknowledge)
        try:
            if method.stream_requests:
                result = method.handler(requests, context)
            else:
                request = next(requests, None)
                if request is None:
                    raise RpcAbort(13, "missing request message")  # INTERNAL
                result = method.handler(request, context)
            responses = result if method.stream_responses else [result]
            serialize = method.serialize or (lambda m: m)
            for response in responses:
                if isinstance(response, Framed):
                    framed: bytes | bytearray = response
                else:
                    items = response if isinstance(response, Batch) else (response,)
                    framed = b"".join(
                        struct.pack(">BI", 0, len(p)) + p for p in map(serialize, items)
                    )
                # Only streams wait for backlog room: health checks must never queue behind
                # an upload.
                self._send_framed(stream, framed, wait=method.stream_responses)
            self._finish(stream, 0, "")
        except RpcAbort as exc:
            self._finish(stream, exc.code, exc.details)
        except Cancelled:
            pass
        except Exception as exc:  # noqa: BLE001 - a handler bug becomes the call's status
            self._finish(stream, 2, f"{type(exc).__name__}: {exc}")  # UNKNOWN

    def _send_headers_once(self, stream: CallState) -> None:
        if not stream.headers_sent:
            self._h2.send_headers(
                stream.id, [(":status", "200"), ("content-type", "application/grpc")]
            )
            stream.headers_sent = True

    def _send_framed(
        self, stream: CallState, framed: bytes | bytearray, *, wait: bool = True
    ) -> None:
        """Send length-prefixed gRPC message bytes as DATA frames, honouring flow control.

        Returns once every byte is handed to the transport. What the peer's window does not
        take now stays on the stream, and `feed` sends it the moment a WINDOW_UPDATE arrives,
        on the thread that received it: the writer thread is woken only when its data is all
        out, so a window round trip never waits for a thread switch.
        """
        if not framed:
            return
        stats = self.stats
        with self._cond:
            stream.pending = memoryview(framed)
            while not self._pump(stream):
                started = time.monotonic()
                self._cond.wait(1.0)
                stats.window_waits += 1
                stats.window_wait_seconds += time.monotonic() - started
            if stream.cancelled or self.closed:
                stream.pending = None
                raise Cancelled
            if wait:
                self._wait_backlog(stream)

    def _pump(self, stream: CallState) -> bool:
        """Send as much of ``stream.pending`` as the windows allow (connection lock held).

        Returns whether the writer is done waiting: all sent, or the stream is gone.

        DATA frames are framed here rather than by ``h2`` (whose per-frame cost dominated
        uploads); ``h2`` still owns headers, trailers and state, and its window counters are
        debited so its bookkeeping stays exact.
        """
        import h2.exceptions

        data = stream.pending
        if data is None or stream.cancelled or self.closed:
            return True
        try:
            self._send_headers_once(stream)
        except h2.exceptions.StreamClosedError:
            stream.cancelled = True
            return True
        h2stream = self._h2.streams.get(stream.id)
        if h2stream is None or h2stream.closed:
            stream.cancelled = True
            return True
        window = min(self._h2.outbound_flow_control_window, h2stream.outbound_flow_control_window)
        if window <= 0:
            return False
        n = min(window, len(data))
        frame_size = self._h2.max_outbound_frame_size
        sid = stream.id.to_bytes(4, "big")
        # Frame headers and memoryview slices of the caller's buffer: the transport joins them
        # once into its outgoing message, no copy here.
        parts: list[Buffer] = []
        queued = self._h2.data_to_send()  # headers, WINDOW_UPDATEs, PING acks go first
        if queued:
            parts.append(queued)
        for off in range(0, n, frame_size):
            k = min(frame_size, n - off)
            # 3-byte length, type 0 (DATA), no flags, stream id.
            parts.append(k.to_bytes(3, "big") + b"\x00\x00" + sid)
            parts.append(data[off : off + k])
        self.stats.data_frames_out += (n + frame_size - 1) // frame_size
        self.stats.data_bytes_out += n
        self._h2.outbound_flow_control_window -= n
        h2stream.outbound_flow_control_window -= n
        self._write_parts(parts)
        if n < len(data):
            stream.pending = data[n:]
            return False
        stream.pending = None
        return True

    def _finish(self, stream: CallState, code: int, details: str) -> None:
        import h2.exceptions

        trailers = [("grpc-status", str(code))]
        if details:
            trailers.append(("grpc-message", urllib.parse.quote(details, safe=_SAFE)))
        with self._cond:
            self._streams.pop(stream.id, None)
            # Requests the handler never read still hold connection window: give it back.
            leftover = len(stream.buffer) + stream.unacked
            stream.unacked = 0
            while True:
                try:
                    item = stream.inbox.get_nowait()
                except queue.Empty:
                    break
                if item is not END:
                    leftover += 5 + len(item)
            if leftover and not self.closed:
                with contextlib.suppress(Exception):  # the connection is going away
                    self._h2.acknowledge_received_data(leftover, stream.id)
            if stream.cancelled or self.closed:
                self._flush()
                return
            try:
                if not stream.headers_sent:
                    # Trailers-only response.
                    trailers = [(":status", "200"), ("content-type", "application/grpc"), *trailers]
                    stream.headers_sent = True
                self._h2.send_headers(stream.id, trailers, end_stream=True)
                self._flush()
            except h2.exceptions.StreamClosedError:
                return
            except h2.exceptions.ProtocolError:
                return


def _text(value: bytes | str) -> str:
    # header_encoding="utf-8" makes h2 hand over str; its annotations still allow bytes.
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


# Printable ASCII except "%" stays as is in grpc-message (gRPC's percent-encoding rule).
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
