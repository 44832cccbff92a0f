"""Plugins' helper processes in the resident's socket directory: registered, listed, stopped.

A plugin may keep a long-lived helper of its own next to the resident servers (envd-kube-pod's
forwarding keeper). The core knows nothing of what it does; it only lets users see and stop it
(``envd resident status``, ``envd resident stop --all``). The contract:

* the helper writes ``<name>.helper.json`` in the socket directory: a JSON object with at least
  ``kind`` (what it is, for people), ``pid``, ``socket`` (its unix socket) and ``started``
  (``time.time()``); ``address`` and other keys are shown as given. It removes the file when it
  exits;
* it answers one JSON line on its socket with one JSON line: ``{"op": "stop"}`` with
  ``{"stopping": <pid>}`` (it exits once its work is done), ``{"op": "status"}`` with an object.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from envd_core.resident.wire import exited

#: The suffix of a helper's registration file.
SUFFIX = ".helper.json"
#: The largest answer read from a helper.
_MAX_REPLY = 4 * 1024 * 1024


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):  # ours (a test's child): reap it
        os.waitpid(pid, os.WNOHANG)
    return not exited(pid)


def registered(directory: str) -> list[dict[str, Any]]:
    """The registrations in ``directory`` whose process still runs, sorted by file name."""
    out: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(directory)):
            if not name.endswith(SUFFIX):
                continue
            try:
                with open(os.path.join(directory, name), "rb") as fh:
                    info = json.loads(fh.read())
                if not _alive(int(info["pid"])):
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue
            out.append(info)
    return out


def exchange(sock: str, request: Mapping[str, Any], timeout: float) -> bytes | None:
    """Send one JSON line to the helper on ``sock``; the line it answers (maybe not JSON), or
    ``None`` when nobody listens there or the exchange broke off (no line came back)."""
    import socket

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(sock)
        conn.sendall(json.dumps(dict(request)).encode() + b"\n")
        data = bytearray()
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk or len(data) > _MAX_REPLY:
                return None
            data += chunk
    except OSError:
        return None
    finally:
        conn.close()
    return bytes(data)


def parse(line: bytes | None) -> dict[str, Any] | None:
    """The JSON object of an answer line; ``None`` when there is none or it is not one."""
    try:
        reply = json.loads(line) if line is not None else None
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def ask(sock: str, request: Mapping[str, Any], timeout: float) -> dict[str, Any] | None:
    """Send one JSON line to the helper on ``sock``; its one-line JSON answer, or ``None`` when
    nobody answers there or the answer is not a JSON object."""
    return parse(exchange(sock, request, timeout))


def stop_all(directory: str, wait: float = 10.0, started_after: float = 0.0,
             kind: str | None = None) -> list[int]:
    """Ask every helper in ``directory`` (of ``kind``, started after ``started_after``) to
    stop, and wait up to ``wait`` s for them to exit; the pids that agreed."""
    pids: list[int] = []
    for info in registered(directory):
        if float(info.get("started") or 0) < started_after or \
                (kind is not None and info.get("kind") != kind):
            continue
        reply = ask(str(info.get("socket", "")), {"op": "stop"}, timeout=5.0)
        if reply is not None and reply.get("stopping"):
            pids.append(int(info["pid"]))
    deadline = time.monotonic() + wait
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return pids
