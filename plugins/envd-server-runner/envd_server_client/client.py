"""A small HTTP client for envd-server's REST API (``/api/v1``), on the standard library.

The transport is :mod:`envd_core.httplite` (one request per connection over ``socket`` and
``ssl``) rather than ``http.client``, which imports the ``email`` package: ~10 ms of the
~36 ms upstream's whole ``envd envs ls`` takes, and ``envs ls`` goes through this client on its
fast path (:func:`envd_server_client.listing.list_light`).

It speaks upstream's wire protocol: JSON bodies with ``Content-Type: application/json`` and the
identity token as the raw value of ``Authorization`` (no ``Bearer`` prefix, as upstream's client
sends and upstream's server expects). Every failure becomes one :class:`RunnerError` line: the
server unreachable, TLS refused (naming which side rejected which certificate), 401, 404, 409, a
server that is not an envd-server.
"""

from __future__ import annotations

from envd_core.errors import RunnerError
from envd_core.jsonread import loads

TYPE_CHECKING = False  # on the fast path of `envd envs ls`: no typing
if TYPE_CHECKING:
    from typing import Any

    from envd_server_client.address import ServerAddress, TLSSettings

__all__ = ["ApiError", "ServerClient"]

#: Seconds for connecting and for each response.
DEFAULT_TIMEOUT = 30.0
_LOGIN_HINT = "log in again with `envd login`"


class ApiError(RunnerError):
    """The server answered with an error status; ``status`` and ``message`` say which."""

    def __init__(self, message: str, *, status: int, server_message: str,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.server_message = server_message


class ServerClient:
    """Requests against one envd-server; a fresh connection per request (no shared state)."""

    def __init__(self, address: ServerAddress, tls: TLSSettings | None, *,
                 token: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.tls = tls
        self.token = token
        self.timeout = timeout

    @property
    def where(self) -> str:
        """The server as messages name it (with the scheme really used)."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.address.hostport}{self.address.prefix}"

    def request(self, method: str, route: str, body: Any = None, *,
                auth: bool = True, timeout: float | None = None) -> tuple[int, Any]:
        """Send ``method`` to ``/api/v1<route>``; return (status, decoded JSON) for 2xx.

        Error statuses raise :class:`ApiError`; transport and TLS failures :class:`RunnerError`.
        """
        status, raw = self._send(method, route, body, auth=auth, timeout=timeout)
        if status >= 400:
            raise self._api_error(status, raw, method, route)
        if not raw.strip():
            return status, {}
        try:
            return status, loads(raw.decode("utf-8"))
        except ValueError:
            raise self._not_envd_server(
                f"{method} {route} answered {status} with no JSON") from None

    # -- transport ----------------------------------------------------------------------------
    def _send(self, method: str, route: str, body: Any, *, auth: bool,
              timeout: float | None) -> tuple[int, bytes]:
        import _socket  # socket.gaierror's own module (socket.py costs more than a listing)

        from envd_core import httplite

        headers = {"Accept": "application/json", "User-Agent": "envd-python"}
        payload = None
        if body is not None:
            import json  # a request body; listings send none

            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth and self.token:
            headers["Authorization"] = self.token  # raw JWT: upstream's server wants no prefix
        limit = self.timeout if timeout is None else timeout
        path = f"{self.address.prefix}/api/v1{route}"
        port = self.address.port
        default_port = 443 if self.tls is not None else 80
        host_header = self.address.hostport if port != default_port else (
            f"[{self.address.host}]" if ":" in self.address.host else self.address.host)
        try:
            # ssl is imported only for a TLS server (it costs more than a plain listing)
            tls = self.tls.context() if self.tls is not None else None
            sock = httplite.connect_tcp(self.address.host, port, limit, tls)
            answer = httplite.request(sock, method, path, host=host_header, headers=headers,
                                      body=payload)
            return answer.status, answer.body
        except httplite.ProtocolError as exc:
            if self.tls is None:
                raise RunnerError(
                    f"`{self.where}` closed the connection without an HTTP answer "
                    f"({_kind(exc)})",
                    hint="if the server speaks TLS, use an https:// runner address",
                ) from None
            raise self._tls_error(exc) from None
        except ConnectionResetError as exc:
            if self.tls is None:
                raise RunnerError(
                    f"`{self.where}` closed the connection without an HTTP answer "
                    f"({type(exc).__name__})",
                    hint="if the server speaks TLS, use an https:// runner address",
                ) from None
            raise self._tls_error(exc) from None
        except _socket.gaierror as exc:
            raise RunnerError(
                f"cannot reach envd-server at `{self.where}`: unknown host "
                f"`{self.address.host}` ({exc.strerror})",
                hint="check the context's runner address (envd context inspect)",
            ) from None
        except TimeoutError:
            raise RunnerError(
                f"envd-server at `{self.where}` did not answer within {limit:g}s",
                hint="check that the server runs and the address is right",
            ) from None
        except OSError as exc:
            if self.tls is not None:
                import ssl

                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise self._server_cert_rejected(exc) from None
                if isinstance(exc, ssl.SSLError):
                    raise self._tls_error(exc) from None
            raise RunnerError(
                f"cannot reach envd-server at `{self.where}`: "
                f"{exc.strerror or type(exc).__name__}",
                hint="start the server or fix the runner address "
                     "(envd context update --runner-address ...)",
            ) from None

    # -- errors -------------------------------------------------------------------------------
    def _api_error(self, status: int, raw: bytes, method: str, route: str) -> RunnerError:
        message = _server_message(raw)
        if message is None:
            # every envd-server error is its error JSON; anything else is some other service
            return self._not_envd_server(f"{method} {route} answered {status} without "
                                         "envd-server's error JSON")
        if status == 401:
            return ApiError(f"envd-server at `{self.where}` refused the request "
                            f"(401 Unauthorized): {message}", status=status,
                            server_message=message, hint=_LOGIN_HINT)
        if status == 409:
            return ApiError(f"envd-server at `{self.where}` reports a conflict (409): {message}",
                            status=status, server_message=message)
        if status == 404:
            return ApiError(f"envd-server at `{self.where}`: not found (404): {message}",
                            status=status, server_message=message)
        return ApiError(f"envd-server at `{self.where}` failed ({status}): {message}",
                        status=status, server_message=message)

    def _not_envd_server(self, detail: str) -> RunnerError:
        return RunnerError(
            f"`{self.where}` is not an envd-server: {detail}",
            hint="point the context's runner address at an envd-server (http(s)://host:port)",
        )

    def _server_cert_rejected(self, exc: Any) -> RunnerError:
        source = self.tls.source if self.tls else "https address"
        ca = (self.tls.cacert if self.tls else None) or "the system trust store"
        return RunnerError(
            f"TLS: envd rejected the certificate of envd-server `{self.where}`: "
            f"{exc.verify_message or exc.reason} (verified against {ca}, from {source})",
            hint="pass the CA that signed the server's certificate: "
                 "--runner-opt cacert=/path/ca.pem",
        )

    def _tls_error(self, exc: BaseException) -> RunnerError:
        reason = str(getattr(exc, "reason", "") or exc)
        sent = self.tls.cert if self.tls and self.tls.cert else None
        lowered = reason.lower()
        if "wrong_version_number" in lowered or "record_layer_failure" in lowered:
            return RunnerError(
                f"TLS: `{self.where}` does not speak TLS ({reason})",
                hint="use an http:// runner address for a plain-HTTP server",
            )
        # TLS 1.3 verifies the client after the client's handshake ends: a refusal arrives as
        # an alert or, from servers that just hang up, as an EOF on the first read
        if any(word in lowered for word in ("alert", "certificate", "eof")) or not reason:
            if sent:
                what = f"envd's client certificate `{sent}`"
            else:
                what = "the connection: it requires a client certificate and envd sent none"
            return RunnerError(
                f"TLS: envd-server `{self.where}` rejected {what} ({reason or 'reset'})",
                hint="give a certificate the server's CA signed: "
                     "--runner-opt cert=/path/cert.pem --runner-opt key=/path/key.pem",
            )
        return RunnerError(f"TLS with envd-server `{self.where}` failed: {reason}")


def _kind(exc: BaseException) -> str:
    """What went wrong, named as ``http.client`` named it (``RemoteDisconnected`` for a
    connection closed before any answer, ``BadStatusLine`` for an answer that is not HTTP)."""
    return "RemoteDisconnected" if "without an HTTP answer" in str(exc) else "BadStatusLine"


def _server_message(raw: bytes) -> str | None:
    """The ``message`` of envd-server's error JSON, ``None`` when the body is not one."""
    try:
        data = loads(raw.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(data, dict) or "message" not in data:
        return None
    return " ".join(str(data["message"]).split()) or "(no message)"
