"""Builder type ``kube-pod``: BuildKit in pods on a Kubernetes cluster.

Upstream envd's address form ``<pod>[?namespace=ns&context=kctx&container=c]`` works as is;
``deployment/<name>`` and ``selector/<labels>`` name a set of pods, so a context survives pods
being replaced. For a ``deployment/<name>`` address envd creates the Deployment itself
(``envd bootstrap``, or the first build), like buildx's kubernetes driver::

    envd context create --name k8s --builder kube-pod \\
        --builder-address deployment/envd-buildkitd?namespace=ci \\
        --builder-opt replicas=2 --use
    envd build            # creates the Deployment, waits for its pods, builds on one

envd reaches buildkitd through the API server with the official ``kubernetes`` client (no
kubectl): a port-forward to buildkitd's TCP listener in the pod when it has one (the Deployment
envd creates does), else an exec of ``buildctl dial-stdio``; both are WebSockets. With several
ready pods, a project always builds on the same one (rendezvous hashing on its directory); when
that pod is gone the build moves, with a notice. The ``kubernetes`` client and grpc are
imported only in the methods that need them: ``envd context ls`` loads neither.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from envd_core import hookimpl
from envd_core.builder import (
    Builder,
    BuilderStatus,
    DaemonAction,
    DaemonChange,
    Report,
    silent,
    strip_scheme,
)
from envd_core.errors import BuilderError, ErrorKind, ValidationError
from envd_core.options import Option
from envd_kube_pod.address import Address, parse_address
from envd_kube_pod.keeper_client import Located, Routed, keeper_route, open_kept

if TYPE_CHECKING:
    from envd_core.buildkit.transport import Connection
    from envd_kube_pod.cluster import Cluster, PodInfo
    from envd_kube_pod.deploy import Settings
    from envd_kube_pod.stream import ChannelStream

__all__ = ["DEFAULT_IMAGE", "KubePodBuilder", "Routed"]

TRANSPORTS = ("auto", "exec", "port-forward")

#: Upstream envd's image for kube-pod and docker-container, at the BuildKit release this client
#: is tested against.
DEFAULT_IMAGE = "docker.io/moby/buildkit:v0.18.2"


class KubePodBuilder(Builder):
    """BuildKit pods on Kubernetes, reached through the API server's exec."""

    name = "kube-pod"
    summary = "BuildKit pods on Kubernetes (a Deployment envd bootstraps, or existing pods)"
    preload = ("kubernetes.client", "kubernetes.config", "kubernetes.stream")
    address_help = ("<pod>, deployment/<name> or selector/<labels>, optionally "
                    "?namespace=ns&context=kctx&container=c")
    default_address = "deployment/envd-buildkitd"
    can_bootstrap = True
    # needs_bootstrap and connect share one Cluster and one pod listing, under a lock, so the
    # early-connect thread does both while build.envd evaluates (docs/kube-pod.md, speed).
    early_bootstrap_check = True
    options = (
        Option("kubeconfig", "kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the "
               "in-cluster service account)", kind="path"),
        Option("kube-context", "kubeconfig context (the address's ?context= wins)"),
        Option("namespace", "namespace (the address's ?namespace= wins; default: the kube "
               "context's, else default)"),
        Option("replicas", "BuildKit pods of the Deployment envd creates", kind="int",
               default="1"),
        Option("image", "BuildKit image of the Deployment", default=DEFAULT_IMAGE),
        Option("rootless", "run buildkitd rootless (the image's -rootless variant)",
               kind="bool", default="false"),
        Option("resources", "requests (and limits.X) of the buildkitd container, e.g. "
               "cpu=1,memory=2Gi,limits.memory=4Gi"),
        Option("node-selector", "node labels the pods must match, e.g. "
               "kubernetes.io/arch=amd64,pool=build"),
        Option("tolerations", "taints the pods tolerate: key=value:Effect, key:Effect or key, "
               "comma-separated"),
        Option("service-account", "service account of the pods (default: none mounted)"),
        Option("host-network", "run the pods in the node's network namespace (to reach a "
               "registry on the node's loopback)", kind="bool", default="false"),
        Option("buildkitd-flags", "extra buildkitd flags, e.g. --debug"),
        Option("timeout", "seconds bootstrap waits for ready pods", kind="int", default="300"),
        Option("transport", "how envd reaches buildkitd in the pod: `port-forward` (to its "
               "plain TCP listener), `exec` (buildctl dial-stdio), or `auto`: port-forward "
               "when the pod's buildkitd has a TCP --addr, else exec", default="auto"),
        Option("port", "TCP port on the pod's loopback where the Deployment envd creates "
               "listens (not with host-network unless transport=port-forward)", kind="int",
               default="1234"),
    )

    def __init__(self, address: str, options: Mapping[str, str] | None = None) -> None:
        super().__init__(address, options)
        #: The pod the last :meth:`connect` chose, and the notice it printed (if it moved).
        self.last_pod: str | None = None
        self.last_notice: str | None = None
        # One Cluster and one pod listing per build, shared by needs_bootstrap and connect
        # (possibly in the early-connect thread): a kubeconfig load and two API reads, not four.
        self._lock = threading.RLock()
        self._shared_cluster: Cluster | None = None
        self._listing: list[PodInfo] | None = None
        self._needs: bool | None = None
        # The forwarding keeper's answer (pods and bridged sockets), or the error it relayed.
        self._routed: Routed | BuilderError | None = None
        #: Whether the last :meth:`connect` went through the forwarding keeper, and why it
        #: did not (at first, if a second try did; shown with ``--debug``; None when it did).
        self.via_keeper = False
        self.keeper_miss: str | None = None

    # -- address and options ---------------------------------------------------------------
    @classmethod
    def normalize_address(cls, address: str) -> str:
        value = strip_scheme(address, cls.name).rstrip("/")
        if not value:
            raise ValidationError(f"builder `{cls.name}` needs an address ({cls.address_help})")
        if "://" in value:
            raise ValidationError(f"builder `{cls.name}` does not take `{address}`",
                                  hint=f"give {cls.address_help}")
        return str(parse_address(value))

    @classmethod
    def check_options(cls, options: Mapping[str, str]) -> None:
        from envd_kube_pod.deploy import parse_pairs, parse_resources, parse_tolerations

        parse_resources(options.get("resources"))
        parse_pairs(options.get("node-selector"), "node-selector")
        parse_tolerations(options.get("tolerations"))
        if int(options.get("replicas", "1")) < 1:
            raise ValidationError("option `replicas` must be at least 1")
        if options.get("transport", "auto") not in TRANSPORTS:
            raise ValidationError(f"option `transport` is `auto`, `exec` or `port-forward`, "
                                  f"not `{options['transport']}`")
        if not 0 < int(options.get("port", "1234")) < 65536:
            raise ValidationError(f"option `port` must be a TCP port, not `{options['port']}`")

    @property
    def parsed(self) -> Address:
        """The address, parsed."""
        return parse_address(self.address)

    def cluster(self) -> Cluster:
        """An API client for this context's cluster and namespace."""
        from envd_kube_pod.cluster import Cluster

        return Cluster(self.parsed, kubeconfig=self.option("kubeconfig"),
                       kube_context=self.option("kube-context"),
                       namespace=self.option("namespace"))

    def settings(self) -> Settings:
        """The Deployment the options describe."""
        import shlex

        from envd_kube_pod.deploy import (
            Settings,
            parse_pairs,
            parse_resources,
            parse_tolerations,
        )

        rootless = bool(self.option("rootless"))
        image = str(self.option("image"))
        if rootless and image == DEFAULT_IMAGE:
            image += "-rootless"
        requests, limits = parse_resources(self.option("resources"))
        transport, host_network = self.option("transport"), bool(self.option("host-network"))
        # A host-network pod shares the node's ports: its loopback listener could collide with
        # another replica's, so auto leaves it to exec there.
        listen = transport == "port-forward" or (transport == "auto" and not host_network)
        return Settings(image=image, replicas=int(self.option("replicas")), rootless=rootless,
                        host_network=host_network, requests=requests,
                        limits=limits,
                        node_selector=parse_pairs(self.option("node-selector"), "node-selector"),
                        tolerations=parse_tolerations(self.option("tolerations")),
                        service_account=self.option("service-account"),
                        buildkitd_flags=tuple(shlex.split(self.option("buildkitd-flags") or "")),
                        tcp_port=int(self.option("port")) if listen else None)

    def _shared(self) -> Cluster:
        """The Cluster this builder's build uses (made once)."""
        with self._lock:
            if self._shared_cluster is None:
                self._shared_cluster = self.cluster()
            return self._shared_cluster

    # -- lifecycle -------------------------------------------------------------------------
    def needs_bootstrap(self) -> bool:
        """A ``deployment/`` context whose Deployment is missing or has no ready pod.

        Answered once per builder object: the pod listing is kept for :meth:`connect`, and a
        second call (the build path asks after the early-connect thread did) waits for the
        first and returns its answer.
        """
        if self.parsed.kind != "deployment":
            return False
        with self._lock:
            if self._needs is None:
                routed = keeper_route(self)
                if isinstance(routed, str):
                    self.keeper_miss = routed  # connect keeps it: it uses this listing
                else:
                    self._routed = routed
                    self._needs = isinstance(routed, Routed) and \
                        not any(p.ready for p in routed.pods)
                    return self._needs
                try:
                    pods = self._shared().pods(self.parsed, keep_socket=True)
                except Exception:  # noqa: BLE001 - unsure: let the connect that follows explain
                    self._needs = False
                else:
                    self._listing, self._needs = pods, not any(p.ready for p in pods)
            return self._needs

    def bootstrap(self, *, force: bool = False, report: Report = silent) -> DaemonChange:
        """Create (or scale, or with ``force`` update) the Deployment and wait for its pods."""
        from envd_kube_pod.deploy import ensure

        address = self.parsed
        if address.kind != "deployment":
            return DaemonChange(DaemonAction.NONE,
                                f"`{address}` names existing pods; envd creates BuildKit only "
                                "for deployment/<name> addresses")
        settings = self.settings()  # before any API call: a bad option creates nothing
        cluster = self.cluster()
        try:
            return ensure(cluster, address.target, settings, force=force, report=report,
                          timeout=float(self.option("timeout")))
        finally:
            cluster.close()
            with self._lock:  # the pods changed: the next connect lists them again
                self._listing = self._needs = self._routed = None

    def remove(self, *, keep_state: bool = False, report: Report = silent) -> DaemonChange:
        """Delete the Deployment envd created for this address (found by its labels).

        BuildKit's state lives in the pods (no volume), so ``keep_state`` has nothing to keep.
        """
        from envd_kube_pod.deploy import remove

        address = self.parsed
        if address.kind != "deployment":
            return DaemonChange(DaemonAction.ABSENT,
                                f"`{address}` names pods envd did not create: left alone")
        cluster = self.cluster()
        try:
            removed = remove(cluster, address.target, report=report)
        finally:
            cluster.close()
        if not removed:
            return DaemonChange(DaemonAction.ABSENT,
                                f"no deployment created by envd for `{address.target}` in "
                                f"namespace `{cluster.namespace}`")
        return DaemonChange(DaemonAction.REMOVED, ", ".join(removed))

    # -- connection ------------------------------------------------------------------------
    def choose_pod(self, cluster: Located, pods: list[PodInfo]) -> PodInfo:
        """The pod this build goes to; a one-line error when none can take it."""
        from envd_core.buildkit.errors import BuildkitConnectionError
        from envd_kube_pod import routing

        address, ns = self.parsed, cluster.namespace
        if address.kind == "pod":
            pod = pods[0]
            if not pod.ready:
                raise BuildkitConnectionError(
                    f"pod `{pod.name}` (namespace `{ns}`) is not running: {pod.phase}"
                    + (f", {pod.reason}" if pod.reason else ""),
                    kind=ErrorKind.UNAVAILABLE,
                    hint="wait for it, or address a deployment/<name> whose pods are replaced")
            return pod
        ready = [p for p in pods if p.ready]
        if not ready:
            what = "; ".join(f"{p.name}: {p.reason or p.phase}" for p in pods) or "no pods"
            raise BuildkitConnectionError(
                f"no pods ready for `{address.kind}/{address.target}` in namespace `{ns}` "
                f"({what})", kind=ErrorKind.UNAVAILABLE if pods else ErrorKind.NOT_FOUND,
                hint="`envd bootstrap` creates and waits for a deployment/<name>")
        project = self.project or os.getcwd()
        chosen = routing.pick(project, [p.name for p in ready])
        previous = routing.remember(f"{cluster.server}/{ns}/{address}|{project}", chosen)
        self.last_notice = None
        if previous is not None:
            why = "is gone" if previous not in {p.name for p in pods} else (
                "is not ready" if previous not in {p.name for p in ready} else
                "lost the project to a new replica")
            self.last_notice = (f"kube-pod: pod `{previous}` {why}; building on `{chosen}` "
                                "(its BuildKit cache for this project starts cold)")
            print(f"notice: {self.last_notice}", file=sys.stderr, flush=True)
        return next(p for p in ready if p.name == chosen)

    def connect(self, *, timeout: float) -> Connection:
        """Reach buildkitd in the chosen pod (exec ``buildctl dial-stdio``, or port-forward)
        and speak gRPC over it. Uses the pod listing :meth:`needs_bootstrap` made, once."""
        routed: Routed | BuilderError | str | None
        with self._lock:
            routed, self._routed = self._routed, None
            pods, self._listing = self._listing, None
        self.via_keeper = False
        if routed is None and pods is None:  # with a listing, keeper_miss says why already
            routed = keeper_route(self, timeout)
        misses: list[str] = []
        for attempt in (1, 2):
            if isinstance(routed, BaseException):
                raise routed
            if routed is None:
                break
            if isinstance(routed, str):
                misses.append(routed)
                break
            kept = self.choose_pod(routed, routed.pods)
            conn = open_kept(routed, kept, timeout)
            if not isinstance(conn, str):
                self.last_pod, self.via_keeper = kept.name, True
                self.keeper_miss = "; again: ".join(misses) or None
                return conn
            # It could not bridge: the pod's end of the stream closed before it answered
            # (kube-keeper.log says why), or the keeper died. Once more through it, on a
            # fresh stream, before the direct path (~0.1 s and the client's import).
            misses.append(conn)
            routed = keeper_route(self, timeout) if attempt == 1 else None
        if misses:
            self.keeper_miss = "; again: ".join(misses)
        if self.keeper_miss and os.environ.get("ENVD_DEBUG"):
            print(f"debug: kube-pod: not through the keeper: {self.keeper_miss}",
                  file=sys.stderr, flush=True)
        with self._lock:
            cluster = self._shared()
        pod = self.choose_pod(cluster, cluster.pods(self.parsed, keep_socket=True)
                               if pods is None else pods)
        self.last_pod = pod.name
        return self._open(cluster, pod, timeout)

    def endpoint(self, pod: PodInfo) -> tuple[str | None, int | None]:
        """``(container, port)`` of buildkitd in ``pod``: port-forward to ``port`` when it is
        set, else exec ``buildctl dial-stdio`` in ``container``."""
        from envd_kube_pod.deploy import CONTAINER

        container = self.parsed.container or (CONTAINER if CONTAINER in pod.containers
                                              else None)
        transport = self.option("transport")
        port = (pod.tcp_port(container) or int(self.option("port"))
                if transport == "port-forward" else
                pod.tcp_port(container) if transport == "auto" else None)
        return container, port

    def open_stream(self, cluster: Cluster, pod: PodInfo) -> ChannelStream:
        """A new WebSocket byte stream to buildkitd in ``pod`` (:meth:`endpoint`)."""
        from envd_kube_pod.stream import open_exec, open_port_forward

        container, port = self.endpoint(pod)
        return (open_port_forward(cluster, pod.name, port) if port else
                open_exec(cluster, pod.name, container))

    def _open(self, cluster: Cluster, pod: PodInfo, timeout: float) -> Connection:
        from envd_core.buildkit.errors import BuildkitConnectionError
        from envd_core.buildkit.transport import connect_bridge, wait_ready

        last: list[ChannelStream] = []
        refused: list[BuilderError] = []
        port = self.endpoint(pod)[1]

        def dial() -> ChannelStream:
            try:
                stream = self.open_stream(cluster, pod)
            except BuilderError as exc:  # the bridge only sees a closed socket: keep why
                refused[:] = [exc]
                raise
            last[:] = [stream]
            return stream

        conn = connect_bridge(dial, target=f"kube-pod://{cluster.namespace}/{pod.name}",
                              timeout=timeout, wait=False)
        try:
            wait_ready(conn, timeout)
        except BuilderError as exc:
            conn.close()
            if refused:
                raise refused[-1] from None
            why = last[0].stderr.strip().splitlines()[-1] if last and last[0].stderr.strip() \
                else ""
            if why:
                raise BuildkitConnectionError(
                    f"BuildKit in pod `{pod.name}` does not answer: {why}",
                    kind=exc.kind or ErrorKind.UNAVAILABLE,
                    hint=(f"does buildkitd listen on plain TCP port {port} in the pod? "
                          "(transport=exec uses buildctl dial-stdio instead)" if port else
                          "is it a BuildKit image with buildctl, and buildkitd running?")) \
                    from None
            raise
        return conn

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        """Each pod's readiness, and the BuildKit version of the ready ones (never raises)."""
        from envd_core.buildkit.client import probe
        from envd_core.errors import EnvdError

        started = time.monotonic()
        try:
            cluster = self.cluster()
            pods = cluster.pods(self.parsed, keep_socket=True)
        except EnvdError as exc:
            return BuilderStatus(reachable=False, error=exc.message, error_kind=exc.kind)
        try:
            if not pods:
                return BuilderStatus(
                    reachable=False, error_kind=ErrorKind.NOT_FOUND,
                    error=f"no pods for `{self.parsed.kind}/{self.parsed.target}` in namespace "
                          f"`{cluster.namespace}` "
                          "(a build or `envd bootstrap` creates a deployment)")
            versions: dict[str, str] = {}
            found: dict[str, Any] = {}
            for pod in [p for p in pods if p.ready][:8]:
                try:
                    conn = self._open(cluster, pod, timeout)
                except EnvdError as exc:
                    versions[pod.name] = f"error: {exc.message}"
                    continue
                try:
                    found = probe(conn, timeout=timeout)
                finally:
                    conn.close()
                versions[pod.name] = str(found.get("version") or "ready")
            cells = [f"{p.name}: {versions.get(p.name) or (p.reason or p.phase)}"
                     for p in pods]
            ready = sum(1 for p in pods if p.ready)
            summary = f"{ready}/{len(pods)} pods ready ({', '.join(cells)})"
            if not found:
                return BuilderStatus(reachable=False, error_kind=ErrorKind.UNAVAILABLE,
                                     error=f"no pods ready: {summary}")
            return BuilderStatus(
                reachable=True, version=f"{found.get('version')}; {summary}",
                platforms=list(found.get("platforms") or []),
                workers=int(found.get("workers") or 0),
                latency_ms=round((time.monotonic() - started) * 1000, 1))
        finally:
            cluster.close()


@hookimpl
def envd_builder_types() -> list[type[Builder]]:
    return [KubePodBuilder]
