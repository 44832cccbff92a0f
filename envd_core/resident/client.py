"""The resident client: hand an invocation to the resident server, or say it cannot.

:func:`run_resident` is called by ``envd``'s entry point after the stdlib fast path declined.
It returns the command's exit code when a server ran it, or ``None`` when the caller must run it
itself: the command is not on the allowlist (:func:`eligible`), ``ENVD_RESIDENT=0``, no safe
socket directory, no server (one is then started in the background for the next invocation,
with no wait added to this one), or the server declined (its code changed on disk).

Only built-in modules are imported (``_socket``, ``_signal``, ``marshal``, ``os``, ``time``:
``socket`` and ``signal`` import ``enum``, 6-10 ms), besides the plain-data alias table
:mod:`envd_core.cli.aliases`; this whole module costs under a millisecond to import, measured
with ``python -X importtime``.
"""

from __future__ import annotations

import os
import sys
import time

from envd_core.cli.aliases import canonical
from envd_core.resident import wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

#: Commands that never read a terminal: always served when a server answers.
_ALWAYS = frozenset({
    "build", "down", "images", "envs", "pause", "resume", "prune", "disk-usage",
    "context", "plugins", "version", "builder", "bootstrap",
})
#: Commands served only with one of these flags (without, they attach a terminal).
_DETACHED = {"up": ("--detach",), "run": ("--detach",)}
#: Signals the client passes on to the child running its command.
_FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
#: Seconds the client waits for the server to start its command before running it itself.
_HANDOFF_TIMEOUT = 10.0


def command_of(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The top-level command word of ``argv`` and the arguments after it, skipping the global
    options (``--context NAME``, ``--debug``); ``(None, [])`` when there is none or an option
    this parser does not know comes first (click decides then, directly)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--context" and i + 1 < len(argv):
            i += 2
        elif arg.startswith("--context=") or arg == "--debug":
            i += 1
        elif arg.startswith("-"):
            return None, []
        else:
            return arg, list(argv[i + 1:])
    return None, []


def eligible(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    """Whether the invocation may run in the resident server: non-interactive commands only.

    ``up``/``run`` only with ``--detach``; never ``exec``, ``login``, ``completion``,
    ``init``/``new`` (they may prompt), shell completion requests, or anything after ``--``
    that could be mistaken for a flag; never with ``--debug``/``ENVD_DEBUG`` or grpc logging
    asked for (:func:`_wants_grpc_logs`).
    """
    if wire.disabled(env) or env.get("_ENVD_COMPLETE") or _wants_grpc_logs(argv, env):
        return False
    command, rest = command_of(argv)
    if command is None:
        return False
    command = canonical([command])[0]  # upstream's aliases: `b`, `env`, `d` ...
    if command in _ALWAYS:
        return True
    flags = _DETACHED.get(command)
    if flags is None:
        return False
    args = rest[: rest.index("--")] if "--" in rest else rest
    return any(arg in flags for arg in args)


def _wants_grpc_logs(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    """``--debug``, ``GRPC_TRACE`` or a ``GRPC_VERBOSITY`` other than NONE: grpc's C core reads
    these once, when grpc is imported, so only a process of its own can honour them."""
    verbosity = env.get("GRPC_VERBOSITY", "NONE").upper()
    return ("--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv) or \
        bool(env.get("ENVD_DEBUG")) or bool(env.get("GRPC_TRACE")) or verbosity != "NONE"


def endpoint(env: Mapping[str, str]) -> tuple[str, str, str] | None:
    """``(socket dir, socket path, key)`` for this interpreter, or ``None`` when this
    interpreter cannot use a resident (relative ``sys.path``, socket name too long)."""
    path = list(sys.path)
    if not wire.usable_path(path):
        return None
    directory = wire.socket_dir(env)
    server_key = wire.key(sys.executable, path)
    sock = wire.socket_path(directory, server_key)
    if sock is None:
        return None
    return directory, sock, server_key


def connect(sock: str, timeout: float = _HANDOFF_TIMEOUT) -> Any:
    """A connected ``_socket.socket`` to ``sock``, or ``None`` when nobody listens there."""
    import _socket

    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(sock)
    except OSError:
        conn.close()
        return None
    return conn


def request(conn: Any, message: Mapping[str, Any], fds: list[int] | None = None) -> None:
    """Send one frame on ``conn``, with ``fds`` attached (SCM_RIGHTS) when given."""
    import _socket

    data = wire.encode(message)
    if fds:
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, wire.fds_payload(fds))]
        sent = conn.sendmsg([data], ancillary)
        data = data[sent:]
    if data:
        conn.sendall(data)


def run_resident(argv: Sequence[str]) -> int | None:
    """Run ``envd argv`` in the resident server; the exit code, or ``None`` to run it here."""
    env = os.environ
    if not eligible(argv, env):
        return None
    t0, e0 = time.perf_counter(), time.time()
    try:
        where = endpoint(env)
    except Exception:  # noqa: BLE001 - never fail a command over an optimisation
        return None
    if where is None:
        return None
    directory, sock, server_key = where
    conn = connect(sock)
    if conn is None:
        spawn(directory, server_key)
        return None
    try:
        return _handoff(conn, argv, server_key, t0, e0, directory)
    finally:
        conn.close()


def _handoff(conn: Any, argv: Sequence[str], server_key: str, t0: float, e0: float,
             directory: str) -> int | None:
    try:
        cwd = os.getcwd()
        mask = os.umask(0o022)
        os.umask(mask)
        request(conn, {
            "op": "run", "key": server_key, "argv": [sys.argv[0], *argv],
            "env": dict(os.environ), "cwd": cwd, "umask": mask, "path": list(sys.path),
            "t0": t0, "e0": e0,
        }, [0, 1, 2])
        reply = wire.read_frame(conn.recv)
    except (OSError, ValueError):  # no cwd, a closed stdio fd, a server gone mid-way
        return None
    if reply is None or "pid" not in reply:
        if reply is not None and reply.get("decline") == "stale":
            spawn(directory, server_key)  # the stale server has stepped aside already
        return None
    pid = int(reply["pid"])
    _forward_signals(pid)
    conn.settimeout(None)
    try:
        reply = wire.read_frame(conn.recv)
    except (OSError, ValueError):
        reply = None
    if reply is None or "exit" not in reply:
        sys.stderr.write(f"envd: the resident process ended while it ran this command (pid "
                         f"{pid}); its outcome is unknown\nhint: run `envd resident status`; "
                         "set ENVD_RESIDENT=0 to run commands without it\n")
        return 1
    if reply.get("early"):  # from the child itself: tell the server it need not report
        try:  # noqa: SIM105 - contextlib is not imported on this path
            conn.send(b".")
        except OSError:
            pass
    return int(reply["exit"])


def _forward_signals(pid: int) -> None:
    """Pass Ctrl-C and friends on to the child: it runs in a session of its own, so the
    terminal's signals reach only this process."""
    import _signal  # type: ignore[import-not-found]  # signal without enum (6 ms)

    def forward(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 - contextlib is not imported on this path
            os.kill(pid, signum)
        except OSError:  # already gone: its status is on its way
            pass

    for name in _FORWARDED:
        _signal.signal(getattr(_signal, name), forward)


def spawn(directory: str, server_key: str) -> None:
    """Start a server in the background for the next invocation; never waits, never fails.

    A new session, stdin from ``/dev/null``, stdout and stderr appended to ``server.log`` in the
    socket directory (made safe first); the server closes every other descriptor it inherits.
    Two clients racing here start two processes: the one that takes the lock serves, the other
    exits quietly.
    """
    try:
        if wire.check_dir(directory, create=True) is not None:
            return
        code = ("import sys; sys.path[:] = sys.argv[3:]; "
                "from envd_core.resident.server import main; main()")
        args = [sys.executable, "-c", code, directory, server_key, *sys.path]
        env = {k: v for k, v in os.environ.items() if k != "GRPC_TRACE"}
        env["GRPC_VERBOSITY"] = "NONE"  # read once at import: envd reports grpc errors itself
        wire.spawn_detached(args, os.path.join(directory, "server.log"), env)
    except Exception:  # noqa: BLE001 - the command runs directly anyway
        return


def ask(sock: str, op: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """Send ``{"op": op}`` to the server on ``sock``; its reply, or ``None`` when none answers."""
    conn = connect(sock, timeout)
    if conn is None:
        return None
    try:
        request(conn, {"op": op})
        return wire.read_frame(conn.recv)
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def servers(directory: str) -> list[str]:
    """The sockets of the resident servers in ``directory`` (any key), sorted."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names
                  if n.startswith("resident-") and n.endswith(".sock"))


def stop(sock: str, wait: float = 30.0) -> int | None:
    """Ask the server on ``sock`` to stop and wait up to ``wait`` s for it to exit (it first
    lets its running commands finish); its pid, or ``None`` when none answered."""
    reply = ask(sock, "stop")
    if reply is None or "stopping" not in reply:
        return None
    pid = int(reply["stopping"])
    deadline = time.monotonic() + wait
    while not wire.exited(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid
