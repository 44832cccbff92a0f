"""Every Docker Engine API call of the plugin, in one place, on the ``docker`` SDK.

The SDK is imported when an :class:`Engine` is first used, never at plugin import, so that
``envd context ls`` loads no Docker client. Failures become one-line ``BuilderError``\\ s that
name the engine. The attached exec stream is the exception: see :mod:`envd_docker_client.hijack`.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote

from envd_docker_client.hijack import ExecStream, request_json, start_exec

from envd_core.errors import BuilderError
from envd_docker_container.endpoint import Endpoint
from envd_docker_container.report import Reporter

#: Label keys on what the plugin creates (containers and volumes).
LABEL_OWNER = "io.envd.builder"
LABEL_FINGERPRINT = "io.envd.buildkitd.fingerprint"
LABEL_IMAGE = "io.envd.buildkitd.image"
LABEL_SECURITY = "io.envd.buildkitd.security"
LABEL_SOCKET = "io.envd.buildkitd.socket"
OWNER = "docker-container"

#: Security settings by mode; ``restricted`` is what works where ``--privileged`` is refused:
#: CAP_SYS_ADMIN for the mounts BuildKit makes, and no seccomp/AppArmor/masked /proc, which
#: would block runc from creating build-step containers inside. ``systempaths=unconfined`` is a
#: docker CLI spelling: the API takes empty ``MaskedPaths``/``ReadonlyPaths`` (RAW_HOST_CONFIG).
SECURITY: dict[str, dict[str, Any]] = {
    "privileged": {"privileged": True},
    "restricted": {
        "cap_add": ["SYS_ADMIN"],
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    },
    # rootlesskit as user 1000 with Docker's default capabilities: seccomp must allow the
    # user namespace (Docker's default profile refuses unshare(CLONE_NEWUSER) without
    # CAP_SYS_ADMIN), AppArmor the mounts inside it; an unmasked /proc lets runc mount /proc
    # for each build step (the process sandbox).
    "rootless": {
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    },
}
RAW_HOST_CONFIG: dict[str, dict[str, Any]] = {
    "privileged": {},
    "restricted": {"MaskedPaths": [], "ReadonlyPaths": []},
    "rootless": {"MaskedPaths": [], "ReadonlyPaths": []},
}


class EngineError(BuilderError):
    """The Docker Engine refused a request; ``status`` is its HTTP status (0: unreachable)."""

    def __init__(self, message: str, *, status: int = 0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class Engine:
    """A Docker Engine reached through the SDK (lazily), as one :class:`Endpoint` names it."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 60.0) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        self._api: Any = None

    # -- plumbing --------------------------------------------------------------------------
    @property
    def api(self) -> Any:
        """The SDK's low-level ``APIClient`` (created on first use; negotiates the version)."""
        if self._api is None:
            with self._errors("connect"):
                import docker

                tls: Any = False
                if self.endpoint.tls:
                    cert = None
                    if self.endpoint.cert and self.endpoint.key:
                        cert = (self.endpoint.cert, self.endpoint.key)
                    tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=self.endpoint.ca,
                                               verify=self.endpoint.verify)
                self._api = docker.APIClient(base_url=self.endpoint.host, tls=tls,
                                             version="auto", timeout=int(self._timeout))
        return self._api

    @property
    def api_version(self) -> str:
        return str(self.api.api_version)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn SDK and socket errors into one-line EngineErrors naming the engine."""
        import docker.errors

        try:
            yield
        except EngineError:
            raise
        except docker.errors.APIError as exc:
            status = exc.status_code or 0
            text = (exc.explanation or str(exc)).strip()
            raise EngineError(f"Docker Engine refused to {doing}: {text}", status=status) \
                from None
        except docker.errors.DockerException as exc:
            raise EngineError(
                f"cannot reach the Docker Engine at `{self.endpoint.host}` "
                f"({self.endpoint.source}): {_short(exc)}",
                hint="is dockerd running, and may you use its socket?",
            ) from None
        except OSError as exc:
            raise EngineError(
                f"cannot reach the Docker Engine at `{self.endpoint.host}` "
                f"({self.endpoint.source}): {exc.strerror or exc}"
            ) from None
        except Exception as exc:  # requests' ConnectionError and friends
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise EngineError(
                    f"cannot reach the Docker Engine at `{self.endpoint.host}` "
                    f"({self.endpoint.source}): {_short(exc)}"
                ) from None
            raise

    # -- containers ------------------------------------------------------------------------
    def inspect(self, name: str) -> dict[str, Any] | None:
        """The container's inspect document, or ``None`` when there is none by that name.

        A plain request, not the SDK: every build asks this (see
        :func:`envd_docker_client.hijack.request_json`).
        """
        status, body = request_json(self.endpoint, "GET", f"/containers/{quote(name)}/json")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise EngineError(f"Docker Engine refused to inspect container `{name}`: "
                              f"{_message(body)}", status=status)
        return body

    def create(self, name: str, *, image: str, entrypoint: list[str], command: list[str],
               labels: Mapping[str, str], network: str | None, volume: str | None,
               state_dir: str, security: str) -> str:
        """Create (not start) the BuildKit container; returns its id."""
        with self._errors(f"create container `{name}`"):
            host_config = self.api.create_host_config(
                network_mode=network,
                binds={volume: {"bind": state_dir, "mode": "rw"}} if volume else None,
                init=False,
                **SECURITY[security],
            )
            host_config.update(RAW_HOST_CONFIG[security])
            created = self.api.create_container(
                image=image, name=name, entrypoint=entrypoint, command=command,
                labels=dict(labels), host_config=host_config, detach=True,
            )
            return str(created["Id"])

    def put_files(self, container: str, files: Mapping[str, bytes], *, owner: int = 0) -> None:
        """Write ``files`` (absolute in-container paths) into a created container; they and
        their new directories belong to uid/gid ``owner``."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            dirs: set[str] = set()
            for path in sorted(files):
                parts = path.strip("/").split("/")
                for i in range(1, len(parts)):
                    d = "/".join(parts[:i])
                    if d not in dirs:
                        dirs.add(d)
                        info = tarfile.TarInfo(d)
                        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                        info.uid = info.gid = owner
                        tar.addfile(info)
                data = files[path]
                info = tarfile.TarInfo("/".join(parts))
                info.size, info.mtime = len(data), int(time.time())
                info.mode = 0o600 if path.endswith("key.pem") else 0o644
                info.uid = info.gid = owner
                tar.addfile(info, io.BytesIO(data))
        with self._errors(f"copy the BuildKit config into `{container}`"):
            self.api.put_archive(container, "/", buf.getvalue())

    def start(self, container: str) -> None:
        with self._errors(f"start container `{container}`"):
            self.api.start(container)

    def unpause(self, container: str) -> None:
        with self._errors(f"unpause container `{container}`"):
            self.api.unpause(container)

    def stop(self, container: str, *, timeout: int = 10) -> None:
        with self._errors(f"stop container `{container}`"):
            self.api.stop(container, timeout=timeout)

    def remove(self, container: str) -> None:
        """Force-remove; a container already gone is fine."""
        with self._errors(f"remove container `{container}`"):
            import docker.errors

            try:
                self.api.remove_container(container, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if "already in progress" not in str(exc.explanation or ""):
                    raise

    def logs_tail(self, container: str, lines: int = 5) -> str:
        """The last log lines (best effort, for error messages)."""
        try:
            with self._errors("read logs"):
                raw = self.api.logs(container, tail=lines)
        except BuilderError:
            return ""
        return bytes(raw).decode("utf-8", "replace").strip()

    # -- exec ------------------------------------------------------------------------------
    def exec_stream(self, container: str, argv: list[str], *, timeout: float) -> ExecStream:
        """Run ``argv`` in the container with its stdio as a byte stream (no TTY).

        Plain requests, not the SDK: this runs for every gRPC connection of every build."""
        status, body = request_json(
            self.endpoint, "POST", f"/containers/{quote(container)}/exec",
            {"AttachStdin": True, "AttachStdout": True, "AttachStderr": True, "Tty": False,
             "Cmd": list(argv)}, timeout=timeout)
        if status != 201 or not isinstance(body, dict) or "Id" not in body:
            raise EngineError(f"Docker Engine refused to exec in container `{container}`: "
                              f"{_message(body)}", status=status)
        return start_exec(self.endpoint, str(body["Id"]), api_version="", timeout=timeout)

    # -- images ----------------------------------------------------------------------------
    def image_id(self, ref: str) -> str | None:
        """The local image id of ``ref``, or ``None`` if the engine does not have it."""
        with self._errors(f"inspect image `{ref}`"):
            import docker.errors

            try:
                return str(self.api.inspect_image(ref)["Id"])
            except docker.errors.NotFound:
                return None

    def pull(self, ref: str, report: Reporter) -> str:
        """Pull ``ref``, reporting progress at most once a second; returns the image id."""
        layers: dict[str, tuple[int, int]] = {}
        done: set[str] = set()
        last = 0.0
        with self._errors(f"pull image `{ref}`"):
            for event in self.api.pull(ref, stream=True, decode=True):
                if event.get("error"):
                    raise EngineError(f"cannot pull image `{ref}`: {event['error']}")
                layer = event.get("id")
                status = str(event.get("status", ""))
                detail = event.get("progressDetail") or {}
                if layer and detail.get("total"):
                    layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
                if layer and status in ("Pull complete", "Already exists"):
                    done.add(layer)
                now = time.monotonic()
                if now - last >= 1.0 and layers:
                    last = now
                    have = sum(c for c, _ in layers.values())
                    total = sum(t for _, t in layers.values())
                    report(f"pulling {ref}: {len(done)} layers done, "
                           f"{have / 1e6:.1f}/{total / 1e6:.1f} MB")
        found = self.image_id(ref)
        if found is None:
            raise EngineError(f"pulled `{ref}`, but the engine does not list it")
        return found

    # -- volumes ---------------------------------------------------------------------------
    def volume_labels(self, name: str) -> dict[str, str] | None:
        """Labels of volume ``name`` (``{}`` if unlabelled), ``None`` if it does not exist."""
        with self._errors(f"inspect volume `{name}`"):
            import docker.errors

            try:
                return dict(self.api.inspect_volume(name).get("Labels") or {})
            except docker.errors.NotFound:
                return None

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        with self._errors(f"create volume `{name}`"):
            self.api.create_volume(name=name, labels=dict(labels))

    def remove_volume(self, name: str) -> None:
        with self._errors(f"remove volume `{name}`"):
            import docker.errors

            with suppress(docker.errors.NotFound):
                self.api.remove_volume(name)


def _message(body: object) -> str:
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body or "no answer")[:300]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
