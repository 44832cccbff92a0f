"""The kube-pod forwarding keeper: a background process per user and context key.

Started by the first build of a kube-pod context that finds none (:func:`envd_kube_pod.
keeper_client.spawn`), as ``python -c … DIR KEY SPEC SYS.PATH…``. Its life:

1. take ``kube-keeper-<key>.lock`` in the resident's socket directory (``flock``, non-blocking:
   a second keeper started by a racing build exits here), load the context's cluster
   configuration once (the ``kubernetes`` client, kubeconfig or in-cluster);
2. bind ``kube-keeper-<key>.sock`` (mode 0600, in the 0700 directory the resident checks with
   :func:`envd_core.resident.wire.check_dir`), register in ``kube-keeper-<key>.helper.json``
   (pid, address, socket: what ``envd resident status`` shows, :mod:`envd_core.resident.helpers`);
3. answer each connection of our own uid (``SO_PEERCRED``) with one JSON line:

   - ``route``: the context's pods, listed now on the client's pooled API connection (so
     routing sees every pod change as a direct build would), with, for each ready pod, the
     path of a unix socket bridged to it; or the one-line error listing gave (RBAC, no
     cluster…), or ``direct`` when this context's credentials expire (see below);
   - ``status``: pid, served connections, spares; ``stop``: exit once builds are done;

4. every connection a build opens on a pod's socket is spliced (the core's byte bridge) to a
   **spare**: a port-forward (or exec) WebSocket to that pod opened beforehand, replaced in the
   background once taken, and re-opened when older than :data:`SPARE_MAX_AGE` (buildkitd's gRPC
   server, grpc-go, drops a connection whose HTTP/2 preface has not come within 120 s);
5. exit after ``ENVD_KUBE_KEEPER_IDLE`` seconds (default 600) with no request and no open build
   connection, on ``stop`` or SIGTERM.

Contexts whose kubeconfig user has an ``exec`` credential plugin or an ``auth-provider`` are
answered ``direct``: their tokens expire and refreshing them (and writing them back) stays with
the build process, as without a keeper. In-cluster tokens are re-read by the client itself, and a
rotated token file changes the key anyway.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from envd_core.resident import lockfile
from envd_core.resident.wire import bind_private, check_dir, peer_uid
from envd_kube_pod import keeper_client
from envd_kube_pod.keeper_stream import Counted, log

if TYPE_CHECKING:
    from envd_core.buildkit.bridge import ByteStream
    from envd_kube_pod import KubePodBuilder
    from envd_kube_pod.cluster import Cluster, PodInfo

#: Seconds a spare WebSocket may wait before it is replaced: buildkitd (grpc-go) closes a
#: connection that sent no HTTP/2 preface after 120 s (measured: bench/README.md).
SPARE_MAX_AGE = 48.0
#: Seconds after a build's connection ends before its pod's spare is re-opened.
REFILL_DELAY = 0.3
#: Ready pods a keeper bridges and keeps spares for (routing spreads over more, but each build
#: lands on one: more than this is served by the direct path's behaviour of dialling on demand).
MAX_PODS = 8


def expiring_credentials(builder: KubePodBuilder) -> str | None:
    """Why this context's kubeconfig user has credentials that expire (an ``exec`` plugin or
    an ``auth-provider``), or None (a static token or certificate, or in-cluster)."""
    from envd_kube_pod.kubeconfig import parse

    docs: list[Any] = []
    for path in keeper_client.kubeconfig_files(builder.option_values, os.environ):
        if os.path.isfile(path):
            with contextlib.suppress(Exception):  # unusable: the Cluster says why
                docs.append(parse(path))
    docs = [d for d in docs if isinstance(d, dict)]
    if not docs:
        return None
    wanted = builder.parsed.context or builder.option("kube-context") or next(
        (d.get("current-context") for d in docs if d.get("current-context")), None)
    entries = [e for d in docs for e in d.get("contexts") or [] if isinstance(e, dict)]
    context = next((e.get("context") or {} for e in entries if e.get("name") == wanted), {})
    users = [e for d in docs for e in d.get("users") or [] if isinstance(e, dict)]
    user = next((e.get("user") or {} for e in users if e.get("name") == context.get("user")),
                {})
    for field in ("exec", "auth-provider"):
        if isinstance(user, dict) and user.get(field):
            return f"the kubeconfig user `{context.get('user')}` uses `{field}` credentials"
    return None


class Keeper:
    """One keeper on ``directory``/``kube-keeper-<key>.sock`` for one context."""

    def __init__(self, directory: str, keeper_key: str, spec: dict[str, Any]) -> None:
        from envd_kube_pod import KubePodBuilder

        self.directory, self.key = directory, keeper_key
        self.builder = KubePodBuilder(str(spec["address"]), dict(spec.get("options") or {}))
        self.sock, self.lock_file, self.info_file = keeper_client.paths(directory, keeper_key)
        self.idle = keeper_client.idle_seconds(os.environ)
        self.cluster: Cluster | None = None
        self.cluster_error: BaseException | None = None
        self.direct: str | None = None
        self._lock = threading.Lock()
        self._bridges: dict[str, Any] = {}
        self._pods: dict[str, PodInfo] = {}
        self._spares: dict[str, tuple[Any, float]] = {}
        self._filling: set[str] = set()
        self.active = 0
        self.served = 0
        self.routes = 0
        self.last_activity = time.monotonic()
        self.stopping = False
        self.listener: socket.socket | None = None
        self.lock_fd = -1

    # -- start and stop --------------------------------------------------------------------
    def start(self) -> bool:
        """Lock, load the configuration, bind; False when another keeper holds the lock."""
        problem = check_dir(self.directory, create=True)
        if problem is not None:
            log(f"not starting: {problem}")
            return False
        fd = lockfile.acquire(self.lock_file)  # the resident's protocol (lockfile.py)
        if fd is None:
            return False
        self.lock_fd = fd
        # Keepers killed without their cleanup (SIGKILL, a reboot of the machine's /tmp
        # aside) leave a lock file, a socket and a registration: remove those of other keys.
        from envd_core.resident.helpers import SUFFIX

        swept = lockfile.sweep(self.directory, keep=self.key,
                               prefix=keeper_client.KEY_PREFIX, also=(SUFFIX,))
        if swept:
            log(f"removed the files of {swept} keeper{'s' if swept > 1 else ''} "
                "that had not stopped cleanly")
        try:
            self.direct = expiring_credentials(self.builder)
            self.cluster = self.builder.cluster()
        except Exception as exc:  # noqa: BLE001 - each build gets this error, one line
            self.cluster_error = exc
        # a dead keeper's socket is replaced: we hold the lock, so it is not live
        listener = bind_private(self.sock)
        listener.settimeout(1.0)
        self.listener = listener
        from envd_core.atomic import write_atomic

        write_atomic(self.info_file, json.dumps({
            "kind": keeper_client.KIND, "pid": os.getpid(), "socket": self.sock,
            "address": f"kube-pod://{self.builder.address}", "started": time.time(),
            "idle": self.idle}).encode())
        log(f"serving {self.sock} for kube-pod://{self.builder.address}"
            + (f" (direct: {self.direct})" if self.direct else ""))
        # Idle from now: loading the client and the configuration can take seconds on a busy
        # machine, and a keeper must answer the build that started it before it idles out.
        self.last_activity = time.monotonic()
        return True

    def close(self) -> None:
        """Stop accepting, drop bridges and spares, remove the registration, the socket and
        the lock file (the last two as the resident does: lockfile.remove)."""
        with contextlib.suppress(OSError):
            os.unlink(self.info_file)
        sock_inode = None
        if self.listener is not None:
            with contextlib.suppress(OSError):
                sock_inode = os.stat(self.sock).st_ino
            self.listener.close()
        with self._lock:
            bridges, self._bridges = list(self._bridges.values()), {}
            spares, self._spares = [s for s, _ in self._spares.values()], {}
        for spare in spares:
            with contextlib.suppress(Exception):
                spare.close()
        for bridge in bridges:
            bridge.stop()
        if self.cluster is not None:
            self.cluster.close()
        if self.lock_fd >= 0:
            lockfile.remove(self.lock_fd, self.lock_file, self.sock, sock_inode)
        log(f"stopped: {self.routes} routes, {self.served} connections served")

    # -- serving ---------------------------------------------------------------------------
    def serve(self) -> None:
        """Accept until idle, ``stop`` or SIGTERM (and the running builds' connections end)."""
        assert self.listener is not None
        next_refresh = time.monotonic() + 5.0
        while True:
            with self._lock:
                idle = self.active == 0 and time.monotonic() - self.last_activity > self.idle
                done = self.stopping and self.active == 0
            if idle or done:
                log("idle: exiting" if idle else "stopping")
                return
            conn = None
            if self.stopping:  # builds still running: no new requests, wait for them
                time.sleep(0.1)
            else:
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    pass
                except OSError:  # shut down by `stop` in the meantime
                    time.sleep(0.1)
            if conn is not None:
                threading.Thread(target=self._handle, args=(conn,), daemon=True,
                                 name="envd-keeper-request").start()
            if time.monotonic() >= next_refresh:
                self._refresh_spares()
                next_refresh = time.monotonic() + 5.0

    def _handle(self, conn: socket.socket) -> None:
        try:
            if peer_uid(conn) != os.geteuid():
                return
            conn.settimeout(10.0)
            data = bytearray()
            while not data.endswith(b"\n") and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            request = json.loads(data)
            op = request.get("op") if isinstance(request, dict) else None
            with self._lock:
                self.last_activity = time.monotonic()
            reply = self.answer(str(op))
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except (OSError, ValueError) as exc:
            log(f"request failed: {exc}")
        finally:
            conn.close()

    def answer(self, op: str) -> dict[str, Any]:
        """The reply to one request (``route``, ``status`` or ``stop``)."""
        if op == "route":
            return self.route()
        if op == "status":
            with self._lock:
                return {"pid": os.getpid(), "served": self.served, "routes": self.routes,
                        "active": self.active, "spares": sorted(self._spares)}
        if op == "stop":
            with self._lock:
                self.stopping = True
            if self.listener is not None:  # wakes the accept loop (it then waits for builds)
                with contextlib.suppress(OSError):
                    self.listener.shutdown(socket.SHUT_RDWR)
            return {"stopping": os.getpid()}
        return {"error": {"message": f"the kube-pod keeper does not know `{op}`",
                          "kind": "usage", "hint": None, "connection": False}}

    def route(self) -> dict[str, Any]:
        """The pods, listed now, and a bridged socket for each ready one (module docstring)."""
        import attrs

        with self._lock:
            self.routes += 1
        if self.direct:
            return {"direct": self.direct}
        if self.cluster is None:
            return {"error": keeper_client.error_reply(self.cluster_error or RuntimeError())}
        try:
            pods = self.cluster.pods(self.builder.parsed)
        except Exception as exc:  # noqa: BLE001 - the build raises it as its own
            return {"error": keeper_client.error_reply(exc)}
        ready = [p for p in pods if p.ready][:MAX_PODS]
        sockets = {p.name: self._bridge_for(p) for p in ready}
        names = {p.name for p in pods}
        with self._lock:
            gone = [n for n in self._bridges if n not in names]
            bridges = [self._bridges.pop(n) for n in gone]
            spares = [self._spares.pop(n)[0] for n in gone if n in self._spares]
        for spare in spares:
            with contextlib.suppress(Exception):
                spare.close()
        for bridge in bridges:
            bridge.stop()
        with self._lock:
            busy = self.active > 0
        for pod in ready if not busy else ():  # a running build's bridge keeps the CPU
            self._fill(pod.name)
        return {"server": self.cluster.server, "namespace": self.cluster.namespace,
                "pods": [attrs.asdict(p) for p in pods], "sockets": sockets}

    # -- bridges and spares ----------------------------------------------------------------
    def _bridge_for(self, pod: PodInfo) -> str:
        from envd_core.buildkit.bridge import ByteBridge

        with self._lock:
            self._pods[pod.name] = pod
            bridge = self._bridges.get(pod.name)
            if bridge is None:
                bridge = self._bridges[pod.name] = ByteBridge(
                    functools.partial(self._dial, pod.name), f"kube-pod keeper {pod.name}")
            return str(bridge.path)

    def _open(self, name: str) -> Any:
        assert self.cluster is not None
        with self._lock:
            pod = self._pods[name]
        return self.builder.open_stream(self.cluster, pod)

    def _dial(self, name: str) -> ByteStream:
        """A build's connection to pod ``name``: its spare when fresh, else a new one."""
        with self._lock:
            spare, at = self._spares.pop(name, (None, 0.0))
            self.active += 1
            self.served += 1
            self.last_activity = time.monotonic()
        if spare is not None and time.monotonic() - at > SPARE_MAX_AGE:
            with contextlib.suppress(Exception):
                spare.close()
            spare = None
        try:
            stream = spare if spare is not None else self._open(name)
        except BaseException as exc:
            log(f"cannot reach {name}: {exc}")  # the build falls back to the direct path
            self.release()
            raise
        # No new spare yet: opening one (TLS, upgrade: ~10 ms of CPU here) while this build
        # connects and solves would take the CPU and this process's GIL from its bridge. It
        # is opened when the build's connection ends (release), or by the next route.
        return Counted(stream, self, name,
                       functools.partial(self._open, name) if spare is not None else None)

    def release(self, name: str | None = None) -> None:
        """A build's connection (to pod ``name``) ended: refill its spare."""
        with self._lock:
            self.active -= 1
            self.last_activity = time.monotonic()
        if name is not None:  # a moment later: the build is still finishing (its exit, push)
            timer = threading.Timer(REFILL_DELAY, self._fill, args=(name,))
            timer.daemon = True
            timer.start()

    def _fill(self, name: str) -> None:
        """Open a spare for ``name`` in the background unless it has one (or one is coming)."""
        with self._lock:
            if name in self._spares or name in self._filling or self.stopping:
                return
            self._filling.add(name)

        def fill() -> None:
            try:
                stream = self._open(name)
            except Exception as exc:  # noqa: BLE001 - a build dialling this pod will say why
                log(f"spare for {name}: {exc}")
                stream = None
            with self._lock:
                self._filling.discard(name)
                if stream is not None and name in self._bridges and name not in self._spares:
                    self._spares[name], stream = (stream, time.monotonic()), None
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

        threading.Thread(target=fill, daemon=True, name="envd-keeper-spare").start()

    def _refresh_spares(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [n for n, (_, at) in self._spares.items() if now - at > SPARE_MAX_AGE]
            streams = [self._spares.pop(n)[0] for n in old]
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()
        for name in old:
            self._fill(name)


def main(directory: str, keeper_key: str, spec: str) -> None:
    """The keeper process (see the module docstring)."""
    os.closerange(3, 1 << 16)  # nothing inherited beyond stdio stays open
    os.chdir("/")
    keeper = Keeper(directory, keeper_key, json.loads(spec))

    def on_term(_signum: int, _frame: object) -> None:
        keeper.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    if not keeper.start():
        return
    try:
        keeper.serve()
    finally:
        keeper.close()
