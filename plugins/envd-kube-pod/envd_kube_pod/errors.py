"""One line per failure: what the cluster said, turned into an envd error with its kind.

The ``kubernetes`` client raises ``ApiException`` (an HTTP status and a ``Status`` JSON body),
urllib3 errors when nothing answers, and ``ConfigException`` when no kubeconfig is usable. The
user should read "RBAC forbids `list pods` in namespace `x`", not a 40-line traceback with the
response headers. Nothing here imports the client: it inspects the exception it is given.
"""

from __future__ import annotations

import json
from typing import Any

from envd_core.buildkit.errors import BuildkitConnectionError
from envd_core.errors import BuilderError, ErrorKind


def status_message(body: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` body (bytes, str or dict), else the text."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return body.strip().splitlines()[0] if body.strip() else ""
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or "")
    return ""


def api_error(exc: BaseException, *, verb: str, resource: str, namespace: str | None,
              server: str = "the cluster") -> BuilderError:
    """Map an exception from a client call doing ``verb resource`` to one envd error line."""
    where = f" in namespace `{namespace}`" if namespace else ""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        detail = status_message(getattr(exc, "body", None))
        if status == 403:
            return BuilderError(
                f"RBAC forbids `{verb} {resource}`{where} on {server}: {detail}",
                kind=ErrorKind.UNAVAILABLE,
                hint=f"ask for a Role granting `{verb}` on `{resource}` (docs/kube-pod.md "
                     "lists what kube-pod needs)")
        if status == 401:
            return BuilderError(
                f"{server} rejected the credentials of the kubeconfig (401 Unauthorized)",
                kind=ErrorKind.UNAVAILABLE, hint="refresh the token or pick another context")
        if status == 404:
            return BuilderError(f"{resource} not found{where}: {detail}",
                                kind=ErrorKind.NOT_FOUND)
        if status == 409:
            return BuilderError(f"`{verb} {resource}`{where} conflicts: {detail}",
                                kind=ErrorKind.CONFLICT)
        return BuilderError(f"`{verb} {resource}`{where} failed ({status}): {detail}")
    return no_cluster(exc, server)


def no_cluster(exc: BaseException, server: str) -> BuilderError:
    """Nothing usable answers at ``server`` (refused, DNS, TLS, timeout)."""
    text = str(exc)
    reason = getattr(exc, "reason", None)
    if reason is not None:
        text = str(reason)
    low = text.lower()
    kind = ErrorKind.UNAVAILABLE
    if "refused" in low:
        kind, why = ErrorKind.REFUSED, "connection refused"
    elif "name or service not known" in low or "nodename nor servname" in low or \
            "failed to resolve" in low or "temporary failure in name resolution" in low:
        kind, why = ErrorKind.DNS, "the host name does not resolve"
    elif "certificate" in low or "ssl" in low:
        kind, why = ErrorKind.TLS, text.split(":")[-1].strip() or "TLS handshake failed"
    elif "timed out" in low or "timeout" in low:
        kind, why = ErrorKind.TIMEOUT, "no answer in time"
    else:
        why = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    return BuildkitConnectionError(
        f"no cluster: cannot reach the Kubernetes API at {server} ({why})", kind=kind,
        hint="check the kubeconfig's server and that the cluster runs "
             "(--builder-opt kubeconfig=… / kube-context=…)")


def exec_refused(pod: str, namespace: str, detail: str) -> BuilderError:
    """The API server or kubelet refused the exec into ``pod``."""
    return BuildkitConnectionError(
        f"exec into pod `{pod}` (namespace `{namespace}`) refused: {detail}",
        kind=ErrorKind.UNAVAILABLE,
        hint="kube-pod runs `buildctl dial-stdio` in the pod: it needs `create pods/exec` and "
             "a BuildKit image with buildctl")
