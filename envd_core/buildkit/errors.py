"""Turn transport and gRPC failures into one-line ``BuilderError`` messages with a typed kind.

Kinds (:class:`envd_core.errors.ErrorKind`): ``REFUSED`` (nothing listens), ``DNS`` (host name
does not resolve), ``TIMEOUT`` (no answer in time), ``TLS`` (certificate trouble; the message says
which side rejected which certificate), ``NOT_BUILDKIT`` (something answers, but not BuildKit's
gRPC API), ``UNAVAILABLE`` (anything else that makes the daemon unusable). grpc is imported
lazily: classifying needs only the error object.
"""

from __future__ import annotations

from typing import Any

from envd_core.errors import BuilderError, ErrorKind

#: The kinds :func:`classify` returns.
KINDS = (
    ErrorKind.REFUSED,
    ErrorKind.DNS,
    ErrorKind.TIMEOUT,
    ErrorKind.TLS,
    ErrorKind.NOT_BUILDKIT,
    ErrorKind.UNAVAILABLE,
)


class BuildkitConnectionError(BuilderError):
    """BuildKit cannot be reached or is not BuildKit; ``kind`` is one of :data:`KINDS`."""

    def __init__(self, message: str, *, kind: ErrorKind, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, kind=kind)


def _rpc_parts(exc: BaseException) -> tuple[str, str]:
    """Return ``(code name, details)`` of a grpc.RpcError, or ``("", str(exc))``."""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            c = code()
            return (getattr(c, "name", str(c)) or "", details() or "")
        except Exception:  # noqa: BLE001 - an RpcError that is not a Call: use str()
            pass
    return ("", str(exc))


def classify(exc: BaseException, *, tls: bool = False) -> ErrorKind:
    """Return the failure kind of ``exc`` (a grpc.RpcError, OSError or anything else)."""
    code, details = _rpc_parts(exc)
    low = details.lower()
    if isinstance(exc, TimeoutError) or code == "DEADLINE_EXCEEDED":
        return ErrorKind.TIMEOUT
    if isinstance(exc, (ConnectionRefusedError, FileNotFoundError)):
        return ErrorKind.REFUSED
    if code == "UNIMPLEMENTED":
        return ErrorKind.NOT_BUILDKIT
    if any(
        s in low
        for s in (
            "dns resolution failed",
            "name or service not known",
            "dns query",
            "errors resolving",
            "domain name not found",
            "address lookup failed",
        )
    ):
        return ErrorKind.DNS
    if "connection refused" in low or "no such file or directory" in low:
        return ErrorKind.REFUSED
    if any(
        s in low
        for s in (
            "http1.x server",
            "http/1",
            "bad status line",
            "failed parsing http/2",
            "expected settings frame",
        )
    ):
        return ErrorKind.NOT_BUILDKIT
    if any(s in low for s in ("ssl", "tls", "certificate", "handshake", "tsi_", "unwrap failed",
                              "peer name", "subject alternative name",
                              "hostname verification", "custom verification")):
        return ErrorKind.TLS
    if code == "UNAVAILABLE" and tls and ("socket closed" in low or "connection reset" in low):
        # A TLS server that dislikes our (missing) client certificate just drops the connection
        # after the handshake from our point of view.
        return ErrorKind.TLS
    if code in ("UNKNOWN", "INTERNAL") and ("content-type" in low or "unexpected" in low):
        return ErrorKind.NOT_BUILDKIT
    if "timed out" in low or "timeout" in low:
        return ErrorKind.TIMEOUT
    return ErrorKind.UNAVAILABLE


def _tls_side(details: str) -> str:
    """Say which side rejected which certificate, from BoringSSL's handshake text."""
    low = details.lower()
    if "hostname verification" in low or "peer name" in low:
        return ("the server's certificate does not name the host we dialled (set `servername` "
                "to a name in its certificate)")
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        return "the server's certificate was rejected by us (wrong CA or server name)"
    if (
        "certificate_required" in low
        or "alert_handshake_failure" in low
        or "bad_certificate" in low
        or "unknown_ca" in low
        or "tsi_data_corrupted" in low
        or "unwrap failed" in low
        or "socket closed" in low
        or "connection reset" in low
    ):
        return "our client certificate was rejected or missing (the server requires mutual TLS)"
    if "wrong_version_number" in low or "record" in low:
        return "the endpoint does not speak TLS"
    return "the TLS handshake failed"


def connection_error(
    exc: BaseException, *, target: str, tls: bool = False
) -> BuildkitConnectionError:
    """Build the one-line error for a failure to use the daemon at ``target``."""
    kind = classify(exc, tls=tls)
    code, details = _rpc_parts(exc)
    detail = details.strip().splitlines()[0] if details.strip() else code or type(exc).__name__
    if kind is ErrorKind.REFUSED:
        msg = (
            f"cannot connect to BuildKit at `{target}`: connection refused or socket missing; "
            "start buildkitd or fix the address"
        )
    elif kind is ErrorKind.DNS:
        msg = (
            f"cannot connect to BuildKit at `{target}`: the host name does not resolve; "
            "fix the address"
        )
    elif kind is ErrorKind.TIMEOUT:
        msg = (
            f"BuildKit at `{target}` did not answer in time; check the daemon is running or raise "
            "`BUILDKIT_CONNECTING_TIMEOUT`"
        )
    elif kind is ErrorKind.TLS:
        msg = (
            f"TLS handshake with BuildKit at `{target}` failed: {_tls_side(details)}; "
            "check the CA, client certificate/key and server name"
        )
    elif kind is ErrorKind.NOT_BUILDKIT:
        msg = (
            f"`{target}` answers but is not a BuildKit daemon ({detail}); point the builder at "
            "buildkitd's socket or address"
        )
    elif not tls and "socket closed" in details.lower():
        msg = (
            f"BuildKit at `{target}` closed the connection without answering; if it requires "
            "TLS, give the CA and client certificate"
        )
    else:
        msg = f"BuildKit at `{target}` is unavailable: {detail}"
    return BuildkitConnectionError(msg, kind=kind)


def rpc_error_text(exc: Any) -> str:
    """The human part of a grpc.RpcError (its details), or ``str(exc)``."""
    return _rpc_parts(exc)[1] or str(exc)
