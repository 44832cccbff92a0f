"""A byte stream to buildkitd through the API server: exec'd ``buildctl dial-stdio``, or a
port-forward to buildkitd's TCP listener in the pod.

The ``kubernetes`` client opens the WebSocket (``kubernetes.stream.ws_client.create_websocket``:
URL, credentials, TLS, proxies, the ``v5.channel.k8s.io``/``v4`` subprotocol offer) and
``websocket-client`` frames it. Both endpoints speak the same channel protocol: each binary
message is one channel byte and a payload.

- exec: channel 0 stdin, 1 stdout, 2 stderr, 3 the exit ``Status``; v5 adds channel 255 to
  close a channel (the client's stdin, when gRPC is done);
- port-forward: channel 0 data and 1 errors of the first (only) port; the first message on
  each channel from the server is the port number (2 bytes, little-endian), not data.

What the client lacks is a byte-stream face: its ``WSClient`` buffers whole channels for
line-oriented readers (a dict of concatenated strings, polled), and its ``PortForward`` runs a
thread and a socket pair per port. :class:`ChannelStream` reads the WebSocket's messages itself
and hands stdout/data payloads to the core's bridge as they arrive (the :class:`ByteStream`
contract ``envd-docker-container``'s exec stream meets too): one frame in, one ``recv`` out, no
poll and no buffer on the common path.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from typing import Any

from envd_core.errors import BuilderError
from envd_kube_pod.cluster import PODS, REQUEST_TIMEOUT, Cluster
from envd_kube_pod.errors import exec_refused, status_message

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
_STDERR_KEEP = 4096
_V5 = "v5.channel.k8s.io"
_V4 = "v4.channel.k8s.io"
#: What dial-stdio runs; the BuildKit images put buildctl on PATH.
DIAL_ARGV = ("buildctl", "dial-stdio")


class ChannelStream:
    """One data channel of a channel-protocol WebSocket, as one byte stream.

    ``recv`` returns the payloads of ``data_in`` as they arrive; ``sendall`` sends on
    ``data_out``; what arrives on ``errors`` is kept to explain a failure, and (exec) channel 3
    is the process's exit status.
    """

    def __init__(self, ws: Any, *, data_out: int, data_in: int, errors: int,
                 port_prefix: bool = False) -> None:
        self._ws = ws
        self._out, self._in, self._err = data_out, data_in, errors
        # port-forward: the first message on each channel is the port number, not data
        self._prefix_due = {data_in, errors} if port_prefix else set()
        self._pending = b""
        self._stderr = bytearray()
        self._status = bytearray()  # exec channel 3: the exit Status, as JSON
        self._send_lock = threading.Lock()
        self._closed = False
        self.subprotocol = _subprotocol(ws)
        #: Messages and bytes received, for the benchmark's per-frame figures.
        self.frames_in = self.bytes_in = 0

    @property
    def stderr(self) -> str:
        """The last few KiB of the error channel, and the exit status if the process ended."""
        text = self._stderr.decode("utf-8", "replace")
        message = status_message(bytes(self._status)) if self._status else ""
        if message and message not in text:
            text = (text.rstrip("\n") + "\n" if text.strip() else "") + message
        return text

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` once the process, the port or the WebSocket ended."""
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        from websocket import ABNF

        while not self._closed:
            try:
                opcode, frame = self._ws.recv_data_frame(False)
            except Exception:  # noqa: BLE001 - a dropped WebSocket is the end of the stream
                return b""
            if opcode == ABNF.OPCODE_CLOSE:
                return b""
            data = frame.data
            if not data:
                continue
            self.frames_in += 1
            self.bytes_in += len(data)
            channel, start = data[0], 1
            if channel in self._prefix_due:  # port-forward: bytes 1-2 are the port number
                self._prefix_due.discard(channel)
                start = 3
            if channel == self._in:
                payload = data[start:]
                if not payload:
                    continue
                if len(payload) > n:
                    payload, self._pending = payload[:n], payload[n:]
                return bytes(payload)
            if channel == self._err:
                self._stderr += data[start:]
                del self._stderr[:-_STDERR_KEEP]
            elif channel == ERROR and self._err == STDERR:
                self._status += data[start:]
        return b""

    def sendall(self, data: bytes) -> None:
        from websocket import ABNF

        with self._send_lock:
            try:
                self._ws.send(bytes([self._out]) + bytes(data), ABNF.OPCODE_BINARY)
            except Exception as exc:  # noqa: BLE001 - surfaced as the socket error it is
                raise OSError(f"stream to the pod closed: {exc}") from None

    def shutdown_write(self) -> None:
        """EOF on our side (v5 only: v4 cannot half-close a channel)."""
        if self.subprotocol != _V5:
            return
        from websocket import ABNF

        with self._send_lock, contextlib.suppress(Exception):
            self._ws.send(bytes([CLOSE, self._out]), ABNF.OPCODE_BINARY)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._ws.close(timeout=0.5)


def _subprotocol(ws: Any) -> str:
    """The channel protocol the API server chose: the handshake's Sec-WebSocket-Protocol
    (websocket-client records it only for protocols offered through its own argument)."""
    chosen = getattr(ws, "subprotocol", None)
    if not chosen:
        headers = ws.getheaders() or {}
        chosen = next((v for k, v in headers.items()
                       if k.lower() == "sec-websocket-protocol"), "")
    return str(chosen or "")


_HANDSHAKE_RE = re.compile(r"Handshake status (\d+)")
_DENIED_RE = re.compile(r'cannot (\w+) resource "([^"]+)"')


def _status_detail(reason: str) -> str:
    """The ``message`` of the Status body websocket-client appends to a refused handshake
    (``Handshake status 403 Forbidden -+-+- {headers} -+-+- body``), else ``reason``."""
    parts = reason.split("-+-+-")
    if len(parts) < 2:
        return reason
    raw = parts[-1].strip()
    for text in (raw, raw.encode().decode("unicode_escape", "replace")):
        start, end = text.find("{"), text.rfind("}") + 1
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            message = json.loads(text[start:end]).get("message")
            if message:
                return str(message)
    return reason


def handshake_failure(reason: str, pod: str, namespace: str,
                      resource: str = "pods/exec") -> BuilderError:
    """The API server refused the upgrade: name the HTTP status and its Status message.

    On a 403 the verb and resource are the ones the API server names: a WebSocket upgrade is
    a GET, which clusters before v1.35 authorise as ``get`` (kubectl's SPDY POST as
    ``create``).
    """
    code = _HANDSHAKE_RE.search(reason)
    detail = _status_detail(reason)
    if code and code.group(1) == "403":
        denied = _DENIED_RE.search(detail)
        verb, what = (denied.group(1), denied.group(2)) if denied else ("create", resource)
        return BuilderError(
            f"RBAC forbids `{verb} {what}` on pod `{pod}` in namespace `{namespace}`: "
            f"{detail}", hint=f"kube-pod needs `get` and `create` on `{resource}` "
                              "(docs/kube-pod.md)")
    if code:
        detail = f"HTTP {code.group(1)}: {detail}"
    return exec_refused(pod, namespace, detail[:300])


def _websocket(cluster: Cluster, pod: str, path: str, query: list[tuple[str, Any]],
               resource: str) -> Any:
    from kubernetes.stream import ws_client as typed_ws_client

    ws_client: Any = typed_ws_client  # untyped
    _, url, headers, _ = cluster.prepare("GET", f"{PODS}/{pod}/{path}", query=query)
    url = ws_client.get_websocket_url(url)
    sock = cluster.take_socket()
    if sock is not None:
        ws = _upgrade_on(sock, url, headers, pod, cluster.namespace, resource)
        if ws is not None:
            return ws
    try:
        return ws_client.create_websocket(cluster.api.configuration, url, headers)
    except Exception as exc:  # noqa: BLE001 - handshake status, socket and TLS errors
        raise handshake_failure(str(exc), pod, cluster.namespace, resource) from None


def _upgrade_on(sock: Any, url: str, headers: dict[str, str], pod: str, namespace: str,
                resource: str) -> Any:
    """The WebSocket upgraded on ``sock``, the build's pod-listing connection (already
    connected, TLS-verified and authenticated by the same configuration: see
    ``Cluster._keep``), or None when that connection is no longer usable (the server closed
    it): the caller then opens a new one. A refusal (403, 404…) is raised as for a new one.

    The request is the one the client's ``create_websocket`` sends: the credentials and the
    channel protocols offered; websocket-client takes an open socket as is.
    """
    from websocket import WebSocket, WebSocketBadStatusException

    header = [f"{k}: {v}" for k, v in headers.items() if k.lower() == "authorization"]
    header.append(f"sec-websocket-protocol: {_V5},{_V4}")
    ws: Any = WebSocket(skip_utf8_validation=False)  # connect() is unannotated
    try:
        # A bounded handshake: no answer in time is treated as a dead connection.
        sock.settimeout(REQUEST_TIMEOUT)
        ws.connect(url, header=header, socket=sock)
        sock.settimeout(None)  # then blocking reads, as on a connection websocket-client opens
    except WebSocketBadStatusException as exc:
        with contextlib.suppress(Exception):
            sock.close()
        raise handshake_failure(str(exc), pod, namespace, resource) from None
    except Exception:  # noqa: BLE001 - a closed or reset connection: open a new one
        with contextlib.suppress(Exception):
            sock.close()
        return None
    return ws


def open_exec(cluster: Cluster, pod: str, container: str | None,
              argv: tuple[str, ...] = DIAL_ARGV) -> ChannelStream:
    """Start ``argv`` in ``pod`` with stdin/stdout/stderr attached; raise one line on refusal."""
    query: list[tuple[str, Any]] = [("command", list(argv)), ("stdin", "true"),
                                    ("stdout", "true"), ("stderr", "true"), ("tty", "false")]
    if container:
        query.append(("container", container))
    ws = _websocket(cluster, pod, "exec", query, "pods/exec")
    return ChannelStream(ws, data_out=STDIN, data_in=STDOUT, errors=STDERR)


def open_port_forward(cluster: Cluster, pod: str, port: int) -> ChannelStream:
    """A connection to ``port`` on the pod's loopback, through the API server's port-forward."""
    ws = _websocket(cluster, pod, "portforward", [("ports", str(port))], "pods/portforward")
    return ChannelStream(ws, data_out=0, data_in=0, errors=1, port_prefix=True)
