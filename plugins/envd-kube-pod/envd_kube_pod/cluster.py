"""The cluster a kube-pod context points at, through the official ``kubernetes`` client.

Configuration is resolved the way kubectl does: the ``kubeconfig`` option, else ``KUBECONFIG``
(several files merged), else ``~/.kube/config``; the kube context from the address
(``?context=``), else the ``kube-context`` option, else the kubeconfig's current one. Inside a
pod with no kubeconfig, the in-cluster service-account config is used. The namespace comes from
the address, else the ``namespace`` option, else the kube context's, else the service account's,
else ``default``. Each API call is wrapped so a failure is one line (:mod:`errors`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs

from envd_core.buildkit.errors import BuildkitConnectionError
from envd_core.errors import BuilderError, ErrorKind
from envd_kube_pod.address import Address
from envd_kube_pod.errors import api_error

T = TypeVar("T")
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Seconds one API request may take (reads are small; a stuck apiserver must not hang a build).
REQUEST_TIMEOUT = 20.0


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


def pod_info(pod: Any) -> PodInfo:
    """A :class:`PodInfo` from a ``V1Pod``."""
    status = pod.status
    conditions = {c.type: c for c in (status.conditions or [])} if status else {}
    ready = bool(conditions.get("Ready") and conditions["Ready"].status == "True")
    reason = ""
    for cs in (status.container_statuses or []) if status else []:
        waiting = cs.state.waiting if cs.state else None
        terminated = cs.state.terminated if cs.state else None
        if waiting is not None and waiting.reason:
            reason = waiting.reason
            break
        if terminated is not None:
            reason = terminated.reason or "Terminated"
            break
    scheduled = conditions.get("PodScheduled")
    if not reason and scheduled is not None and scheduled.status == "False":
        reason = scheduled.reason or "Unschedulable"
    terminating = pod.metadata.deletion_timestamp is not None
    return PodInfo(name=pod.metadata.name, phase=(status.phase if status else None) or "Unknown",
                   ready=ready and not terminating,
                   reason=("Terminating" if terminating else reason),
                   terminating=terminating,
                   containers=tuple(c.name for c in pod.spec.containers or []))


def import_client() -> None:
    """Import the ``kubernetes`` client, retrying an ImportError caused by another thread.

    ``envd context ls --status`` probes contexts in parallel threads; when the docker context's
    thread is importing ``requests`` at the same moment, this thread can meet the half-built
    module ("partially initialized module 'requests.utils'"). The other import finishes within
    moments, and a failed import leaves nothing of ours behind, so trying again is enough.
    """
    import importlib
    import time

    for attempt in range(5):
        try:
            for name in ("kubernetes.client", "kubernetes.config", "kubernetes.stream"):
                importlib.import_module(name)
            return
        except ImportError:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


class Cluster:
    """An API client for one context's cluster and namespace."""

    def __init__(self, address: Address, *, kubeconfig: str | None = None,
                 kube_context: str | None = None, namespace: str | None = None) -> None:
        import_client()
        from kubernetes import client
        from kubernetes import config as typed_config
        from kubernetes.config.config_exception import ConfigException

        config: Any = typed_config  # its loaders carry no annotations

        context = address.context or kube_context
        ns_from_config: str | None = None
        files = kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config")
                                                                  .expanduser())
        have_file = any(Path(p).expanduser().is_file() for p in files.split(os.pathsep) if p)
        try:
            if have_file:
                # Always by name: the client reads KUBECONFIG once, when it is imported.
                api = config.new_client_from_config(config_file=files, context=context)
                contexts, active = config.list_kube_config_contexts(config_file=files)
                chosen = next((c for c in contexts if c["name"] == context), active) \
                    if context else active
                ns_from_config = (chosen or {}).get("context", {}).get("namespace")
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
        self.server: str = api.configuration.host
        self.namespace: str = address.namespace or namespace or ns_from_config or "default"
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

    def call(self, verb: str, resource: str, fn: Callable[..., T], *args: Any,
             **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with a request timeout; any failure becomes one line."""
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            return fn(*args, **kwargs)
        except BuilderError:
            raise
        except Exception as exc:  # noqa: BLE001 - ApiException, urllib3 errors, socket errors
            raise api_error(exc, verb=verb, resource=resource, namespace=self.namespace,
                            server=self.server) from None

    def get_or_none(self, verb: str, resource: str, fn: Callable[..., T], *args: Any) -> T | None:
        """Like :meth:`call` for a read, but None when the object does not exist (404)."""
        try:
            return self.call(verb, resource, fn, *args)
        except BuilderError as exc:
            if exc.kind == ErrorKind.NOT_FOUND:
                return None
            raise

    def pods(self, address: Address) -> list[PodInfo]:
        """The pods ``address`` names, sorted by name (not only the ready ones)."""
        if address.kind == "pod":
            pod = self.get_or_none("get", "pods", self.core.read_namespaced_pod,
                                   address.target, self.namespace)
            if pod is None:
                raise BuildkitConnectionError(
                    f"pod `{address.target}` not found in namespace `{self.namespace}`",
                    kind=ErrorKind.NOT_FOUND,
                    hint="check the name, or address a deployment/<name> that outlives pods")
            return [pod_info(pod)]
        if address.kind == "deployment":
            dep = self.get_or_none("get", "deployments", self.apps.read_namespaced_deployment,
                                   address.target, self.namespace)
            if dep is None:
                return []
            labels = dep.spec.selector.match_labels or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        else:
            selector = address.target
        found = self.call("list", "pods", self.core.list_namespaced_pod, self.namespace,
                          label_selector=selector)
        return sorted((pod_info(p) for p in found.items), key=lambda p: p.name)

    def close(self) -> None:
        """Release the client's connection pool."""
        with contextlib.suppress(Exception):  # closing must never mask the real outcome
            self.api.close()
