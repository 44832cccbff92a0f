"""``buildctl dial-stdio`` in a pod, through the API server's exec, as one byte stream.

The ``kubernetes`` client opens the exec WebSocket (URL, credentials, TLS, proxies, the
``v5.channel.k8s.io``/``v4`` subprotocol negotiation) and frames channels: each binary message
is one channel byte (0 stdin, 1 stdout, 2 stderr, 3 the exit ``Status``, 255 a v5 close) and
the payload. What it lacks is a byte-stream face: its ``WSClient`` buffers whole channels for
line-oriented readers. :class:`ExecStream` adapts it to the :class:`ByteStream` the core's
bridge splices to gRPC (the same contract ``envd-docker-container``'s exec stream meets):
``recv`` returns stdout bytes as they arrive, stderr is kept to explain a failure, and
``shutdown_write`` closes stdin (a v5 close frame; v4 has none, so there the stream ends with
the WebSocket).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from typing import Any

from envd_core.errors import BuilderError
from envd_kube_pod.errors import exec_refused, status_message

STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3
_STDERR_KEEP = 4096
#: What dial-stdio runs; the BuildKit images put buildctl on PATH.
DIAL_ARGV = ("buildctl", "dial-stdio")


class ExecStream:
    """stdin (``sendall``) and stdout (``recv``) of an exec'd process, as one byte stream."""

    def __init__(self, ws: Any, pod: str, namespace: str) -> None:
        self._ws = ws
        self._pod, self._namespace = pod, namespace
        self._buf = bytearray()
        self._stderr = bytearray()
        self._status = bytearray()  # channel 3: the process's exit Status, as JSON
        self._send_lock = threading.Lock()
        self._closed = False

    @property
    def subprotocol(self) -> str:
        """The channel protocol the API server chose (``v5.channel.k8s.io`` or ``v4``)."""
        return str(self._ws.subprotocol or "")

    @property
    def stderr(self) -> str:
        """The last few KiB the process wrote to stderr, and its exit status if it ended."""
        text = self._stderr.decode("utf-8", "replace")
        message = status_message(bytes(self._status)) if self._status else ""
        if message and message not in text:
            text += ("\n" if text else "") + message
        return text

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes of stdout; ``b""`` once the process or the WebSocket ended."""
        while not self._buf:
            if self._closed or not self._ws.is_open():
                return b""
            try:
                self._ws.update(timeout=None)
            except Exception:  # noqa: BLE001 - a dropped WebSocket is the end of the stream
                return b""
            err = self._ws.read_channel(STDERR)
            if err:
                self._stderr += err
                del self._stderr[:-_STDERR_KEEP]
            status = self._ws.read_channel(ERROR)
            if status:
                self._status += status
            out = self._ws.read_channel(STDOUT)
            if out:
                self._buf += out
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def sendall(self, data: bytes) -> None:
        with self._send_lock:
            try:
                self._ws.write_stdin(bytes(data))
            except Exception as exc:  # noqa: BLE001 - surfaced as the socket error it is
                raise OSError(f"exec stream closed: {exc}") from None

    def shutdown_write(self) -> None:
        """EOF on the process's stdin (v5 only: v4 cannot half-close)."""
        with self._send_lock, contextlib.suppress(Exception):
            self._ws.close_channel(STDIN)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._ws.close()


_HANDSHAKE_RE = re.compile(r"Handshake status (\d+)")


def handshake_failure(reason: str, pod: str, namespace: str) -> BuilderError:
    """The API server refused the exec upgrade: name the HTTP status and its Status message."""
    code = _HANDSHAKE_RE.search(reason)
    detail = reason
    body = reason.rfind("{")
    if body != -1:
        with contextlib.suppress(ValueError):
            end = reason.rfind("}") + 1
            detail = str(json.loads(reason[body:end].encode().decode("unicode_escape"))
                         .get("message", detail))
    if code and code.group(1) == "403":
        return BuilderError(
            f"RBAC forbids `create pods/exec` on pod `{pod}` in namespace `{namespace}`: "
            f"{detail}", hint="kube-pod needs `create` on `pods/exec` (docs/builders.md)")
    if code:
        detail = f"HTTP {code.group(1)}: {detail}"
    return exec_refused(pod, namespace, detail[:300])


def open_exec(api: Any, pod: str, namespace: str, container: str | None,
              argv: tuple[str, ...] = DIAL_ARGV) -> ExecStream:
    """Start ``argv`` in ``pod`` with stdin/stdout/stderr attached; raise one line on refusal.

    ``api`` is a ``kubernetes.client.CoreV1Api``.
    """
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream

    kwargs: dict[str, Any] = {"command": list(argv), "stdin": True, "stdout": True,
                              "stderr": True, "tty": False, "_preload_content": False,
                              "binary": True}
    if container:
        kwargs["container"] = container
    try:
        ws = stream(api.connect_get_namespaced_pod_exec, pod, namespace, **kwargs)
    except ApiException as exc:
        raise handshake_failure(str(exc.reason or exc), pod, namespace) from None
    return ExecStream(ws, pod, namespace)
