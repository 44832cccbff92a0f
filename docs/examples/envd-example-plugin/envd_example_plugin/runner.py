"""The runner type ``example-docker-cli``: environments as containers, driven by the ``docker`` CLI.

It shows how a third party writes a runner without any SDK: every call is one ``docker``
command run with :mod:`subprocess`, its JSON output turned into envd's records. The address is
what ``docker -H`` takes (``unix:///var/run/docker.sock``, ``tcp://host:2375``); without one the
CLI's own default applies (``DOCKER_HOST``, then the local socket).

Only containers carrying the label :data:`LABEL` (upstream envd's, which the ``docker`` runner
uses too, so both see the same environments) are envd environments: ``list_environments`` never
shows (and ``remove`` never touches) the user's other containers.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import IO, Any

from envd_core.environment import (
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    PublishedPort,
    RunnerStatus,
)
from envd_core.errors import RunnerError
from envd_core.options import Option
from envd_core.runner import (
    EnvironmentExistsError,
    EnvironmentNotFoundError,
    Runner,
)

LABEL = "ai.tensorchord.envd.name"
CHUNK = 64 * 1024


class DockerCliRunner(Runner):
    """Environments as containers of the dockerd the ``docker`` CLI reaches."""

    name = "example-docker-cli"
    summary = "environments as containers, through the docker CLI (example plugin)"
    address_help = "what `docker -H` takes, e.g. unix:///var/run/docker.sock (default: DOCKER_HOST)"
    options = (Option("docker", "the docker client to run", default="docker"),)
    can_start = True
    can_pause = True
    can_show_logs = True
    can_list_processes = True
    supports_tty = True
    supports_mounts = True

    # -- running the CLI ---------------------------------------------------------------------

    def _argv(self, *args: str) -> list[str]:
        # `option_values` holds only what the user set: the declared default applies otherwise
        docker = self.option_values.get("docker", "docker")
        if shutil.which(docker) is None:
            raise RunnerError(f"runner `{self.name}` cannot find the docker client `{docker}`",
                              hint="install the docker CLI or set --runner-opt docker=PATH")
        host = ["-H", self.address] if self.address else []
        return [docker, *host, *args]

    def _docker(self, *args: str, timeout: float | None = 60.0) -> str:
        """Run one docker command; its stdout, or a one-line ``RunnerError`` from its stderr."""
        try:
            done = subprocess.run(self._argv(*args), capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RunnerError(f"`docker {args[0]}` did not answer within {timeout:g}s",
                              hint="is the docker daemon running?") from exc
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise RunnerError(f"`docker {args[0]}` failed: {message}")
        return done.stdout

    def _container(self, name: str) -> dict[str, Any]:
        """The ``docker inspect`` record of environment ``name``; not found if not ours."""
        record: dict[str, Any] | None
        try:
            (record,) = json.loads(self._docker("container", "inspect", name))
        except RunnerError as exc:
            if "no such" not in str(exc).lower():
                raise
            record = None
        if not record or LABEL not in (record["Config"].get("Labels") or {}):
            where = f" on `{self.address}`" if self.address else ""
            raise EnvironmentNotFoundError(f"environment `{name}` not found{where}",
                                           hint="`envd envs ls` lists the environments")
        return record

    # -- records -----------------------------------------------------------------------------

    def _environment(self, record: Mapping[str, Any]) -> Environment:
        ports = []
        for key, bindings in sorted((record["NetworkSettings"].get("Ports") or {}).items()):
            container_port, _, protocol = key.partition("/")
            for binding in bindings or ():
                ports.append(PublishedPort(container_port=int(container_port),
                                           host_port=int(binding["HostPort"]),
                                           host_ip=binding["HostIp"] or "0.0.0.0",
                                           protocol=protocol))
        labels = dict(record["Config"].get("Labels") or {})
        labels.pop(LABEL, None)
        return Environment(
            name=record["Name"].lstrip("/"),
            image=record["Config"]["Image"],
            status=EnvironmentStatus.parse(record["State"]["Status"]),
            runner=self.name,
            id=record["Id"],
            created=_parse_time(record["Created"]),
            ports=tuple(ports),
            labels=labels,
        )

    def _run_args(self, spec: EnvironmentSpec) -> list[str]:
        """``docker run`` flags for ``spec``; refuses what this runner cannot honour."""
        resources = spec.resources
        if resources.gpus is not None:
            raise RunnerError(f"runner `{self.name}` cannot give environments GPUs",
                              hint="use the `docker` runner for GPU environments")
        args = ["run", "--detach", "--name", spec.name, "--label", f"{LABEL}={spec.name}"]
        for key, value in sorted(spec.labels.items()):
            args += ["--label", f"{key}={value}"]
        for key, value in sorted(spec.env.items()):
            args += ["--env", f"{key}={value}"]
        for mount in spec.mounts:
            readonly = ",readonly" if mount.read_only else ""
            args += ["--mount", f"type=bind,source={mount.source},target={mount.target}{readonly}"]
        for port in spec.ports:
            host = "" if port.host_port is None else str(port.host_port)
            args += ["--publish", f"{port.host_ip}:{host}:{port.container_port}/{port.protocol}"]
        for cap in spec.cap_add:
            args += ["--cap-add", cap]
        if spec.working_dir:
            args += ["--workdir", spec.working_dir]
        if spec.user:
            args += ["--user", spec.user]
        if resources.cpus is not None:
            args += ["--cpus", str(resources.cpus)]
        if resources.cpu_set:
            args += ["--cpuset-cpus", resources.cpu_set]
        if resources.memory_bytes is not None:
            args += ["--memory", f"{resources.memory_bytes}b"]
        if resources.shm_size_bytes is not None:
            args += ["--shm-size", f"{resources.shm_size_bytes}b"]
        # `--entrypoint` takes one word: the rest of a longer entrypoint goes before the command
        command = list(spec.command or ())
        if spec.entrypoint is not None:
            args += ["--entrypoint", spec.entrypoint[0] if spec.entrypoint else ""]
            command = [*spec.entrypoint[1:], *command]
        return [*args, spec.image, *command]

    # -- required ----------------------------------------------------------------------------

    def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
        """Create and start the container; ``replace`` removes an existing one first."""
        args = self._run_args(spec)
        try:
            self._container(spec.name)
        except EnvironmentNotFoundError:
            pass
        else:
            if not replace:
                raise EnvironmentExistsError(
                    f"environment `{spec.name}` already exists",
                    hint="remove it first, or replace it (`envd up --force`)")
            self.remove(spec.name, force=True)
        try:
            self._docker(*args, timeout=None)  # may pull the image: no time limit
        except RunnerError:
            # `docker run` leaves a created container behind when the start fails
            subprocess.run(self._argv("rm", "--force", spec.name), capture_output=True,
                           check=False)
            raise
        return self.inspect(spec.name)

    def list_environments(self) -> list[Environment]:
        """Every container labelled as an envd environment, sorted by name."""
        ids = self._docker("ps", "--all", "--quiet", "--no-trunc", "--filter",
                           f"label={LABEL}").split()
        if not ids:
            return []
        records = json.loads(self._docker("container", "inspect", *ids))
        return sorted((self._environment(r) for r in records), key=lambda env: env.name)

    def inspect(self, name: str) -> Environment:
        """The environment ``name``, or :class:`EnvironmentNotFoundError`."""
        return self._environment(self._container(name))

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        """``docker stop``: SIGTERM, SIGKILL after ``timeout`` seconds."""
        self._container(name)
        self._docker("stop", "--time", str(math.ceil(timeout)), name, timeout=timeout + 30)

    def remove(self, name: str, *, force: bool = False) -> None:
        """Remove the container; a running one only with ``force``."""
        environment = self.inspect(name)
        if not force and environment.status in (EnvironmentStatus.RUNNING,
                                                EnvironmentStatus.PAUSED,
                                                EnvironmentStatus.RESTARTING):
            raise RunnerError(
                f"environment `{name}` is {environment.status.value}: stop it first or remove it"
                " with force", hint=f"`envd down {name}` stops it")
        self._docker("rm", "--force", name)

    def exec(self, name: str, argv: Sequence[str], *, tty: bool = False,
             stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None,
             stderr: IO[bytes] | None = None, env: Mapping[str, str] | None = None,
             workdir: str | None = None, user: str | None = None) -> int:
        """``docker exec``; output streamed to ``stdout``/``stderr`` as it comes."""
        self.require_running(self.inspect(name))
        args = ["exec"]
        if stdin is not None:
            args.append("--interactive")
        if tty:
            args.append("--tty")
        for key, value in sorted((env or {}).items()):
            args += ["--env", f"{key}={value}"]
        if workdir:
            args += ["--workdir", workdir]
        if user:
            args += ["--user", user]
        # a stream with a file descriptor (a terminal, a file) is handed to docker as it is, so
        # `docker exec -it` sees the user's terminal; others (BytesIO…) are pumped through pipes
        process = subprocess.Popen(
            self._argv(*args, name, *argv),
            stdin=_fd(stdin, subprocess.PIPE) if stdin is not None else subprocess.DEVNULL,
            stdout=_fd(stdout, subprocess.PIPE) if stdout is not None else None,
            stderr=_fd(stderr, subprocess.PIPE) if stderr is not None else None,
        )
        pumps = [threading.Thread(target=_pump, args=(source, sink, close), daemon=True)
                 for source, sink, close in ((stdin, process.stdin, True),
                                             (process.stdout, stdout, False),
                                             (process.stderr, stderr, False))
                 if source is not None and sink is not None]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()
        return process.wait()

    # -- optional, each behind its flag ------------------------------------------------------

    def start(self, name: str) -> Environment:
        """Start a stopped environment again (``can_start``)."""
        self._container(name)
        self._docker("start", name)
        return self.inspect(name)

    def pause(self, name: str) -> None:
        """Freeze every process (``can_pause``)."""
        self._container(name)
        self._docker("pause", name)

    def resume(self, name: str) -> None:
        """Thaw every process (``can_pause``)."""
        self._container(name)
        self._docker("unpause", name)

    def logs(self, name: str, *, follow: bool = False, tail: int | None = None) -> Iterator[bytes]:
        """The container's output, stdout and stderr interleaved (``can_show_logs``)."""
        self._container(name)
        args = ["logs", *(["--follow"] if follow else []),
                *(["--tail", str(tail)] if tail is not None else []), name]
        process = subprocess.Popen(self._argv(*args), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        assert process.stdout is not None
        try:
            while chunk := process.stdout.read1(CHUNK):  # type: ignore[attr-defined]
                yield chunk
        finally:
            process.kill()  # the caller stopped reading (or the logs ended): no orphan CLI
            process.wait()

    def top(self, name: str) -> tuple[list[str], list[list[str]]]:
        """``docker top``: its table, split into titles and rows (``can_list_processes``)."""
        self.require_running(self.inspect(name))
        titles, *lines = self._docker("top", name).splitlines()
        columns = titles.split()
        # only the last column (the command line) may contain spaces
        return columns, [line.split(None, len(columns) - 1) for line in lines if line.strip()]

    def status(self, *, timeout: float = 3.0) -> RunnerStatus:
        """The daemon's version, in one cheap call; never raises."""
        try:
            version = self._docker("version", "--format", "{{.Server.Version}}", timeout=timeout)
        except RunnerError as exc:
            return RunnerStatus(reachable=False, version=None, error=str(exc))
        return RunnerStatus(reachable=True, version=f"Docker Engine {version.strip()}",
                            error=None)


def _fd(stream: IO[bytes], otherwise: int) -> int:
    """The stream's file descriptor, or ``otherwise`` (a pipe) for an in-memory stream."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return otherwise


def _pump(source: IO[bytes], sink: IO[bytes], close: bool) -> None:
    """Copy ``source`` to ``sink`` chunk by chunk; ``close`` ends the command's input after."""
    read = getattr(source, "read1", source.read)
    try:
        while chunk := read(CHUNK):
            sink.write(chunk)
            sink.flush()
    except BrokenPipeError:
        pass  # the command exited without reading all its input
    finally:
        if close:
            with contextlib.suppress(BrokenPipeError):
                sink.close()


def _parse_time(value: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, as an aware ``datetime``."""
    head, _, rest = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{rest[:6].ljust(6, '0')}+00:00" if rest
                                  else f"{head}+00:00")
