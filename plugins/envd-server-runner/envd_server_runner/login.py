"""``envd login`` against envd-server: register or log in, upload the SSH key, keep the token.

Upstream's flow: with a password, ``POST /login``; without one, the name defaults to
``<user>-<hostname>``, ``POST /register`` (a 409 "exists" is fine) and then ``/login``. The public
key goes to ``POST /users/<login>/keys`` as ``default`` (409 fine). Unlike upstream, a new token
always replaces the old one for that context (upstream keeps a stale token when the name exists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from envd_server_client.client import ApiError
from envd_server_client.tokens import Credential

from envd_core.errors import RunnerError

if TYPE_CHECKING:
    from envd_server_runner.runner import EnvdServerRunner

__all__ = ["default_login_name", "login"]


def default_login_name() -> str:
    """Upstream's default: ``<user>-<hostname>``."""
    import getpass
    import socket

    return f"{getpass.getuser()}-{socket.gethostname()}"


def login(runner: EnvdServerRunner, context: str, *, username: str | None,
          password: str | None, public_key: str | None) -> str:
    """Log in (registering first when no password is given); return the server's status."""
    client = runner.client()
    name = username or default_login_name()
    body = {"login_name": name, "password": password or ""}
    if password is None:
        try:
            client.request("POST", "/register", body, auth=False)
        except ApiError as exc:
            if exc.status != 409:  # 409: the user exists already; log in below
                raise
    try:
        _, answer = client.request("POST", "/login", body, auth=False)
    except ApiError as exc:
        if exc.status == 401:
            raise RunnerError(
                f"login as `{name}` at envd-server `{client.where}` failed: "
                f"{exc.server_message}",
                hint="check the user name and password (-u/-p)",
            ) from None
        raise
    token = _field(answer, "identity_token", client.where)
    login_name = str(answer.get("login_name") or name)
    if public_key:
        client.token = token
        try:
            client.request("POST", f"/users/{quote(login_name, safe='')}/keys",
                           {"name": "default", "public_key": public_key})
        except ApiError as exc:
            if exc.status != 409:  # 409: the key `default` is registered already
                raise
    runner.tokens.save(Credential(context=context, address=runner.server.display,
                                  login_name=login_name, token=token))
    return str(answer.get("status") or "Login succeeded")


def _field(answer: Any, key: str, where: str) -> str:
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value:
        raise RunnerError(f"`{where}` is not an envd-server: its login answer has no `{key}`")
    return value
