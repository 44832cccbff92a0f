"""Running commands with their output in a log, and cheap probes (HTTP, the docker socket)."""

from __future__ import annotations

import os
import shlex
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .config import DOCKER_SOCK, PATH_ENV


class InfraError(Exception):
    """A provisioning step failed; ``log`` names the file whose tail explains why."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def say(msg: str) -> None:
    """Print a progress line at once (``up`` is often watched through a pipe)."""
    print(msg, flush=True)


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log, or "(no log)"."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run(argv: list[str], log: Path, *, env: dict[str, str] | None = None,
        timeout: float | None = None, cwd: Path | None = None) -> None:
    """Run a command appending its output to ``log``; raise InfraError naming it on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PATH": PATH_ENV, **(env or {})}
    with log.open("ab") as out:
        out.write(f"\n$ {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                  stdin=subprocess.DEVNULL, timeout=timeout, cwd=cwd, check=False)
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"`{shlex.join(argv)}` timed out after {timeout:.0f} s", log) from exc
        except FileNotFoundError as exc:
            raise InfraError(f"`{argv[0]}` is not installed", log) from exc
    if proc.returncode != 0:
        raise InfraError(f"`{shlex.join(argv)}` exited with {proc.returncode}", log)


def quiet(argv: list[str], timeout: float = 20) -> bool:
    """True when a command succeeds; used for cheap probes."""
    try:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, timeout=timeout,
                              env={**os.environ, "PATH": PATH_ENV}, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def output(argv: list[str], timeout: float = 20) -> str | None:
    """A command's stdout when it succeeds, else None (missing binary, failure, timeout)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=timeout, env={**os.environ, "PATH": PATH_ENV},
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def docker_answers() -> bool:
    """A dockerd answers ``GET /_ping`` on the default socket."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(DOCKER_SOCK))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in s.recv(256)
    except OSError:
        return False


def http_status(url: str, ca: Path | None = None, method: str = "GET",
                headers: dict[str, str] | None = None) -> int:
    """HTTP status of ``url`` (0 when unreachable); a CA path switches on TLS verification."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        # Inside the try: a CA file not made yet (a fresh state dir) means "not reachable".
        ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
        with urllib.request.urlopen(req, timeout=3, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ssl.SSLError):
        return 0
