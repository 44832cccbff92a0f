"""Registry credentials for the daemon, read from the user's docker config.

Only ``Auth/Credentials`` is served: without a token authority the daemon falls back to plain
credentials and talks to the registry's token endpoint itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envd_core.errors import BuilderError

if TYPE_CHECKING:
    from envd_core.buildkit._pb import auth_pb2
    from envd_core.buildkit.session.h2serve import CallContext

CREDENTIALS_METHOD = "/moby.filesync.v1.Auth/Credentials"
# Docker Hub is asked for as registry-1.docker.io, but docker login stores it under this key.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "docker.io", "index.docker.io"})


@dataclass(frozen=True)
class Credentials:
    """A username plus password or identity token; both empty means anonymous."""

    username: str = ""
    secret: str = ""


def docker_config_path(env: Mapping[str, str] | None = None) -> str:
    """``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``."""
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def _normalize_host(key: str) -> str:
    """Reduce a config key (may be a URL) to ``host[:port]``."""
    host = key
    for prefix in ("https://", "http://"):
        host = host.removeprefix(prefix)
    return host.split("/", 1)[0]


@dataclass
class AuthProvider:
    """Answers the daemon's credential requests from a docker ``config.json``."""

    config: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_docker_config(cls, path: str | None = None) -> AuthProvider:
        """Load the docker config (missing file = no credentials; broken file = clear error)."""
        path = path or docker_config_path()
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return cls(config={}, source=path)
        except (OSError, ValueError) as exc:
            raise BuilderError(
                f"cannot read docker config `{path}`: {exc}; fix the file or set DOCKER_CONFIG"
            ) from None
        if not isinstance(data, dict):
            raise BuilderError(f"docker config `{path}` is not a JSON object; fix the file")
        return cls(config=data, source=path)

    def _auth_entries(self) -> dict[str, dict[str, Any]]:
        auths = self.config.get("auths") or {}
        return {k: v for k, v in auths.items() if isinstance(v, dict)}

    def _helper_for(self, host: str) -> str | None:
        helpers = self.config.get("credHelpers") or {}
        for key, helper in helpers.items():
            if _normalize_host(key) == host and helper:
                return str(helper)
        store = self.config.get("credsStore")
        return str(store) if store else None

    def lookup(self, host: str) -> Credentials:
        """Credentials for ``host`` (``host[:port]``, as the daemon asks)."""
        keys = {host}
        if host in DOCKER_HUB_HOSTS:
            keys |= DOCKER_HUB_HOSTS | {DOCKER_HUB_KEY}
        helper = self._helper_for(host)
        if helper:
            server = DOCKER_HUB_KEY if host in DOCKER_HUB_HOSTS else host
            creds = _run_helper(helper, server)
            if creds is not None:
                return creds
        for key, entry in self._auth_entries().items():
            if key in keys or _normalize_host(key) in keys:
                return _decode_entry(key, entry, self.source)
        return Credentials()

    def credentials(
        self, request: auth_pb2.CredentialsRequest, context: CallContext
    ) -> auth_pb2.CredentialsResponse:
        """The ``Auth/Credentials`` gRPC handler."""
        import grpc

        from envd_core.buildkit._pb import auth_pb2

        try:
            creds = self.lookup(request.Host)
        except BuilderError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return auth_pb2.CredentialsResponse(Username=creds.username, Secret=creds.secret)


def _decode_entry(key: str, entry: Mapping[str, Any], source: str) -> Credentials:
    if entry.get("identitytoken"):
        return Credentials(username="", secret=str(entry["identitytoken"]))
    raw = entry.get("auth")
    if raw:
        try:
            decoded = base64.b64decode(str(raw), validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        user, sep, password = decoded.partition(":")
        if not sep:
            raise BuilderError(
                f"docker config `{source}` has an invalid `auth` for `{key}` "
                "(expected base64 of user:password); run `docker login` again"
            )
        return Credentials(username=user, secret=password)
    if entry.get("username"):
        return Credentials(username=str(entry["username"]), secret=str(entry.get("password", "")))
    return Credentials()


def _run_helper(helper: str, server: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get``; None if it knows nothing about ``server``."""
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        raise BuilderError(
            f"credential helper `{program}` named in the docker config is not on PATH; "
            "install it or remove it from config.json"
        ) from None
    except subprocess.TimeoutExpired:
        raise BuilderError(f"credential helper `{program}` did not answer within 30s") from None
    if proc.returncode != 0:
        # Helpers print "credentials not found in native keychain" for unknown servers.
        return None
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise BuilderError(f"credential helper `{program}` printed invalid JSON") from None
    user = str(data.get("Username", ""))
    secret = str(data.get("Secret", ""))
    if user == "<token>":
        return Credentials(username="", secret=secret)
    return Credentials(username=user, secret=secret)
