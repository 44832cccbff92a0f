"""The cluster a kube-pod context points at, through the official ``kubernetes`` client.

Configuration is resolved the way kubectl does: the ``kubeconfig`` option, else ``KUBECONFIG``
(several files merged), else ``~/.kube/config``; the kube context from the address
(``?context=``), else the ``kube-context`` option, else the kubeconfig's current one. Inside a
pod with no kubeconfig, the in-cluster service-account config is used. The namespace comes from
the address, else the ``namespace`` option, else the kube context's, else the service account's,
else ``default``. Each API call is wrapped so a failure is one line (:mod:`errors`).

Requests go through the client's ``ApiClient`` (kubeconfig and in-cluster auth, TLS, proxies,
token refresh, request serialisation) as raw JSON, not through the generated ``CoreV1Api`` and
``AppsV1Api`` classes: since client v33 those are pydantic-validated, and importing them builds
~280 model schemas, 1.3 s of CPU measured here, for the two reads a build makes (a Deployment and
a pod list, read below as plain dicts). See bench/README.md (bench_kube).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from envd_core.buildkit.errors import BuildkitConnectionError
from envd_core.errors import BuilderError, ErrorKind
from envd_kube_pod.address import Address
from envd_kube_pod.errors import api_error

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Seconds one API request may take (reads are small; a stuck apiserver must not hang a build).
REQUEST_TIMEOUT = 20.0
#: Seconds the listing's connection may wait for the WebSocket upgrade before a new one is
#: opened instead (within a build it waits milliseconds; see ``Cluster._keep``).
SPARE_IDLE = 30.0


@attrs.frozen
class PodInfo:
    """What routing and status need to know of one pod."""

    name: str
    phase: str
    ready: bool
    #: Why it is not ready (``ImagePullBackOff``, ``ContainerCreating``…), or ``""``.
    reason: str = ""
    terminating: bool = False
    containers: tuple[str, ...] = ()
    #: The plain-TCP port buildkitd listens on inside the pod, per container, read from its
    #: ``--addr tcp://…`` flags (None: no such listener, or it wants TLS): port-forward there.
    tcp_ports: tuple[tuple[str, int], ...] = ()
    #: ``Kind/name`` of the pod's controller (``ReplicaSet/envd-buildkitd-5c9…``), or ``""``.
    owner: str = ""

    def tcp_port(self, container: str | None) -> int | None:
        """The TCP port of ``container``'s buildkitd (the first container's if None)."""
        for name, port in self.tcp_ports:
            if container is None or name == container:
                return port
        return None


def pod_info(pod: dict[str, Any]) -> PodInfo:
    """A :class:`PodInfo` from a Pod as the API returns it (JSON)."""
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    reason = ""
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
            break
        if state.get("terminated") is not None:
            reason = state["terminated"].get("reason") or "Terminated"
            break
    scheduled = conditions.get("PodScheduled")
    if not reason and scheduled is not None and scheduled.get("status") == "False":
        reason = scheduled.get("reason") or "Unschedulable"
    terminating = meta.get("deletionTimestamp") is not None
    containers = (pod.get("spec") or {}).get("containers") or []
    ports = tuple((c.get("name", ""), port) for c in containers
                  if (port := listen_port([*(c.get("command") or []), *(c.get("args") or [])]))
                  is not None)
    owner = next((f"{o.get('kind')}/{o.get('name')}" for o in meta.get("ownerReferences") or []
                  if o.get("controller")), "")
    return PodInfo(name=meta.get("name", ""), phase=status.get("phase") or "Unknown",
                   ready=ready and not terminating,
                   reason=("Terminating" if terminating else reason),
                   terminating=terminating,
                   containers=tuple(c.get("name", "") for c in containers), tcp_ports=ports,
                   owner=owner)


def listen_port(argv: list[str]) -> int | None:
    """The port of buildkitd's first plain-TCP ``--addr`` in ``argv`` (None with TLS flags,
    which a port-forwarded plain gRPC connection could not speak)."""
    if any(a.split("=", 1)[0] in ("--tlscert", "--tlskey", "--tlscacert") for a in argv):
        return None
    values = [b for a, b in itertools.pairwise(argv) if a == "--addr"]
    values += [a.split("=", 1)[1] for a in argv if a.startswith("--addr=")]
    for value in values:
        if value.startswith("tcp://"):
            port = value.rsplit(":", 1)[-1].rstrip("/")
            if port.isdigit() and 0 < int(port) < 65536:
                return int(port)
    return None


def import_client() -> None:
    """Import the ``kubernetes`` client, retrying an ImportError caused by another thread.

    ``envd context ls --status`` probes contexts in parallel threads; when the docker context's
    thread is importing ``requests`` at the same moment, this thread can meet the half-built
    module ("partially initialized module 'requests.utils'"). The other import finishes within
    moments, and a failed import leaves nothing of ours behind, so trying again is enough.
    """
    import importlib

    for attempt in range(5):
        try:
            for name in ("kubernetes.client", "kubernetes.config", "kubernetes.stream"):
                importlib.import_module(name)
            return
        except ImportError:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


class HttpError(Exception):
    """A non-2xx answer of the API server: its status and ``Status`` body (for :mod:`errors`)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.body = status, body


class Cluster:
    """An API client for one context's cluster and namespace."""

    def __init__(self, address: Address, *, kubeconfig: str | None = None,
                 kube_context: str | None = None, namespace: str | None = None) -> None:
        import_client()
        from kubernetes import client
        from kubernetes import config as typed_config
        from kubernetes.config.config_exception import ConfigException

        from envd_kube_pod.kubeconfig import load as load_kubeconfig

        config: Any = typed_config  # its loaders carry no annotations

        context = address.context or kube_context
        ns_from_config: str | None = None
        files = kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config")
                                                                  .expanduser())
        have_file = any(Path(p).expanduser().is_file() for p in files.split(os.pathsep) if p)
        try:
            if have_file:
                # Always by name: the client reads KUBECONFIG once, when it is imported.
                # One parse, with a fast parser (kubeconfig.py says why).
                api, ns_from_config = load_kubeconfig(files, context)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                api = client.ApiClient(cfg)
                if _SA_NAMESPACE.is_file():
                    ns_from_config = _SA_NAMESPACE.read_text().strip() or None
            else:
                raise BuildkitConnectionError(
                    f"no cluster: no kubeconfig at `{files}` and not running inside a pod",
                    kind=ErrorKind.NOT_FOUND,
                    hint="set KUBECONFIG, or --builder-opt kubeconfig=/path/to/kubeconfig")
        except ConfigException as exc:
            raise BuilderError(f"no cluster: the kubeconfig `{files}` is unusable: {exc}",
                               kind=ErrorKind.INVALID,
                               hint="fix the file, or pick a context with "
                                    "--builder-opt kube-context=…") from None
        # Fail fast when nothing answers: urllib3 would retry three times per call.
        api.configuration.retries = 0
        self.api = api
        self._spare: Any = None  # see _keep
        self.server: str = api.configuration.host
        self.namespace: str = address.namespace or namespace or ns_from_config or "default"

    # -- requests ------------------------------------------------------------------------
    def prepare(self, method: str, path: str, *, query: Iterable[tuple[str, Any]] = (),
                content_type: str | None = None, body: Any = None
                ) -> tuple[str, str, dict[str, str], Any]:
        """``(method, url, headers, body)`` of a request, with the context's credentials.

        ``path`` may hold ``{namespace}``; repeated query keys (``command``) stay repeated.
        """
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, path_params={"namespace": self.namespace},
            query_params=list(query), header_params=headers, body=body,
            auth_settings=["BearerToken"], collection_formats={"command": "multi"})
        return method, url, headers, body

    def request(self, verb: str, resource: str, method: str, path: str, *,
                query: Iterable[tuple[str, Any]] = (), body: Any = None,
                content_type: str | None = None, keep_socket: bool = False) -> Any:
        """One API call; the decoded JSON answer. Any failure is one line naming
        ``verb resource`` (RBAC, not found, no cluster…).

        ``keep_socket``: keep the request's connection for the WebSocket that follows
        (:meth:`take_socket`) instead of returning it to the client's pool.
        """
        if body is not None and content_type is None:
            content_type = "application/json"
        try:
            method, url, headers, body = self.prepare(method, path, query=query,
                                                      content_type=content_type, body=body)
            response = self.api.call_api(method, url, headers, body,
                                         _request_timeout=REQUEST_TIMEOUT)
            # urllib3's response names its connection until the body is read (then the
            # connection goes back to the pool): take it now.
            conn = getattr(response.response, "connection", None) if keep_socket else None
            data = response.read()
            if not 200 <= response.status < 300:
                raise HttpError(response.status, (data or b"").decode("utf-8", "replace"))
            if conn is not None:
                self._keep(conn)
            return json.loads(data) if data else {}
        except Exception as exc:  # noqa: BLE001 - HttpError, urllib3 and socket errors
            raise api_error(exc, verb=verb, resource=resource, namespace=self.namespace,
                            server=self.server) from None

    def get_or_none(self, resource: str, path: str, *, keep_socket: bool = False) -> Any:
        """A ``get`` of one object, or None when it does not exist (404)."""
        try:
            return self.request("get", resource, "GET", path, keep_socket=keep_socket)
        except BuilderError as exc:
            if exc.kind == ErrorKind.NOT_FOUND:
                return None
            raise

    # -- what builds read ----------------------------------------------------------------
    def deployment(self, name: str) -> dict[str, Any] | None:
        """The Deployment ``name`` in this namespace (JSON), or None."""
        result: dict[str, Any] | None = self.get_or_none(
            "deployments", f"{DEPLOYMENTS}/{name}")
        return result

    def pods(self, address: Address, *, keep_socket: bool = False) -> list[PodInfo]:
        """The pods ``address`` names, sorted by name (not only the ready ones).

        ``keep_socket``: a WebSocket to one of them follows; keep the listing's connection
        for it (:meth:`take_socket`). Not in a polling loop: each listing would then open a
        new connection.
        """
        if address.kind == "pod":
            pod = self.get_or_none("pods", f"{PODS}/{address.target}",
                                   keep_socket=keep_socket)
            if pod is None:
                raise BuildkitConnectionError(
                    f"pod `{address.target}` not found in namespace `{self.namespace}`",
                    kind=ErrorKind.NOT_FOUND,
                    hint="check the name, or address a deployment/<name> that outlives pods")
            return [pod_info(pod)]
        if address.kind == "deployment":
            fast = self._envd_pods(address.target, keep_socket=keep_socket)
            if any(p.ready for p in fast):
                return fast
            dep = self.deployment(address.target)
            if dep is None:
                return []
            labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        else:
            selector = address.target
        found = self.request("list", "pods", "GET", PODS, keep_socket=keep_socket,
                             query=[("labelSelector", selector)])
        return sorted((pod_info(p) for p in found.get("items") or []), key=lambda p: p.name)

    def _envd_pods(self, name: str, *, keep_socket: bool) -> list[PodInfo]:
        """The pods of the Deployment ``name`` envd created, found by the label envd puts on
        them, without reading the Deployment (one request, not two, on every build).

        Only pods carrying ``envd.io/builder=<name>`` and controlled by a ReplicaSet named
        ``<name>-…`` (the Deployment's) count. With none of them ready, :meth:`pods` reads the
        Deployment and lists by its own selector, which also covers a Deployment that is not
        envd's, a missing one (bootstrap) and pods still starting.
        """
        from envd_kube_pod.deploy import BUILDER_LABEL

        found = self.request("list", "pods", "GET", PODS, keep_socket=keep_socket,
                             query=[("labelSelector", f"{BUILDER_LABEL}={name}")])
        pods = (pod_info(p) for p in found.get("items") or [])
        return sorted((p for p in pods if p.owner.startswith(f"ReplicaSet/{name}-")),
                      key=lambda p: p.name)

    # -- one connection for the listing and the WebSocket --------------------------------
    def _keep(self, conn: Any) -> None:
        """Detach ``conn``'s open socket from the client's pool and keep it as the spare.

        A build makes one listing and then one WebSocket upgrade (port-forward or exec). The
        client opens a new TCP and TLS connection for the upgrade (websocket-client knows
        nothing of urllib3's pool): one more connect, TLS context and handshake, ~8 ms of CPU
        and a round trip per build measured here (bench/README.md, bench_kube ``--warm``).
        Handing the listing's connection to the upgrade saves them. Not through a proxy: the
        client's WebSocket path applies its own proxy rules there.
        """
        sock = getattr(conn, "sock", None)
        if sock is None or sock.fileno() < 0 or self.api.configuration.proxy:
            return
        conn.sock = None  # the pool sees a closed connection and reconnects if used again
        self._drop_spare()
        self._spare, self._spare_at = sock, time.monotonic()

    def take_socket(self) -> Any:
        """The spare connection to the API server (once), or None; None too when it has been
        idle longer than :data:`SPARE_IDLE` (a load balancer may have dropped it silently)."""
        sock, self._spare = getattr(self, "_spare", None), None
        if sock is not None and time.monotonic() - getattr(self, "_spare_at", 0.0) > SPARE_IDLE:
            with contextlib.suppress(OSError):
                sock.close()
            return None
        return sock

    def _drop_spare(self) -> None:
        sock = self.take_socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        """Release the client's connection pool (and an unused spare connection)."""
        self._drop_spare()
        with contextlib.suppress(Exception):  # closing must never mask the real outcome
            self.api.close()


#: API paths (``{namespace}`` is filled by :meth:`Cluster.prepare`).
PODS = "/api/v1/namespaces/{namespace}/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{namespace}/deployments"
