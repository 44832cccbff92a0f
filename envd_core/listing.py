"""What ``envd envs ls`` lists: light records of the environments a runner reports.

A runner's light lister (:attr:`envd_core.runner.Runner.lister`) returns
:class:`ListedEnvironment` records; ``envd envs ls`` renders them
(:func:`envd_core.cli.render.environment_list`), on the full CLI and on its fast path alike, and
the runner's :meth:`~envd_core.runner.Runner.list_environments` turns the same records into
:class:`~envd_core.environment.Environment` (:meth:`ListedEnvironment.to_environment`). So there
is one listing per runner, whichever way in.

Plain classes with ``__slots__``, not attrs: this module is imported on the fast path, where
attrs, typing and pathlib cost more than the whole command may.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from envd_core.environment import Environment

# The image labels the listing reads, defined here (this module imports only the standard
# library) and re-exported by envd_core.environments.names.
LABEL_GPU = "ai.tensorchord.envd.gpu"
LABEL_CUDA = "ai.tensorchord.envd.gpu.cuda"
LABEL_CUDNN = "ai.tensorchord.envd.gpu.cudnn"
LABEL_JUPYTER_ADDRESS = "ai.tensorchord.envd.jupyter.address"

#: The statuses :class:`envd_core.environment.EnvironmentStatus` knows; anything else is
#: ``unknown``, as its ``parse`` says.
STATUSES = frozenset({"created", "running", "paused", "restarting", "exited", "dead", "unknown"})


def status_word(text: str | None) -> str:
    """A runner's own word (``running``, ``Running``, ``removing``…) as a status value."""
    word = (text or "").strip().lower()
    return word if word in STATUSES else "unknown"


class ListedPort:
    """A published port: what :class:`envd_core.environment.PublishedPort` holds."""

    __slots__ = ("container_port", "host_ip", "host_port", "protocol", "service")

    def __init__(self, container_port: int, host_port: int, host_ip: str = "127.0.0.1",
                 protocol: str = "tcp", service: str | None = None) -> None:
        self.container_port = container_port
        self.host_port = host_port
        self.host_ip = host_ip
        self.protocol = protocol
        self.service = service

    def _values(self) -> tuple[object, ...]:
        return (self.container_port, self.host_port, self.host_ip, self.protocol, self.service)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ListedPort):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "ListedPort({}, {}, {!r}, {!r}, {!r})".format(*self._values())


class ListedEnvironment:
    """One environment as a listing reports it: the fields of
    :class:`~envd_core.environment.Environment`, with the status as its string value and the
    creation time as seconds since the epoch.

    ``id`` may be given as a function that computes it: it is called on first use. A runner
    whose ids are derived (hashed) passes one, so ``envd envs ls``, whose table shows no id,
    never computes them (the envd-server lister's SHA-256 loaded a C module for nothing).
    """

    __slots__ = ("_id", "created", "image", "labels", "name", "ports", "ssh", "status")

    def __init__(self, name: str, image: str, status: str, *,
                 id: str | Callable[[], str] = "",
                 created: float | None = None, ports: tuple[ListedPort, ...] = (),
                 labels: Mapping[str, str] | None = None,
                 ssh: tuple[str, int] | None = None) -> None:
        self.name = name
        self.image = image
        self.status = status_word(status)
        self._id = id
        self.created = created
        self.ports = ports
        self.labels: dict[str, str] = dict(labels or {})
        #: ``(host, port)`` where its SSH server answers, when it has one.
        self.ssh = ssh

    @property
    def id(self) -> str:
        """The runner's id of the environment (computed now if it was given as a function)."""
        found = self._id
        if not isinstance(found, str):
            found = self._id = found()
        return found

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    def _values(self) -> tuple[object, ...]:
        return (self.name, self.image, self.status, self.id, self.created, self.ports,
                self.labels, self.ssh)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ListedEnvironment):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ListedEnvironment(name={self.name!r}, status={self.status!r}, id={self.id!r})"

    def to_environment(self, runner: str) -> Environment:
        """The :class:`~envd_core.environment.Environment` record (imports attrs)."""
        import datetime as dt

        from envd_core.environment import (
            Endpoint,
            Environment,
            EnvironmentStatus,
            PublishedPort,
        )

        return Environment(
            name=self.name,
            image=self.image,
            status=EnvironmentStatus(self.status),
            runner=runner,
            id=self.id,
            created=(dt.datetime.fromtimestamp(self.created, dt.timezone.utc)
                     if self.created is not None else None),
            ports=tuple(PublishedPort(p.container_port, p.host_port, p.host_ip, p.protocol,
                                      p.service) for p in self.ports),
            labels=self.labels,
            ssh=Endpoint(*self.ssh) if self.ssh is not None else None,
        )


def from_environment(environment: Environment) -> ListedEnvironment:
    """The listing record of an :class:`~envd_core.environment.Environment` (for runners
    without a light lister: ``envs ls`` renders their ``list_environments``)."""
    created = environment.created
    return ListedEnvironment(
        environment.name, environment.image, environment.status.value, id=environment.id,
        created=created.timestamp() if created is not None else None,
        ports=tuple(ListedPort(p.container_port, p.host_port, p.host_ip, p.protocol, p.service)
                    for p in environment.ports),
        labels=environment.labels,
        ssh=(environment.ssh.host, environment.ssh.port) if environment.ssh else None,
    )


def load_lister(target: str) -> object:
    """The function a ``"module:function"`` lister names (imported now)."""
    module, _, attr = target.partition(":")
    # __import__ with a fromlist returns the submodule itself (no importlib import needed)
    found: object = __import__(module.strip(), fromlist=["__name__"])
    for part in attr.strip().split("."):
        found = getattr(found, part)
    return found


def run_lister(target: str, address: str | None, options: Mapping[str, str],
               context: str) -> list[ListedEnvironment]:
    """Call the lister ``target`` (``"module:function"``) as the runner contract says."""
    lister = load_lister(target)
    found = lister(address, dict(options), context=context)  # type: ignore[operator]
    return list(found)
