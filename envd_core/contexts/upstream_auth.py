"""Upstream envd's envd-server logins (``~/.config/envd/auth``): read them, plan their import.

Upstream envd v1.3.4 keeps them beside its contexts, as a Go ``encoding/gob`` stream of one
value (checked against files the real binary wrote, see the tests)::

    EnvdAuth{Current string; Auth []AuthConfig}
    AuthConfig{Name string; JWTToken string}

``Name`` is the login name, ``JWTToken`` the identity token envd-server issued. Upstream's logins
are not tied to a server: its envd-server runner uses the *current* one for whichever context is
in force. So the import offers that login to every imported context whose runner type keeps
logins (:attr:`envd_core.runner.Runner.can_login`); the runner plugin stores it in its own
token store (:meth:`envd_core.runner.Runner.import_login`), so the core never learns where or
how. Tokens never leave :class:`UpstreamLogin`, whose ``repr`` hides them, and never reach a
report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from envd_core.contexts.upstream import UpstreamStoreError, _check_struct
from envd_core.errors import EnvdError

if TYPE_CHECKING:
    from envd_core.contexts.model import Context
    from envd_core.runner import Runner

__all__ = ["AUTH_FILE", "LoginItem", "UpstreamLogin", "plan_logins", "read_upstream_auth"]

AUTH_FILE = "auth"
_ENVD_AUTH_FIELDS = {"Current": "string", "Auth": "[]AuthConfig"}
_AUTH_CONFIG_FIELDS = {"Name": "string", "JWTToken": "string"}


@attrs.frozen(repr=False)
class UpstreamLogin:
    """One login of upstream's ``auth`` file. ``repr`` hides the token."""

    name: str
    token: str

    def __repr__(self) -> str:
        return f"UpstreamLogin(name={self.name!r}, token=***)"


@attrs.frozen
class UpstreamAuth:
    """Upstream's logins and which one it uses."""

    path: Path
    current: str
    logins: tuple[UpstreamLogin, ...]

    @property
    def current_login(self) -> UpstreamLogin | None:
        return next((login for login in self.logins if login.name == self.current), None)


def read_upstream_auth(path: Path) -> UpstreamAuth:
    """Read upstream's gob ``auth`` file; never writes it. One-line error for anything else."""
    from envd_core.contexts import gob

    where = f"upstream envd's login file `{path}`"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UpstreamStoreError(f"cannot read {where}: {exc.strerror}") from None
    try:
        stream = gob.decode(data)
        if len(stream.values) != 1:
            raise gob.GobError(f"{len(stream.values)} values; upstream writes one")
        (top,) = stream.values
        wire = _check_struct(stream, top.type_id, _ENVD_AUTH_FIELDS, "EnvdAuth")
        value: dict[str, Any] = top.value
        logins: list[UpstreamLogin] = []
        if "Auth" in value:
            slice_id = dict(wire.fields)["Auth"]
            slice_type = stream.types[slice_id]
            assert isinstance(slice_type, gob.SliceType)  # checked by _check_struct
            _check_struct(stream, slice_type.elem, _AUTH_CONFIG_FIELDS, "AuthConfig")
            logins = [UpstreamLogin(str(e.get("Name", "")), str(e.get("JWTToken", "")))
                      for e in value["Auth"]]
    except gob.GobError as exc:
        raise UpstreamStoreError(
            f"{where} is not a login file upstream envd writes ({exc})",
            hint="no login was imported; log in with `envd login` instead",
        ) from None
    return UpstreamAuth(path, str(value.get("Current", "")), tuple(logins))


@attrs.frozen
class LoginItem:
    """What importing upstream's login does for one context (never holds the token)."""

    context: str
    login_name: str
    action: str
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        data = {"context": self.context, "login_name": self.login_name, "action": self.action}
        if self.reason:
            data["reason"] = self.reason
        return data


def plan_logins(auth: UpstreamAuth, contexts: Iterable[Context],
                runner_for: Callable[[Context], Runner], *, dry_run: bool) -> list[LoginItem]:
    """Offer upstream's current login to each of ``contexts`` whose runner keeps logins.

    With ``dry_run`` the runner only says what it would do. A context that holds a login of
    its own keeps it (``skipped``); the same login again is ``unchanged``.
    """
    login = auth.current_login
    items: list[LoginItem] = []
    if login is None or not login.name or not login.token:
        return items
    for context in contexts:
        try:
            runner = runner_for(context)
        except EnvdError:
            continue  # a runner type that is not installed: the contexts report says so
        if not runner.can_login:
            continue
        try:
            action, reason = runner.import_login(context.name, login_name=login.name,
                                                 token=login.token, dry_run=dry_run)
        except EnvdError as exc:
            action, reason = "skipped", exc.message
        items.append(LoginItem(context.name, login.name, action, reason))
    return items
