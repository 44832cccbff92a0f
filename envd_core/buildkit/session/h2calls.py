"""The call side of `h2serve`: what a handler is given and what it may yield.

`h2serve.H2GrpcConnection` owns the HTTP/2 connection, its flow control and its frames; this
module holds one call's state (`CallState`), the handler-facing types (`Method`, `CallContext`,
`RequestStream`, `Batch`, `Framed`, `RpcAbort`) and nothing that touches ``h2``.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

if TYPE_CHECKING:
    import grpc

# Consumed request bytes are acknowledged (window given back) in batches of at most this.
ACK_BATCH = 64 << 10
# What a call's inbox holds after its last message.
END = object()


@dataclass(frozen=True)
class Method:
    """One served method: handler, streaming flags and (de)serializers (None = raw bytes)."""

    handler: Callable[..., Any]
    stream_requests: bool
    stream_responses: bool
    deserialize: Callable[[bytes], Any] | None = None
    serialize: Callable[[Any], bytes] | None = None


class Batch(list[Any]):
    """Several response messages a streaming handler yields at once: sent in one write."""


class Framed(bytearray):
    """Response messages a streaming handler has already serialized and gRPC-framed (each one
    a 5-byte prefix and its bytes): sent as they are, in one write. The handler must not touch
    the buffer after yielding it (its bytes may still be queued for the peer)."""


class RpcAbort(Exception):
    """Raised by ``context.abort``; ends the call with that status."""

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Cancelled(Exception):
    """The peer reset the stream or the connection went away."""


def _status_int(code: grpc.StatusCode | int) -> int:
    if isinstance(code, int):
        return code
    number, _name = code.value  # grpc.StatusCode's value is a (number, name) tuple
    return int(number)


class CallContext(Protocol):
    """What a handler gets as ``context``: the subset of ``grpc.ServicerContext`` we serve."""

    def invocation_metadata(self) -> list[tuple[str, str]]: ...
    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn: ...
    def is_active(self) -> bool: ...


class CallContextImpl:
    """The per-call context handed to handlers (implements :class:`CallContext`)."""

    def __init__(self, stream: CallState) -> None:
        self._stream = stream

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return list(self._stream.metadata)

    def abort(self, code: grpc.StatusCode | int, details: str) -> NoReturn:
        raise RpcAbort(_status_int(code), details)

    def is_active(self) -> bool:
        return not self._stream.cancelled


class CallState:
    """One call (HTTP/2 stream): its path, metadata, inbox of messages and send state."""

    def __init__(self, stream_id: int, path: str, metadata: list[tuple[str, str]]) -> None:
        self.id = stream_id
        self.path = path
        self.metadata = metadata
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.buffer = bytearray()
        self.headers_sent = False
        self.cancelled = False
        self.closed = False
        # Consumed request bytes not yet given back to the peer as window.
        self.unacked = 0
        # Response bytes written but still waiting for the peer's flow-control window.
        self.pending: memoryview | None = None


class RequestStream:
    """The incoming messages of a streaming call: an iterator, plus a non-blocking `poll`.

    `poll` lets a handler that is busy producing (the FileSync sender) pick up requests between
    writes without a reader thread of its own.
    """

    def __init__(
        self,
        stream: CallState,
        deserialize: Callable[[bytes], Any] | None,
        ack: Callable[[int, int], None],
    ) -> None:
        self._stream = stream
        self._deserialize = deserialize
        self._ack = ack
        self.ended = False

    def __iter__(self) -> RequestStream:
        return self

    def _convert(self, item: Any) -> Any:
        if item is END:
            self.ended = True
            raise StopIteration
        # Window for consumed bytes goes back in bulk: at ACK_BATCH bytes, or when the handler
        # has caught up with what arrived (never sitting on it while the handler waits).
        # `_finish` returns what is left.
        stream = self._stream
        stream.unacked += 5 + len(item)
        if stream.unacked >= ACK_BATCH or stream.inbox.empty():
            size, stream.unacked = stream.unacked, 0
            self._ack(stream.id, size)
        return item if self._deserialize is None else self._deserialize(item)

    def __next__(self) -> Any:
        if self.ended:
            raise StopIteration
        return self._convert(self._stream.inbox.get())

    def poll(self, timeout: float = 0.0) -> Any:
        """The next message if one is waiting (or arrives within ``timeout`` seconds), else
        None; raises StopIteration at the end."""
        if self.ended:
            raise StopIteration
        try:
            if timeout > 0:
                item = self._stream.inbox.get(timeout=timeout)
            else:
                item = self._stream.inbox.get_nowait()
        except queue.Empty:
            return None
        return self._convert(item)
