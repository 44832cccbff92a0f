"""The build process's side of the kube-pod forwarding keeper (:mod:`envd_kube_pod.keeper`).

A keeper is a background process per user and per *key* that keeps the ``kubernetes`` client
loaded, lists the context's pods for each build on an open API connection, and keeps one
pre-opened port-forward (or exec) WebSocket per ready pod. A build asks it one question on its
control socket (``route``) and connects its gRPC channel to the unix socket the answer names for
the pod it routes to: no kube import, kubeconfig parse, TLS handshake, listing or upgrade in the
build process. docs/kube-pod.md ("The forwarding keeper") describes the design.

Nothing here imports the ``kubernetes`` client (the standard library, attrs and envd's core), so
asking a keeper costs the build process no import of it.

The **key** (:func:`key`) covers everything that changes what a keeper would do: the context's
address and options, the content of the kubeconfig files, the environment variables the client
reads (``KUBECONFIG``, the in-cluster service variables, proxies), the in-cluster
service-account files (a rotated token starts a new keeper), the plugin's own source files (an
edited keeper is replaced), the interpreter, and the process context the resident's key uses
(:func:`envd_core.resident.wire.process_context`: namespaces, root, cgroup), so a build under
``unshare --mount`` with another token bind-mounted never uses a keeper started outside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from envd_core.errors import BuilderError

if TYPE_CHECKING:
    from envd_core.buildkit.transport import Connection
    from envd_kube_pod import KubePodBuilder
    from envd_kube_pod.cluster import PodInfo

#: Seconds without a request and without an open build connection before a keeper exits.
DEFAULT_IDLE = 600.0
#: Environment variables that change what the client connects to or with.
_KEY_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HOME",
            "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
#: Where the kubelet mounts a pod's service account (in-cluster configuration).
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The largest kubeconfig or token file hashed into the key.
_MAX_FILE = 4 * 1024 * 1024
#: What a keeper's registration says it is (``envd resident status`` shows it).
KIND = "kube-pod keeper"
#: How a keeper's files in the socket directory start: ``kube-keeper-<key>.{sock,lock,...}``.
KEY_PREFIX = "kube-keeper-"


def disabled(env: Mapping[str, str]) -> bool:
    """Whether ``ENVD_KUBE_KEEPER`` turns the keeper off (``0``, ``false``, ``no``, ``off``)."""
    return env.get("ENVD_KUBE_KEEPER", "").strip().lower() in ("0", "false", "no", "off")


def idle_seconds(env: Mapping[str, str]) -> float:
    """``ENVD_KUBE_KEEPER_IDLE`` (seconds), or :data:`DEFAULT_IDLE` when unset or invalid."""
    try:
        value = float(env.get("ENVD_KUBE_KEEPER_IDLE", ""))
    except ValueError:
        return DEFAULT_IDLE
    return value if value > 0 else DEFAULT_IDLE


def kubeconfig_files(options: Mapping[str, str], env: Mapping[str, str]) -> list[str]:
    """The kubeconfig files the context reads, in the order :class:`~envd_kube_pod.cluster.
    Cluster` resolves them (the option, else ``KUBECONFIG``, else ``~/.kube/config``)."""
    files = options.get("kubeconfig") or env.get("KUBECONFIG") or \
        os.path.join(env.get("HOME") or os.path.expanduser("~"), ".kube", "config")
    return [os.path.expanduser(p) for p in files.split(os.pathsep) if p]


def _identity(path: str) -> str:
    """``path`` and a digest of what it holds (content, not mtime: tools that rewrite a
    kubeconfig unchanged, as ``scripts/infra env`` does, must not start another keeper)."""
    import hashlib

    try:
        with open(path, "rb") as fh:
            return f"{path}:{hashlib.sha256(fh.read(_MAX_FILE)).hexdigest()}"
    except OSError:
        return f"{path}:-"


def key(address: str, options: Mapping[str, str], env: Mapping[str, str]) -> str:
    """The keeper key of a context in this process, as 16 hex digits (module docstring)."""
    import hashlib

    from envd_core.resident.wire import process_context

    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(os.path.join(here, n) for n in os.listdir(here) if n.endswith(".py"))
    parts = [sys.executable, address, json.dumps(dict(options), sort_keys=True),
             *(f"{k}={env.get(k, '')}" for k in _KEY_ENV),
             *(_identity(p) for p in kubeconfig_files(options, env)),
             *(_identity(os.path.join(SA_DIR, n)) for n in ("token", "ca.crt", "namespace")),
             *(f"{p}:{os.stat(p).st_mtime_ns}" for p in sources), *process_context()]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()[:16]


def paths(directory: str, keeper_key: str) -> tuple[str, str, str]:
    """``(control socket, lock file, registration file)`` of the keeper ``keeper_key``."""
    from envd_core.resident.helpers import SUFFIX

    stem = os.path.join(directory, f"{KEY_PREFIX}{keeper_key}")
    return f"{stem}.sock", f"{stem}.lock", f"{stem}{SUFFIX}"


def ask(sock: str, request: Mapping[str, Any], timeout: float) -> dict[str, Any] | None:
    """Send one JSON line to the keeper on ``sock``; its answer, or ``None`` when nobody
    answers there or the answer is not a JSON object (the resident's helper protocol)."""
    from envd_core.resident.helpers import ask as ask_helper

    return ask_helper(sock, request, timeout)


def error_reply(exc: BaseException) -> dict[str, Any]:
    """An error as the keeper sends it: message, kind, hint, and whether it is a connection
    error (:class:`~envd_core.buildkit.errors.BuildkitConnectionError`)."""
    from envd_core.buildkit.errors import BuildkitConnectionError

    if isinstance(exc, BuilderError):
        return {"message": exc.message, "kind": str(exc.kind.value), "hint": exc.hint,
                "connection": isinstance(exc, BuildkitConnectionError)}
    return {"message": f"the kube-pod keeper failed: {type(exc).__name__}: {exc}",
            "kind": "unavailable", "hint": "set ENVD_KUBE_KEEPER=0 to connect without it",
            "connection": False}


def error_from(data: Any) -> BuilderError | None:
    """The error an ``error`` answer holds, as the build process would have raised it; None
    when ``data`` is not a well-formed error (the caller then connects directly)."""
    from envd_core.buildkit.errors import BuildkitConnectionError
    from envd_core.errors import ErrorKind

    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return None
    try:
        kind = ErrorKind(data.get("kind"))
    except ValueError:
        return None
    hint = data.get("hint") if isinstance(data.get("hint"), str) else None
    if data.get("connection"):
        return BuildkitConnectionError(data["message"], kind=kind, hint=hint)
    return BuilderError(data["message"], kind=kind, hint=hint)


def spawn(directory: str, keeper_key: str, address: str, options: Mapping[str, str]) -> None:
    """Start a keeper for ``keeper_key`` in the background; never waits, never fails.

    As the resident's ``spawn``: a new session, stdin from ``/dev/null``, output appended to
    ``kube-keeper.log`` in the socket directory. Two builds racing here start two processes:
    the one that takes the lock serves, the other exits at once.
    """
    from envd_core.resident.wire import check_dir, spawn_detached

    with contextlib.suppress(Exception):  # the build connects directly anyway
        if check_dir(directory, create=True) is not None:
            return
        code = ("import sys; spec = sys.argv[1:4]; sys.path[:] = sys.argv[4:]; "
                "from envd_kube_pod.keeper import main; main(*spec)")
        spec = json.dumps({"address": address, "options": dict(options)})
        # absolute: the keeper runs in `/` (a `''` entry means the build's directory)
        path = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
        args = [sys.executable, "-c", code, directory, keeper_key, spec, *path]
        spawn_detached(args, os.path.join(directory, "kube-keeper.log"), os.environ)


def keepers(directory: str) -> list[dict[str, Any]]:
    """The registrations of the keepers in ``directory`` whose process still runs."""
    from envd_core.resident.helpers import registered

    return [k for k in registered(directory) if k.get("kind") == KIND]


def stop_all(directory: str, wait: float = 10.0, started_after: float = 0.0) -> list[int]:
    """Ask every keeper in ``directory`` (started after ``started_after``, a ``time.time()``)
    to stop, and wait up to ``wait`` s for them to exit; the pids that were asked."""
    from envd_core.resident.helpers import stop_all as stop_helpers

    return stop_helpers(directory, wait, started_after, kind=KIND)


def start(address: str, options: Mapping[str, str], env: Mapping[str, str],
          wait: float = 60.0) -> str | None:
    """Start the keeper of this context unless one runs, and wait up to ``wait`` s until it
    answers (tests and benchmarks; a build never waits for one); its control socket, or None.
    """
    import time

    from envd_core.resident.wire import socket_dir

    directory = socket_dir(env)
    keeper_key = key(address, options, env)
    sock = paths(directory, keeper_key)[0]
    deadline = time.monotonic() + wait
    spawned = False
    while time.monotonic() < deadline:
        if ask(sock, {"op": "status"}, timeout=5.0) is not None:
            return sock
        if not spawned:
            spawn(directory, keeper_key, address, options)
            spawned = True
        time.sleep(0.1)
    return None

# -- the build process's questions --------------------------------------------------------


class Located(Protocol):
    """Where a listing was made: what routing and its messages name."""

    @property
    def server(self) -> str: ...
    @property
    def namespace(self) -> str: ...


@attrs.frozen
class Routed:
    """The forwarding keeper's answer to ``route`` (:mod:`envd_kube_pod.keeper`)."""

    server: str
    namespace: str
    pods: list[PodInfo]
    #: The keeper's bridged unix socket per ready pod.
    sockets: dict[str, str]

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any]) -> Routed | None:
        """The answer of a reply; None when it is malformed (connect directly then)."""
        from envd_kube_pod.cluster import PodInfo

        try:
            pods = [PodInfo(name=str(p["name"]), phase=str(p["phase"]), ready=bool(p["ready"]),
                            reason=str(p.get("reason") or ""),
                            terminating=bool(p.get("terminating")),
                            containers=tuple(str(c) for c in p.get("containers") or ()),
                            tcp_ports=tuple((str(c), int(n)) for c, n in p.get("tcp_ports") or ()),
                            owner=str(p.get("owner") or ""))
                    for p in reply["pods"]]
            sockets = {str(k): str(v) for k, v in dict(reply["sockets"]).items()}
            return cls(str(reply["server"]), str(reply["namespace"]), pods, sockets)
        except (KeyError, TypeError, ValueError):
            return None


def keeper_route(builder: KubePodBuilder, timeout: float = 25.0) -> Routed | BuilderError | str:
    """The forwarding keeper's answer for ``builder``'s context: the pods and a bridged socket
    per ready pod, or the error its listing gave; else why the build connects directly (the
    keeper is off, or not running yet: it is started for the next build, or its answer is
    unusable)."""
    env = os.environ
    if disabled(env):
        return "ENVD_KUBE_KEEPER turns it off"
    try:
        from envd_core.resident.wire import socket_dir

        directory = socket_dir(env)
        keeper_key = key(builder.address, builder.option_values, env)
    except Exception as exc:  # noqa: BLE001 - never fail a build over the keeper
        return f"no keeper key: {type(exc).__name__}: {exc}"
    from envd_core.resident.helpers import exchange, parse

    sock = paths(directory, keeper_key)[0]
    line = exchange(sock, {"op": "route"}, timeout=min(timeout, 25.0))
    if line is None:  # nobody there (a keeper that answers garbage is not replaced)
        spawn(directory, keeper_key, builder.address, builder.option_values)
        return f"no keeper answered on {sock} (starting one)"
    reply = parse(line)
    error = error_from(reply["error"]) if reply is not None and "error" in reply else None
    routed = error or (Routed.from_reply(reply) if reply is not None else None)
    if routed is not None:
        return routed
    if reply is not None and "direct" in reply:
        return f"the keeper connects directly: {reply['direct']}"
    return f"the keeper's answer is not one: {line[:200]!r}"


def open_kept(routed: Routed, pod: PodInfo, timeout: float) -> Connection | str:
    """A gRPC channel to ``pod`` through the keeper's bridged socket; when it does not answer,
    why not (the caller connects directly, which explains a refusal as ever)."""
    from envd_core.buildkit.transport import connect_unix, wait_ready
    from envd_core.errors import ErrorKind

    path = routed.sockets.get(pod.name)
    if not path:
        return f"the keeper bridges no socket to `{pod.name}`"
    conn = connect_unix(path, wait=False, far=True,
                        target=f"kube-pod://{routed.namespace}/{pod.name}")
    try:
        wait_ready(conn, timeout)
    except BuilderError as exc:
        conn.close()
        if exc.kind == ErrorKind.TIMEOUT:
            raise  # a direct attempt would wait as long again
        return f"the keeper's bridge to `{pod.name}` did not answer: {exc.message}"
    return conn
