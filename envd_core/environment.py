"""The records a runner takes and returns: what to create, and what exists.

:class:`EnvironmentSpec` is what ``envd up``/``envd run`` ask a runner to create;
:class:`Environment` is what a runner reports back from ``create``, ``inspect`` and
``list_environments``. They are plain frozen attrs records, independent of any runner, so the CLI
renders the same fields for Docker, envd-server or any other runner. Values are checked when a
record is made: a bad port, size or name fails with one :class:`~envd_core.errors.ValidationError`
line before any runner is contacted.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from envd_core.errors import ValidationError

__all__ = [
    "DEFAULT_GPU_CAPABILITIES",
    "DEFAULT_HOST_IP",
    "Endpoint",
    "Environment",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "GPURequest",
    "ImageInfo",
    "Mount",
    "PortMapping",
    "PublishedPort",
    "Resources",
    "RunnerStatus",
]

#: Where ports are published unless the spec says otherwise: never on every interface by accident.
DEFAULT_HOST_IP = "127.0.0.1"
#: The capabilities upstream envd asks for with a GPU (docker's ``GpuOpts`` defaults it uses).
DEFAULT_GPU_CAPABILITIES: tuple[str, ...] = (
    "nvidia", "compute", "compat32", "graphics", "utility", "video", "display",
)
# Docker's container-name grammar; envd-server (Kubernetes) names are a subset of it.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


class EnvironmentStatus(str, enum.Enum):
    """The state of an environment, as every runner reports it."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    EXITED = "exited"
    DEAD = "dead"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, text: str | None) -> EnvironmentStatus:
        """Map a runner's own word (``running``, ``Running``, ``removing``…) to a status."""
        try:
            return cls((text or "").strip().lower())
        except ValueError:
            return cls.UNKNOWN


def _check_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _NAME_RE.match(value) or len(value) > 128:
        raise ValidationError(
            f"invalid environment name `{value}`: use letters, digits, `_`, `.` and `-`, "
            "starting with a letter or digit"
        )


def _check_port(value: object, what: str) -> None:
    # `object`: records are built from user and plugin input, so the type is checked at run time
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValidationError(f"invalid {what} `{value}`: must be a number from 1 to 65535")


@attrs.frozen
class Mount:
    """A bind mount of a host path into the environment."""

    source: str
    target: str
    read_only: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.source.startswith("/") or not self.target.startswith("/"):
            raise ValidationError(
                f"invalid mount `{self.source}:{self.target}`: both paths must be absolute"
            )


@attrs.frozen
class PortMapping:
    """A container port to publish; ``host_port=None`` asks the runner for a free port."""

    container_port: int
    host_port: int | None = None
    host_ip: str = DEFAULT_HOST_IP
    protocol: Literal["tcp", "udp"] = "tcp"
    #: What listens there (``ssh``, ``jupyter``…), so clients can find it again.
    service: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_port(self.container_port, "container port")
        if self.host_port is not None:
            _check_port(self.host_port, "host port")
        if self.protocol not in ("tcp", "udp"):
            raise ValidationError(f"invalid protocol `{self.protocol}`: use tcp or udp")


@attrs.frozen
class GPURequest:
    """GPUs for the environment: a count, ``"all"``, or explicit device ids."""

    count: int | Literal["all"] | None = "all"
    device_ids: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = DEFAULT_GPU_CAPABILITIES

    def __attrs_post_init__(self) -> None:
        if self.device_ids and self.count not in (None, "all"):
            raise ValidationError("give either a GPU count or GPU device ids, not both")
        if isinstance(self.count, int) and self.count < 1:
            raise ValidationError(f"invalid GPU count `{self.count}`: must be at least 1")
        if self.count is not None and not isinstance(self.count, int) and self.count != "all":
            raise ValidationError(f"invalid GPU count `{self.count}`: use a number or `all`")


@attrs.frozen
class Resources:
    """Limits and devices; ``None`` means the runner's default (no limit)."""

    cpus: float | None = None
    cpu_set: str | None = None
    memory_bytes: int | None = None
    shm_size_bytes: int | None = None
    gpus: GPURequest | None = None

    def __attrs_post_init__(self) -> None:
        if self.cpus is not None and self.cpus <= 0:
            raise ValidationError(f"invalid cpus `{self.cpus}`: must be more than 0")
        if self.cpus is not None and self.cpu_set is not None:
            # upstream envd refuses the pair too: the quota and the pinning would disagree
            raise ValidationError("give either cpus or a cpu set, not both")
        if self.cpu_set is not None and not _CPUSET_RE.match(self.cpu_set):
            raise ValidationError(f"invalid cpu set `{self.cpu_set}`: use e.g. `0-3` or `0,2`")
        for what, size in (("memory", self.memory_bytes), ("shm size", self.shm_size_bytes)):
            if size is not None and size <= 0:
                raise ValidationError(f"invalid {what} `{size}`: must be more than 0 bytes")


def _frozen_mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen
class EnvironmentSpec:
    """What to create: everything a runner needs to start one environment from an image."""

    name: str = attrs.field(validator=_check_name)
    image: str
    #: Replaces the image's ``Cmd``; ``None`` keeps it.
    command: tuple[str, ...] | None = None
    #: Replaces the image's ``Entrypoint``; ``None`` keeps it, ``()`` clears it.
    entrypoint: tuple[str, ...] | None = None
    working_dir: str | None = None
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    mounts: tuple[Mount, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    resources: Resources = attrs.field(factory=Resources)
    cap_add: tuple[str, ...] = ()
    user: str | None = None
    #: The private SSH host key (a file on this machine) the environment's SSH server must
    #: present, for a runner that :attr:`~envd_core.runner.Runner.accepts_host_key`; ``None``
    #: lets the server make its own.
    host_key: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.image.strip():
            raise ValidationError(f"environment `{self.name}` has no image")
        seen: set[tuple[int, str]] = set()
        for port in self.ports:
            key = (port.container_port, port.protocol)
            if key in seen:
                raise ValidationError(
                    f"container port `{port.container_port}/{port.protocol}` is published twice"
                )
            seen.add(key)


@attrs.frozen
class PublishedPort:
    """A port as the runner really published it (``host_port`` is never ``None`` here)."""

    container_port: int
    host_port: int
    host_ip: str = DEFAULT_HOST_IP
    protocol: str = "tcp"
    service: str | None = None


@attrs.frozen
class Endpoint:
    """Where a client connects (``ssh -p PORT HOST``)."""

    host: str
    port: int


@attrs.frozen
class Environment:
    """An environment that exists on a runner."""

    name: str
    image: str
    status: EnvironmentStatus
    #: The runner that reported it (its type name).
    runner: str
    #: The runner's own id (a container id, a pod uid…).
    id: str = ""
    created: dt.datetime | None = None
    ports: tuple[PublishedPort, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    #: Where the environment's SSH server is reachable, when it has one.
    ssh: Endpoint | None = None

    @property
    def running(self) -> bool:
        return self.status is EnvironmentStatus.RUNNING

    def port_for(self, container_port: int, protocol: str = "tcp") -> PublishedPort | None:
        """The published port for ``container_port``, if it is published."""
        for port in self.ports:
            if port.container_port == container_port and port.protocol == protocol:
                return port
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for ``--format json`` listings."""
        out = attrs.asdict(self, recurse=True)
        out["status"] = self.status.value
        out["created"] = self.created.isoformat() if self.created else None
        out["labels"] = dict(self.labels)
        return out


@attrs.frozen
class ImageInfo:
    """An image in the runner's image store."""

    id: str
    tags: tuple[str, ...] = ()
    created: dt.datetime | None = None
    size_bytes: int | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.define
class RunnerStatus:
    """What a probe of a runner found, for ``envd context ls --status``."""

    reachable: bool
    version: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @property
    def summary(self) -> str:
        if self.reachable:
            return f"running {self.version}" if self.version else "running"
        return "error"
