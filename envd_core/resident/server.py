"""The resident server: imports envd once, then forks one child per command.

Started in the background by a client that found no server (:func:`envd_core.resident.client.
spawn`), as ``python -c … DIR KEY SYS.PATH…``. Its life:

1. close every inherited descriptor above 2, take ``sys.path`` from the client, leave the
   client's working directory (``/``);
2. take the lock file next to the socket (``flock``, non-blocking, then a check that the path
   still names the locked file: :mod:`envd_core.resident.lockfile`): a second server started by
   a racing client exits quietly here. The lock rather than ``bind`` alone, because a socket
   file left by a crashed server cannot be told from a live one by ``bind`` (both give
   EADDRINUSE), and unlinking it without holding a lock could unlink a live server's socket;
3. import everything (:mod:`envd_core.resident.preload`), fingerprint the loaded code
   (:mod:`envd_core.resident.fresh`), ``gc.freeze()`` so forked children do not dirty the
   shared pages on their first collection;
4. bind the socket (mode 0600 through the umask), remove the lock files and sockets of other
   keys whose lock nobody holds (dead servers'), then serve: for each connection of *our own
   uid* (``SO_PEERCRED``) read one request; ``run`` forks a child
   (:mod:`envd_core.resident.child`) after checking the code is unchanged, sends its pid, and
   sends its exit status when it is reaped (SIGCHLD through ``signal.set_wakeup_fd``); ``status``
   and ``stop`` are answered here;
5. a client that goes away (end of stream on its connection: killed, or its terminal closed)
   gets its child a SIGINT, the same as Ctrl-C, so a build cancels cleanly; SIGKILL follows if
   the child is still there 10 s later;
6. stop accepting (socket and lock file unlinked, lock released) when the code changed on
   disk, after ``ENVD_RESIDENT_IDLE`` seconds (default 15 min) without a request or a child,
   on ``stop`` or SIGTERM; exit once the running children are reaped and reported.

No grpc channel, thread, docker or kubernetes client is ever created in this process: only
children use them, each its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any

from envd_core.resident import lockfile, wire

#: Seconds between the SIGINT sent to a child whose client went away and its SIGKILL.
KILL_GRACE = 10.0


def log(message: str) -> None:
    """One line in the server's log (its stderr: ``server.log`` in the socket directory)."""
    wire.log_line("envd-resident", message)


class _Child:
    __slots__ = ("conn", "kill_at", "reported")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.kill_at: float | None = None
        #: the child sent its exit status itself and the client said so (child.py)
        self.reported = False


class Server:
    """One resident server on ``directory``/``resident-<key>.sock``."""

    def __init__(self, directory: str, server_key: str) -> None:
        sock = wire.socket_path(directory, server_key)
        if sock is None:
            raise SystemExit(f"socket path under `{directory}` is too long")
        self.directory = directory
        self.key = server_key
        self.sock = sock
        self.idle = wire.idle_seconds(os.environ)
        self.children: dict[int, _Child] = {}
        self.served = 0
        #: CPU seconds (user + system) of the reaped children: what the commands cost
        self.children_cpu = 0.0
        self.started = time.time()
        self.last_activity = time.monotonic()
        self.accepting = False
        self.stop_reason: str | None = None
        self.listener: Any = None
        self.lock_fd = -1
        self.inode = 0
        self.modules = 0
        self.fingerprint: Any = None
        self.selector: Any = None
        self.wakeup: tuple[int, int] = (-1, -1)
        #: ``sys.path`` as the client gave it (an import may extend ours later)
        self.path = list(sys.path)

    # -- start -----------------------------------------------------------------------------
    def start(self) -> bool:
        """Lock, import, bind, sweep dead keys' files; False when another server holds the lock
        or it cannot run."""
        import gc

        problem = wire.check_dir(self.directory, create=True)
        if problem is not None:
            log(f"not starting: {problem}")
            return False
        fd = lockfile.acquire(wire.lock_path(self.sock))
        if fd is None:
            return False  # another server serves (or is starting): nothing to say
        self.lock_fd = fd
        from envd_core.resident.fresh import Fingerprint
        from envd_core.resident.preload import preload

        began = time.perf_counter()
        self.modules, problems = preload()
        for problem in problems:
            log(f"preload: {problem}")
        import threading

        if threading.active_count() > 1:
            log("not serving: importing started threads, forking would be unsafe")
            lockfile.remove(self.lock_fd, wire.lock_path(self.sock), self.sock)
            self.lock_fd = -1
            return False
        self.fingerprint = Fingerprint.take()
        gc.freeze()
        self._bind()
        self.last_activity = time.monotonic()  # idle counts from ready, not from spawn
        log(f"serving {self.sock}: {self.modules} modules, {len(self.fingerprint.files)} files "
            f"watched, ready in {time.perf_counter() - began:.2f} s")
        swept = lockfile.sweep(self.directory, keep=self.key)
        if swept:
            log(f"removed the lock files and sockets of {swept} dead servers")
        return True

    def _bind(self) -> None:
        # a crashed server's socket is replaced: we hold the lock, so it is not live
        listener = wire.bind_private(self.sock)
        listener.setblocking(False)
        self.inode = os.stat(self.sock).st_ino
        self.listener = listener
        self.accepting = True

    # -- loop ------------------------------------------------------------------------------
    def serve(self) -> None:
        """The accept/reap loop, until not accepting and no child is left."""
        import selectors

        self.selector = selectors.DefaultSelector()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wakeup = (r, w)
        signal.set_wakeup_fd(w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self._stop_later("SIGTERM"))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.selector.register(r, selectors.EVENT_READ, "signal")
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        while self.accepting or self.children:
            if self.stop_reason is not None and self.accepting:
                self.stop_accepting(self.stop_reason)
                continue
            for key, _ in self.selector.select(self._timeout()):
                if key.data == "signal":
                    self._drain(r)
                elif key.data == "accept":
                    self._accept()
                else:
                    self._client_readable(key.fileobj, key.data)
            self._reap()
            self._kill_overdue()
            if (self.accepting and not self.children
                    and time.monotonic() - self.last_activity >= self.idle):
                self.stop_accepting(f"idle for {self.idle:.0f} s")
        log(f"exiting after {self.served} commands")

    def _timeout(self) -> float:
        now = time.monotonic()
        waits = [1.0]
        if self.accepting and not self.children:
            waits.append(self.last_activity + self.idle - now)
        waits += [c.kill_at - now for c in self.children.values() if c.kill_at is not None]
        return max(0.0, min(waits))

    def _stop_later(self, reason: str) -> None:
        self.stop_reason = reason  # a signal handler: the loop acts on it

    def stop_accepting(self, reason: str) -> None:
        """Unlink the socket (if still ours) and the lock file, release the lock (in that
        order: :mod:`envd_core.resident.lockfile`); children run on."""
        if not self.accepting:
            return
        self.accepting = False
        log(f"no longer accepting: {reason}")
        self.selector.unregister(self.listener)
        self.listener.close()
        lockfile.remove(self.lock_fd, wire.lock_path(self.sock), self.sock, self.inode)
        self.lock_fd = -1

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    # -- requests --------------------------------------------------------------------------
    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        import socket

        fds: list[int] = []
        try:
            uid = wire.peer_uid(conn)
            if uid != os.geteuid():
                log(f"refused a connection from uid {uid}")
                conn.close()
                return
            conn.settimeout(5.0)
            data, ancdata, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(3 * 4))
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += wire.fds_from(payload)
            request = wire.read_frame(conn.recv, data) if data else None
            if request is None:
                raise ValueError("empty request")
            self.last_activity = time.monotonic()
            self._handle(conn, request, fds)
        except (OSError, ValueError) as exc:
            log(f"bad request: {exc}")
            for fd in fds:
                os.close(fd)
            conn.close()

    def _reply(self, conn: Any, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(wire.encode(message))

    def status(self) -> dict[str, Any]:
        """What ``envd resident status`` shows."""
        return {"pid": os.getpid(), "socket": self.sock, "key": self.key,
                "started": self.started, "uptime": time.time() - self.started,
                "served": self.served, "commands_running": len(self.children),
                "children": sorted(self.children), "children_cpu": self.children_cpu,
                "idle_timeout": self.idle, "modules": self.modules,
                "watched_files": len(self.fingerprint.files), "executable": sys.executable}

    def _handle(self, conn: Any, request: dict[str, Any], fds: list[int]) -> None:
        op = request.get("op")
        if op == "status":
            self._reply(conn, {"status": self.status()})
        elif op == "stop":
            self._reply(conn, {"stopping": os.getpid()})
            self.stop_accepting("stop requested")
        elif op == "run":
            self._run(conn, request, fds)
            return
        else:
            self._reply(conn, {"decline": f"unknown request {op!r}"})
        for fd in fds:
            os.close(fd)
        conn.close()

    def _run(self, conn: Any, request: dict[str, Any], fds: list[int]) -> None:
        why = self._decline_reason(request, fds)
        if why is not None:
            if why == "stale":
                self.stop_accepting("the code changed on disk")  # unlinks before the reply
            self._reply(conn, {"decline": why})
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            self._in_child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        self.served += 1
        self.children[pid] = _Child(conn)
        self._reply(conn, {"pid": pid})
        conn.setblocking(False)
        import selectors

        self.selector.register(conn, selectors.EVENT_READ, pid)

    def _decline_reason(self, request: dict[str, Any], fds: list[int]) -> str | None:
        if request.get("key") != self.key or request.get("path") != self.path:
            return "key"
        if len(fds) != 3:
            return "fds"
        changed = self.fingerprint.changed()
        if changed is not None:
            log(f"changed on disk: {changed}")
            return "stale"
        return None

    def _in_child(self, conn: Any, request: dict[str, Any], fds: list[int]) -> None:
        """In the forked child: drop everything of the server's, then run the command."""
        try:
            signal.set_wakeup_fd(-1)
            self.selector.close()
            for fd in self.wakeup:
                os.close(fd)
            if self.listener is not None and self.accepting:
                self.listener.close()
            if self.lock_fd >= 0:
                os.close(self.lock_fd)  # a copy would keep the lock held after we stop
            for child in self.children.values():
                child.conn.close()
            report_fd = conn.detach()  # the child reports its exit status on it (child.py)
        except BaseException:  # noqa: BLE001 - never return into the server's loop
            os._exit(1)
        from envd_core.resident.child import run

        run(request, fds, report_fd)

    def _client_readable(self, conn: Any, pid: int) -> None:
        try:
            data = conn.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        child = self.children.get(pid)
        if data:
            if data.startswith(b".") and child is not None:  # it has the child's own report
                child.reported = True
                self.selector.unregister(conn)
            return  # nothing else is expected from a client once its command runs
        self.selector.unregister(conn)
        if child is None:
            return
        log(f"client of {pid} went away: SIGINT to the command")
        try:
            os.kill(pid, signal.SIGINT)
        except OSError:
            return
        child.kill_at = time.monotonic() + KILL_GRACE

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for pid, child in self.children.items():
            if child.kill_at is not None and now >= child.kill_at:
                child.kill_at = None
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self.children_cpu += usage.ru_utime + usage.ru_stime
            self.last_activity = time.monotonic()
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(child.conn)
            if not child.reported:
                child.conn.setblocking(True)
                child.conn.settimeout(5.0)
                self._reply(child.conn, {"exit": wire.exit_code(status)})
            child.conn.close()


def main() -> None:
    """The server process' entry point (``sys.argv``: DIR KEY SYS.PATH…, set by the client)."""
    os.closerange(3, 65536)  # whatever the client's parent left inheritable is not ours
    directory, server_key = sys.argv[1], sys.argv[2]
    os.chdir("/")
    server = Server(directory, server_key)
    if server.start():
        server.serve()
