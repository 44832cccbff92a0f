"""A build's connection through the kube-pod keeper: the stream to the pod it is spliced to.

Split from :mod:`envd_kube_pod.keeper` (the process, its requests and spares): this is the part
that decides when a spare that died unseen may be dialled again and what the build sent replayed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Protocol

from envd_core.resident.wire import log_line


class Releases(Protocol):
    """What a build's stream tells when it ends (the keeper refills its pod's spare)."""

    def release(self, name: str | None = None) -> None: ...


def log(message: str) -> None:
    """One line in ``kube-keeper.log`` (the keeper's stderr)."""
    log_line("envd-kube-keeper", message)


def preface_length(data: bytes | bytearray) -> int | None:
    """The length of the HTTP/2 SETTINGS frame (not an ACK) ``data`` starts with: what a gRPC
    server sends first. ``None`` while ``data`` is shorter than a frame header, 0 when it
    starts with another frame."""
    if len(data) < 9:  # length (3 bytes), type, flags, stream id (4)
        return None
    if data[3] != 0x4 or data[4] & 0x1:  # SETTINGS, without the ACK flag
        return 0
    return 9 + int.from_bytes(data[:3], "big")


class Counted:
    """A build's stream: counted while open, so the keeper never idles out under a build.

    When it starts on a **spare** (opened seconds ago), the spare may have died meanwhile
    without a sign: buildkitd restarted, the kubelet's dial to the port failed after the
    upgrade (a pod just ready), a proxy dropped it. Like an HTTP client retrying a request on
    a stale keep-alive connection, the stream then re-dials once, on a fresh WebSocket, and
    replays what the build sent -- only while nothing has come back yet (gRPC's server speaks
    first, so that is the first few milliseconds): after that, an end is the build's to see.
    Without this the build would fall back to the direct path (and its kube import, TLS and
    upgrade) for a reason the keeper can mend itself.

    "Come back" does not count buildkitd's SETTINGS frame: grpc-go sends it the moment it
    accepts, so a spare holds it from when it was opened, alive or not (a spare that passed
    it on and then ended sent the build direct: the likeliest reading of a CI failure). Only
    bytes after it prove the pod answers.
    After a re-dial the new stream's own SETTINGS, when the same bytes, are not passed on
    again: the build has them (and acknowledges them in what is replayed).
    """

    def __init__(self, stream: Any, keeper: Releases, pod: str,
                 redial: Callable[[], Any] | None = None) -> None:
        self._stream, self._keeper, self._pod, self._closed = stream, keeper, pod, False
        self._redial = redial  # set only for a spare, and cleared once it has answered
        self._sent = bytearray()  # what the build sent while ``_redial`` is set
        self._answered = False  # the pod has sent more than its SETTINGS on this connection
        self._preface = bytearray()  # the server's SETTINGS frame as the build got it (so far)
        self._swallow = b""  # after a re-dial: the new stream's SETTINGS not to pass on twice
        self._received = 0
        self._lock = threading.Lock()

    def _replace(self, failed: Any) -> bool:
        """Swap the dead spare ``failed`` for a fresh stream and replay; False if too late."""
        with self._lock:
            if self._stream is not failed:
                return True  # the other direction replaced it already
            if self._redial is None or self._closed:
                return False
            redial, self._redial = self._redial, None
            log(f"spare for {self._pod} was dead; dialled again")
            with contextlib.suppress(Exception):
                failed.close()
            try:
                self._stream = redial()
                self._swallow = bytes(self._preface)
                if self._sent:
                    self._stream.sendall(bytes(self._sent))
            except Exception as exc:  # noqa: BLE001 - the bridge sees the end, as before
                log(f"cannot reach {self._pod}: {exc}")
                return False
            finally:
                self._sent.clear()
            return True

    def recv(self, n: int) -> bytes:
        while True:
            stream = self._stream
            try:
                data: bytes = stream.recv(n)
            except OSError:
                if not self._replace(stream):
                    raise
                continue
            if data and self._swallow:
                data = self._without_repeated_preface(stream, data)
                if not data:
                    continue
            if data or not self._replace(stream):
                self._received += len(data)
                if data and not self._answered and self._is_answer(data):
                    with self._lock:  # the pod answered: this stream is live
                        self._answered, self._redial = True, None
                        self._sent.clear()
                elif not data and not self._closed:
                    # The pod's end closed first (a build closes its own end): say so here,
                    # where the pod's words are; before an answer, the build retries.
                    said = getattr(stream, "stderr", "").strip()
                    log(f"{self._pod} ended a build's connection after {self._received} bytes"
                        + (f": {said[-300:]}" if said else ""))
                return data

    def _is_answer(self, data: bytes) -> bool:
        """Whether ``data`` (just received) holds more than the server's first SETTINGS."""
        self._preface += data
        size = preface_length(self._preface)
        if size is None:
            return False  # not even a frame header yet
        if size == 0:  # no SETTINGS first: whatever came is an answer
            self._preface.clear()
            return True
        if len(self._preface) > size:
            del self._preface[size:]
            return True
        return False

    def _without_repeated_preface(self, stream: Any, data: bytes) -> bytes:
        """``data``, the first bytes of a re-dialled stream, without the SETTINGS frame the
        build already has (read to its end); unchanged when the new server sent other bytes."""
        want, self._swallow = self._swallow, b""
        got = bytes(data)
        while len(got) < len(want) and want.startswith(got):
            more = stream.recv(len(want) - len(got))
            if not more:
                return b""  # ended inside it: the next recv sees the end
            got += more
        return got.removeprefix(want)

    def sendall(self, data: bytes) -> None:
        # Not under the lock: a send stalled on a dead pod must not keep the bridge's close
        # (from the other direction) from unblocking it.
        with self._lock:
            stream = self._stream
            replayable = self._redial is not None
            if replayable:
                self._sent += data  # replayed by whichever direction replaces the stream
        try:
            stream.sendall(data)
        except OSError:
            if not replayable or not self._replace(stream):
                raise

    def shutdown_write(self) -> None:
        # The build closed its gRPC connection: nothing it waits for can come any more, so the
        # pod's side is closed now (a half-closed port-forward stays open until buildkitd's
        # idle timeout, and the bridge would wait 5 s for it).
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            stream = self._stream
        stream.close()
        self._keeper.release(self._pod)
