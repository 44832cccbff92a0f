"""The ``docker`` runner: environments are containers of a Docker daemon (the docker SDK)."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from envd_docker_client.client import DEFAULT_TIMEOUT, docker_errors, docker_host, open_client

from envd_core.environment import (
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    ImageInfo,
    RunnerStatus,
)
from envd_core.errors import EnvdError, RunnerError, ValidationError
from envd_core.runner import EnvironmentExistsError, EnvironmentNotFoundError, Runner
from envd_docker_runner.mapping import (
    HOST_KEY_PATH,
    LABEL_NAME,
    container_config,
    host_config,
    to_environment,
    with_free_ports,
)

if TYPE_CHECKING:
    import docker

__all__ = ["DockerRunner"]

#: How long ``create`` waits for the container to be running before giving up.
START_TIMEOUT = 30.0


class DockerRunner(Runner):
    """A Docker Engine, local or remote.

    The address is the daemon (``unix:///var/run/docker.sock``, ``tcp://host:2375``); empty means
    ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``) or the default socket.
    """

    name = "docker"
    summary = "Docker Engine (DOCKER_HOST or the local socket)"
    preload = ("docker", "docker.errors", "docker.types", "envd_docker_client.exec",
               "envd_docker_client.images")
    address_help = "unix:///path/docker.sock or tcp://host:port (empty: DOCKER_HOST)"
    can_load_images = True
    can_push_images = True
    can_manage_images = True
    can_start = True
    can_pause = True
    can_show_logs = True
    can_list_processes = True
    supports_tty = True
    supports_mounts = True
    supports_gpus = True
    accepts_host_key = True
    lister = "envd_docker_listing:list_light"

    def __init__(self, address: str | None, options: Mapping[str, str] | None = None) -> None:
        super().__init__(address, options)
        self._client: docker.DockerClient | None = None
        #: Image inspects of :meth:`find_image`, by reference (``create`` reads the user).
        self._image_rows: dict[str, dict[str, Any]] = {}

    @classmethod
    def normalize_address(cls, address: str) -> str | None:
        value = super().normalize_address(address)
        if value is not None and not value.startswith(("unix://", "tcp://")):
            raise ValidationError(
                f"runner `docker` address must be unix:///path or tcp://host:port, got `{address}`"
            )
        return value

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """The daemon this runner talks to."""
        return docker_host(self.address)

    def client(self) -> docker.DockerClient:
        """A docker SDK client for :attr:`host` (one line :class:`RunnerError` if unreachable).

        Opened on first use and kept: it negotiates the API version with one request.
        """
        if self._client is None:
            self._client = open_client(self.address)
        return self._client

    def _inspect_raw(self, name: str) -> dict[str, Any]:
        import docker.errors

        client = self.client()
        try:
            with docker_errors(self.host, f"inspect `{name}`"):
                attrs: dict[str, Any] = client.api.inspect_container(name)
        except docker.errors.NotFound:
            raise self._not_found(name) from None
        if LABEL_NAME not in ((attrs.get("Config") or {}).get("Labels") or {}):
            # a container envd did not create is not an environment: never touch it
            raise self._not_found(name)
        return attrs

    def _not_found(self, name: str) -> EnvironmentNotFoundError:
        return EnvironmentNotFoundError(
            f"environment `{name}` not found in the Docker daemon at `{self.host}`",
            hint="list environments with `envd envs ls`",
        )

    def _call(self, name: str, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an API call on environment ``name``; NotFound becomes "environment not found"."""
        import docker.errors

        try:
            with docker_errors(self.host, f"{what} `{name}`"):
                return call(*args, **kwargs)
        except docker.errors.NotFound:
            raise self._not_found(name) from None

    # -- lifecycle ----------------------------------------------------------------------------
    def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
        """Create and start ``spec``: create, (host key,) start and one inspect when the name is
        free; an existing environment is only looked at when Docker refuses the name."""
        import docker.errors

        api = self.client().api
        if self.host.startswith("unix://"):
            spec = with_free_ports(spec)  # a local daemon: its host ports are ours
        copy_key = False
        if spec.host_key:
            spec, copy_key = self._host_key_mount(spec)
        try:
            container_id = self._create_container(spec)
        except EnvironmentExistsError as taken:
            try:
                existing = self._inspect_raw(spec.name)
            except EnvironmentNotFoundError:
                raise taken from None  # a container envd did not make: never replace it
            if not replace:
                raise EnvironmentExistsError(
                    f"environment `{spec.name}` already exists in the Docker daemon at "
                    f"`{self.host}`",
                    hint="remove it first (envd down) or replace it (--force)",
                ) from None
            self._call(spec.name, "remove", api.remove_container, existing["Id"], force=True,
                       v=True)
            container_id = self._create_container(spec)
        try:
            if copy_key:
                self._put_host_key(container_id, spec)
            attrs = self._start(spec.name, container_id)
        except BaseException:
            # leave nothing half-made behind: a container that cannot start is useless
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True)
            raise
        return to_environment(attrs, self.name)

    def _create_container(self, spec: EnvironmentSpec) -> str:
        """``POST /containers/create``; a taken name is :class:`EnvironmentExistsError`."""
        import docker.errors

        api = self.client().api
        with docker_errors(self.host, f"create `{spec.name}`"):
            try:
                created = api.create_container(
                    **container_config(spec),
                    host_config=api.create_host_config(**host_config(spec)),
                )
            except docker.errors.ImageNotFound:
                raise RunnerError(
                    f"image `{spec.image}` is not in the Docker daemon at `{self.host}`",
                    hint="build it with `envd build` (or docker pull it) first",
                ) from None
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    raise EnvironmentExistsError(
                        f"a container named `{spec.name}` already exists at `{self.host}`",
                        hint="pick another name or remove that container",
                    ) from None
                raise
        return str(created["Id"])

    def _host_key_mount(self, spec: EnvironmentSpec) -> tuple[EnvironmentSpec, bool]:
        """``spec`` with its host key bind-mounted read-only when the daemon can read the file
        as the SSH server's user: a local, system dockerd (its socket owned by root) and a
        container user that is root or owns the file. Else ``(spec, True)``: copy it in before
        the start (:meth:`_put_host_key`), which worked everywhere but cost ~0.25 s here (the
        daemon mounts and unmounts the container's filesystem for it)."""
        import os

        import attrs

        from envd_core.environment import Mount

        assert spec.host_key is not None
        owner = _numeric_owner(spec.user or self._image_user(spec.image))
        try:
            local = self.host.startswith("unix://") and \
                os.stat(self.host[len("unix://"):]).st_uid == 0
            key_uid = os.stat(spec.host_key).st_uid
        except OSError:
            return spec, True
        if not local or owner is None or owner[0] not in (0, key_uid):
            return spec, True
        mount = Mount(source=spec.host_key, target=HOST_KEY_PATH, read_only=True)
        return attrs.evolve(spec, mounts=(*spec.mounts, mount)), False

    def _put_host_key(self, container_id: str, spec: EnvironmentSpec) -> None:
        """Copy the host key into the created container (before it starts), owned by the user
        its SSH server runs as. A copy, not a bind mount, so a remote daemon works too."""
        import io
        import tarfile

        assert spec.host_key is not None
        try:
            data = open(spec.host_key, "rb").read()  # noqa: SIM115 - a few hundred bytes
        except OSError as exc:
            raise RunnerError(f"cannot read the host key `{spec.host_key}`: {exc.strerror}") \
                from None
        owner = _numeric_owner(spec.user or self._image_user(spec.image))
        info = tarfile.TarInfo(HOST_KEY_PATH.rsplit("/", 1)[1])
        info.size = len(data)
        info.mtime = int(time.time())
        # a user given by name: its uid is only known inside the image, so the key is left
        # readable there (every process of a dev environment is that one user's anyway)
        info.uid, info.gid = owner or (0, 0)
        info.mode = 0o400 if owner else 0o444
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            tar.addfile(info, io.BytesIO(data))
        self._call(spec.name, "copy the host key into", self.client().api.put_archive,
                   container_id, HOST_KEY_PATH.rsplit("/", 1)[0], buf.getvalue())

    def _image_user(self, ref: str) -> str:
        """The ``User`` of image ``ref`` (the inspect :meth:`find_image` made, if any)."""
        row = self._image_rows.get(ref)
        if row is None:
            import docker.errors

            try:
                with docker_errors(self.host, f"inspect the image `{ref}`"):
                    row = self.client().api.inspect_image(ref)  # type: ignore[no-untyped-call]
            except docker.errors.NotFound:
                return ""
        return str(((row or {}).get("Config") or {}).get("User") or "")

    def _start(self, name: str, container_id: str) -> dict[str, Any]:
        """Start the container and return its inspect once it runs (normally the first one:
        ``POST /start`` returns when the process runs)."""
        import docker.errors

        api = self.client().api
        with docker_errors(self.host, f"start `{name}`"):
            try:
                api.start(container_id)
            except docker.errors.APIError as exc:
                # includes a 404 for a start whose device driver or mount source is missing
                raise self._explain_start_failure(name, exc) from None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            attrs: dict[str, Any] = self._call(name, "inspect", api.inspect_container,
                                               container_id)
            status = EnvironmentStatus.parse((attrs.get("State") or {}).get("Status"))
            if status is EnvironmentStatus.RUNNING:
                return attrs
            if status in (EnvironmentStatus.EXITED, EnvironmentStatus.DEAD):
                tail = api.logs(container_id, tail=3).decode("utf-8", "replace").strip()
                code = (attrs.get("State") or {}).get("ExitCode")
                detail = f": {tail.splitlines()[-1]}" if tail else ""
                raise RunnerError(
                    f"environment `{name}` exited at once with code {code}{detail}",
                    hint="check the image's command (docker logs shows its output)",
                )
            if time.monotonic() > deadline:
                raise RunnerError(f"environment `{name}` did not start in {START_TIMEOUT:.0f}s")
            time.sleep(0.05)

    def _explain_start_failure(self, name: str, exc: BaseException) -> RunnerError:
        lines = str(getattr(exc, "explanation", None) or exc).strip().splitlines()
        text = lines[0] if lines else type(exc).__name__
        lowered = text.lower()
        if "could not select device driver" in lowered:
            return RunnerError(
                f"environment `{name}` asks for GPUs, but the Docker daemon at `{self.host}` has "
                f"no GPU runtime: {text}",
                hint="install the NVIDIA Container Toolkit on that host, or drop the GPU request",
            )
        if "port is already allocated" in lowered or "address already in use" in lowered:
            return RunnerError(
                f"environment `{name}`: a requested host port is already in use: {text}",
                hint="choose another host port, or leave it empty for a free one",
            )
        return RunnerError(f"environment `{name}` failed to start: {text}")

    def list_environments(self) -> list[Environment]:
        # the one listing of this runner (`envs ls` calls envd_docker_listing.list_light): one
        # request, read with the standard library; a transport it does not speak: the SDK
        from envd_docker_listing import Unsupported, containers, listed

        try:
            summaries = containers(self.host)
        except Unsupported:
            with docker_errors(self.host, "list containers"):
                summaries = self.client().api.containers(all=True, filters={"label": LABEL_NAME})
        return sorted((listed(s).to_environment(self.name) for s in summaries),
                      key=lambda env: env.name)

    def inspect(self, name: str) -> Environment:
        return to_environment(self._inspect_raw(name), self.name)

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        attrs = self._inspect_raw(name)
        self._call(name, "stop", self.client().api.stop, attrs["Id"], timeout=int(timeout))

    def remove(self, name: str, *, force: bool = False) -> None:
        environment = self.inspect(name)
        if not force and environment.status in (
            EnvironmentStatus.RUNNING, EnvironmentStatus.PAUSED, EnvironmentStatus.RESTARTING
        ):
            raise RunnerError(
                f"environment `{name}` is {environment.status.value}: stop it first, "
                "or remove it with force"
            )
        self._call(name, "remove", self.client().api.remove_container, environment.id,
                   force=force, v=True)

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        tty: bool = False,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
    ) -> int:
        from envd_docker_client.exec import run_exec

        environment = self.inspect(name)
        self.require_running(environment)
        return run_exec(self.client(), self.host, environment.id, argv, tty=tty, stdin=stdin,
                        stdout=stdout, stderr=stderr, env=env, workdir=workdir, user=user)

    # -- optional lifecycle -------------------------------------------------------------------
    def start(self, name: str) -> Environment:
        attrs = self._inspect_raw(name)
        return to_environment(self._start(name, attrs["Id"]), self.name)

    def pause(self, name: str) -> None:
        self._call(name, "pause", self.client().api.pause, self._inspect_raw(name)["Id"])

    def resume(self, name: str) -> None:
        self._call(name, "resume", self.client().api.unpause, self._inspect_raw(name)["Id"])

    def logs(
        self, name: str, *, follow: bool = False, tail: int | None = None
    ) -> Iterator[bytes]:
        container = self._inspect_raw(name)["Id"]
        stream = self._call(name, "read the logs of", self.client().api.logs, container,
                            stream=True, follow=follow,
                            tail="all" if tail is None else int(tail))
        with docker_errors(self.host, f"read the logs of `{name}`"):
            yield from stream

    def top(self, name: str) -> tuple[list[str], list[list[str]]]:
        result = self._call(name, "list the processes of", self.client().api.top,
                            self._inspect_raw(name)["Id"])
        rows = [list(row) for row in result.get("Processes") or []]
        return list(result.get("Titles") or []), rows

    # -- images -------------------------------------------------------------------------------
    def load_image(self, tarball: IO[bytes]) -> list[str]:
        from envd_docker_client.images import load_image

        return load_image(self.client(), self.host, tarball)

    def push_image(self, name: str) -> str | None:
        from envd_docker_client.images import push_image

        return push_image(self.client(), self.host, name)

    def images(self) -> list[ImageInfo]:
        with docker_errors(self.host, "list images"):
            rows = self.client().api.images()
        return [
            ImageInfo(
                id=str(row.get("Id", "")),
                tags=tuple(t for t in row.get("RepoTags") or () if t != "<none>:<none>"),
                created=dt.datetime.fromtimestamp(int(row["Created"]), tz=dt.timezone.utc)
                if row.get("Created") else None,
                size_bytes=row.get("Size"),
                labels=row.get("Labels") or {},
            )
            for row in rows
        ]

    def find_image(self, ref: str) -> ImageInfo | None:
        # one inspect instead of listing every image (GET /images/json takes seconds on a busy
        # daemon, and `up` asks before every start)
        import docker.errors

        try:
            with docker_errors(self.host, f"inspect the image `{ref}`"):
                row: dict[str, Any] = self.client().api.inspect_image(ref)  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            return None
        self._image_rows[ref] = row
        return ImageInfo(
            id=str(row.get("Id", "")),
            tags=tuple(row.get("RepoTags") or ()),
            created=_parse_created(row.get("Created")),
            size_bytes=row.get("Size"),
            labels=(row.get("Config") or {}).get("Labels") or {},
        )

    def remove_image(self, name: str, *, force: bool = False) -> None:
        import docker.errors

        try:
            with docker_errors(self.host, f"remove the image `{name}`"):
                self.client().api.remove_image(name, force=force)
        except docker.errors.NotFound:
            raise RunnerError(
                f"image `{name}` is not in the Docker daemon at `{self.host}`"
            ) from None

    # -- the runner itself --------------------------------------------------------------------
    def status(self, *, timeout: float = 3.0) -> RunnerStatus:
        """Reachable, with the engine's version: the ``GET /version`` that opens the runner's
        client (kept for the calls that follow, so ``up`` asks the daemon once)."""
        from envd_docker_client.images import engine_version

        try:
            if self._client is None:
                client = open_client(self.address, timeout=timeout)
                client.api.timeout = int(DEFAULT_TIMEOUT)  # the probe's limit, not the calls'
                self._client = client
            return RunnerStatus(reachable=True,
                                version=f"dockerd {engine_version(self._client, self.host)}")
        except EnvdError as exc:  # unreachable, or a DOCKER_HOST that is not an address
            return RunnerStatus(reachable=False, error=str(exc))


def _numeric_owner(user: str) -> tuple[int, int] | None:
    """``(uid, gid)`` of a container ``User`` given as numbers (``1000:1000``, ``0``)."""
    uid, _, gid = user.partition(":")
    if not uid:
        return (0, 0)  # no User: root
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return None
    return int(uid), int(gid or 0)


def _parse_created(text: str | None) -> dt.datetime | None:
    """``Created`` of an image inspect (RFC 3339 with nanoseconds)."""
    from envd_docker_runner.mapping import _parse_time

    return _parse_time(text)
