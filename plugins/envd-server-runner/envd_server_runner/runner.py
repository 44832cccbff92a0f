"""The ``envd-server`` runner: environments are pods of an envd-server, over its REST API.

Routes, JSON and statuses are upstream envd-server's (``/api/v1/users/<login>/environments``…).
What the API has no route for is refused in one line: commands run over SSH through the server's
gateway, not through the API (``exec``); the server has no stopped state, so ``stop`` is refused
and ``envd down`` removes, as upstream's does; pause and resume are not offered (``can_pause``
is false; upstream says "pausing/resuming environments is not supported for the runner
envd-server").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from envd_server_client.address import ServerAddress, parse_address, tls_settings
from envd_server_client.client import ApiError, ServerClient
from envd_server_client.listing import SSH_GATEWAY_PORT, listed, ssh_port
from envd_server_client.tokens import Credential, TokenStore

from envd_core.environment import (
    DEFAULT_HOST_IP,
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    ImageInfo,
    RunnerStatus,
)
from envd_core.errors import RunnerError, ValidationError
from envd_core.options import Option
from envd_core.runner import (
    EnvironmentExistsError,
    EnvironmentNotFoundError,
    Runner,
    RunnerUnsupportedError,
)

if TYPE_CHECKING:
    from pathlib import Path

    from envd_core.environments.sshconfig import SSHEntry

__all__ = ["SSH_GATEWAY_PORT", "EnvdServerRunner"]

#: How long ``create`` waits for the phase ``Running`` (the server may pull the image first).
START_TIMEOUT = 300.0
#: Upstream polls the environment once a second while it starts.
POLL_INTERVAL = 1.0


class EnvdServerRunner(Runner):
    """An envd-server (``http(s)://host:port[/path]``); ``envd login`` first."""

    name = "envd-server"
    summary = "envd-server REST API (envd login first)"
    address_help = "http(s)://host:port[/path] (empty: ENVD_SERVER_HOST or http://0.0.0.0:8080)"
    options = (
        Option("cacert", "CA certificate that signed the server's TLS certificate", kind="path"),
        Option("cert", "client certificate for servers that require one (with key)",
               kind="path"),
        Option("key", "private key of the client certificate", kind="path"),
        Option("ssh-port", "port of the server's SSH gateway on the server's host "
               f"(default {SSH_GATEWAY_PORT}, upstream's)", kind="int"),
    )
    can_manage_images = True
    can_login = True
    pulls_images = True
    # the runner's one listing, also what list_environments reads (envd_server_client.listing)
    lister = "envd_server_client.listing:list_light"

    def __init__(self, address: str | None, options: Mapping[str, str] | None = None,
                 *, context: str | None = None, tokens: TokenStore | None = None) -> None:
        super().__init__(address, options)
        #: The context whose token to use; ``None`` finds the token by server address.
        self.context = context
        self.tokens = tokens or TokenStore()
        self._server: ServerAddress | None = None

    @classmethod
    def normalize_address(cls, address: str) -> str | None:
        value = super().normalize_address(address)
        if value is None:
            return None
        return parse_address(value).display

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def server(self) -> ServerAddress:
        """The parsed address (context, ``ENVD_SERVER_HOST`` or upstream's default)."""
        if self._server is None:
            self._server = parse_address(self.address)
        return self._server

    def client(self, *, token: str | None = None) -> ServerClient:
        """A client for the server, with ``token`` (or none) in ``Authorization``."""
        tls = tls_settings(self.server, self.option_values)
        return ServerClient(self.server, tls, token=token)

    def credential(self) -> Credential:
        """The login to use: the context's, else the only one kept for this server."""
        return self.tokens.find(self.context, self.server.display)

    def _call(self, method: str, route: str, body: Any = None) -> Any:
        credential = self.credential()
        client = self.client(token=credential.token)
        user = quote(credential.login_name, safe="")
        return client.request(method, f"/users/{user}{route}", body)[1]

    def _not_found(self, name: str) -> EnvironmentNotFoundError:
        return EnvironmentNotFoundError(
            f"environment `{name}` not found on envd-server `{self.server.display}`",
            hint="list environments with `envd envs ls`",
        )

    def _environment(self, data: Any) -> Environment:
        return listed(data, self.server, self.ssh_port).to_environment(self.name)

    @property
    def ssh_port(self) -> int:
        """The SSH gateway's port: the ``ssh-port`` option, else upstream's 2222."""
        return ssh_port(self.option_values)

    def ssh_entry(self, environment: Environment, *, host: str,
                  identity_file: Path) -> SSHEntry | None:
        """Through the server's gateway, as upstream writes it for envd-server: the runner's
        host and the gateway's port, user ``<login>/<env>``, no agent forwarding, every other
        port as a ``LocalForward`` line."""
        from envd_core.environments.sshconfig import SSHEntry

        login = self.credential().login_name
        return SSHEntry(
            host=host, hostname=self.server.host, port=self.ssh_port,
            identity_file=str(identity_file), user=f"{login}/{environment.name}",
            forward_agent=False,
            local_forwards=tuple((p.host_port, "localhost", p.container_port)
                                 for p in environment.ports),
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
        body = self._create_body(spec)  # refuses what the server cannot honour, before any call
        try:
            old = self.inspect(spec.name)
        except EnvironmentNotFoundError:
            old = None
        if old is not None:
            if not replace:
                raise EnvironmentExistsError(
                    f"environment `{spec.name}` already exists on envd-server "
                    f"`{self.server.display}`",
                    hint=f"remove it first (envd down {spec.name}) or use --force",
                )
            self.remove(spec.name, force=True)
            self._wait_gone(spec.name, old)
        try:
            self._call("POST", "/environments", body)
        except ApiError as exc:
            if exc.status == 409:
                raise EnvironmentExistsError(
                    f"environment `{spec.name}` already exists on envd-server "
                    f"`{self.server.display}`: {exc.server_message}",
                    hint=f"remove it first (envd down {spec.name}) or use --force",
                ) from None
            raise
        return self._wait_running(spec.name)

    def _create_body(self, spec: EnvironmentSpec) -> dict[str, Any]:
        refused = []
        if spec.mounts:
            refused.append("host mounts (use --sync, as upstream's envd-server runner does)")
        if spec.resources.gpus is not None and spec.resources.gpus.device_ids:
            refused.append("GPU device ids (the server takes a count)")
        if spec.resources.cpu_set:
            refused.append("a cpu set")
        if spec.cap_add:
            refused.append("added capabilities")
        if spec.user:
            refused.append("a user")
        if any(p.service == "ssh" and p.host_ip != DEFAULT_HOST_IP for p in spec.ports):
            # upstream: "Failed to modify the sshd host when runner is envd-server."
            refused.append("another SSH host (--host): SSH goes through the server's gateway")
        if refused:
            raise RunnerError(
                f"environment `{spec.name}`: envd-server cannot honour {', '.join(refused)}",
                hint="drop those flags for an envd-server context",
            )
        env = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
        if spec.working_dir:
            env.append({"name": "ENVD_WORKDIR", "value": spec.working_dir})
        cmd = list(spec.entrypoint or ()) + list(spec.command or ())
        res = spec.resources
        gpus = res.gpus.count if res.gpus is not None else 0
        resource = {
            "cpu": f"{res.cpus:g}" if res.cpus else "",
            "memory": str(res.memory_bytes) if res.memory_bytes else "",
            # upstream always sends the count as a string, "0" included
            "gpu": "0" if gpus is None else str(gpus),
            "shm": f"{res.shm_size_bytes // (1024 * 1024)}Mi" if res.shm_size_bytes else "",
        }
        return {
            "name": spec.name,
            "labels": dict(spec.labels),
            "spec": {
                "owner": self.credential().login_name,
                "image": spec.image,
                "env": env,
                "cmd": cmd,
                "ports": [{"name": p.service or f"port-{p.container_port}",
                           "port": p.container_port} for p in spec.ports],
            },
            "resource": resource,
        }

    def _wait_running(self, name: str) -> Environment:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            env = self.inspect(name)
            if env.status is EnvironmentStatus.RUNNING:
                return env
            if env.status is EnvironmentStatus.EXITED or time.monotonic() > deadline:
                why = "stopped while starting" if env.status is EnvironmentStatus.EXITED else \
                    f"is not running after {START_TIMEOUT:g}s"
                with contextlib.suppress(RunnerError):
                    self.remove(name, force=True)  # leave nothing behind
                raise RunnerError(
                    f"environment `{name}` on envd-server `{self.server.display}` {why}",
                    hint="check that the server can pull the image (was it pushed?)",
                )
            time.sleep(POLL_INTERVAL)

    def _wait_gone(self, name: str, old: Environment) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                self.inspect(name)
            except EnvironmentNotFoundError:
                break
            time.sleep(POLL_INTERVAL / 4)
        if old.created is not None:
            # ids are name@created_at (seconds): make the new one differ from the old one
            while time.time() <= old.created.timestamp() + 1:
                time.sleep(0.1)

    def list_environments(self) -> list[Environment]:
        from envd_server_client.listing import environments

        credential = self.credential()
        found = environments(self.server, self.option_values, credential.login_name,
                             credential.token)
        return [item.to_environment(self.name) for item in found]

    def inspect(self, name: str) -> Environment:
        try:
            return self._environment(self._call("GET", f"/environments/{quote(name, safe='')}"))
        except ApiError as exc:
            if exc.status == 404:
                raise self._not_found(name) from None
            raise

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        self.inspect(name)  # a missing one is "not found", as for every runner
        raise RunnerUnsupportedError(
            f"runner `envd-server` cannot stop `{name}`: the server has no stopped state",
            hint=f"remove it with `envd down {name}` (upstream's down removes it too)",
        )

    def remove(self, name: str, *, force: bool = False) -> None:
        # the server deletes running environments (upstream's down does nothing else): there is
        # no stopped state to require first, so `force` changes nothing here
        try:
            self._call("DELETE", f"/environments/{quote(name, safe='')}")
        except ApiError as exc:
            if exc.status == 404:
                raise self._not_found(name) from None
            raise

    def exec(self, name: str, argv: Sequence[str], *, tty: bool = False,
             stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None,
             stderr: IO[bytes] | None = None, env: Mapping[str, str] | None = None,
             workdir: str | None = None, user: str | None = None) -> int:
        environment = self.inspect(name)
        self.require_running(environment)
        raise RunnerUnsupportedError(
            f"runner `envd-server` cannot run commands through its API in `{name}`",
            hint=f"use SSH through the server's gateway: `ssh {name}.envd`",
        )

    # -- images -------------------------------------------------------------------------------
    def images(self) -> list[ImageInfo]:
        data = self._call("GET", "/images")
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise RunnerError(f"`{self.server.display}` is not an envd-server: "
                              "the image list has no `items`")
        return [_image(item) for item in items]

    def inspect_image(self, name: str) -> ImageInfo:
        """One image's metadata (``GET /images/<name>``, the name path-escaped)."""
        try:
            return _image(self._call("GET", f"/images/{quote(name, safe='')}"))
        except ApiError as exc:
            if exc.status == 404:
                raise RunnerError(f"image `{name}` not found on envd-server "
                                  f"`{self.server.display}`") from None
            raise

    def remove_image(self, name: str, *, force: bool = False) -> None:
        raise RunnerUnsupportedError(
            f"runner `envd-server` cannot remove image `{name}`: the server has no route for it",
            hint="remove it from the registry the server pulls from",
        )

    # -- login --------------------------------------------------------------------------------
    def login(self, context: str, *, username: str | None = None, password: str | None = None,
              public_key: str | None = None) -> str:
        from envd_server_runner.login import login

        return login(self, context, username=username, password=password, public_key=public_key)

    def logout(self, context: str) -> bool:
        return self.tokens.remove(context)

    def import_login(self, context: str, *, login_name: str, token: str,
                     dry_run: bool = False) -> tuple[str, str]:
        kept = self.tokens.load(context)
        if kept is not None:
            if (kept.login_name, kept.token, kept.address) == (login_name, token,
                                                               self.server.display):
                return "unchanged", "this login is kept already"
            return "skipped", (f"context holds its own login (`{kept.login_name}`); "
                               f"`envd --context {context} logout` first to replace it")
        if not dry_run:
            self.tokens.save(Credential(context=context, address=self.server.display,
                                        login_name=login_name, token=token))
        return "imported", ""

    def status(self, *, timeout: float = 3.0) -> RunnerStatus:
        try:
            client = self.client()
            client.timeout = timeout
            client.request("GET", "/", auth=False)
        except (RunnerError, ValidationError) as exc:
            return RunnerStatus(reachable=False, error=str(exc))
        return RunnerStatus(reachable=True)


def _image(data: Any) -> ImageInfo:
    if not isinstance(data, dict):
        raise RunnerError("envd-server returned an image that is not an object")
    created = data.get("created")
    labels = {str(k): str(v) for k, v in (data.get("labels") or {}).items()}
    return ImageInfo(
        id=str(data.get("digest") or data.get("name") or ""),
        tags=(str(data["name"]),) if data.get("name") else (),
        created=(dt.datetime.fromtimestamp(created, dt.timezone.utc)
                 if isinstance(created, (int, float)) and created > 0 else None),
        size_bytes=int(data["size"]) if isinstance(data.get("size"), int) else None,
        labels=labels,
    )
