"""A recording in-memory runner for the environment command tests (holds no tests)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import IO, Any, ClassVar

from envd_core.environment import (
    Endpoint,
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    ImageInfo,
    PublishedPort,
)
from envd_core.errors import RunnerError
from envd_core.runner import EnvironmentExistsError, EnvironmentNotFoundError, Runner
from envd_core.testing import StubBuilder, make_plugin

ENVD_LABELS = {
    "ai.tensorchord.envd.vendor": "envd",
    "ai.tensorchord.envd.ports": json.dumps([{"name": "ssh", "port": 2222},
                                             {"name": "jupyter", "port": 8888}]),
    "ai.tensorchord.envd.graph.runtime": json.dumps({
        "commands": {"hello": "echo hi"},
        "expose": [{"EnvdPort": 8000, "HostPort": 0, "ServiceName": "web",
                    "ListeningAddr": "127.0.0.1"}],
    }),
    "ai.tensorchord.envd.pypi.commands": json.dumps(["six numpy"]),
    "ai.tensorchord.envd.apt.packages": json.dumps(["jq"]),
    "ai.tensorchord.envd.build.context": "/src/proj",
}


class RecordingRunner(Runner):
    """Keeps environments in a class-level dict and records every call."""

    name = "recording"
    summary = "in-memory runner for tests"
    can_manage_images = True
    can_pause = True
    can_list_processes = True
    supports_mounts = True
    supports_gpus = True
    supports_tty = False

    environments: ClassVar[dict[str, Environment]] = {}
    specs: ClassVar[list[EnvironmentSpec]] = []
    calls: ClassVar[list[tuple[Any, ...]]] = []
    image_store: ClassVar[list[ImageInfo]] = []
    reachable: ClassVar[bool] = True
    _ports = itertools.count(40000)

    @classmethod
    def reset(cls) -> None:
        cls.environments = {}
        cls.specs = []
        cls.calls = []
        cls.reachable = True
        cls.image_store = [
            ImageInfo(id="sha256:" + "a" * 64, tags=("proj:dev",), labels=ENVD_LABELS,
                      created=dt.datetime.now(dt.timezone.utc), size_bytes=123_456_789),
            ImageInfo(id="sha256:" + "b" * 64, tags=("busybox:latest",)),
            ImageInfo(id="sha256:" + "c" * 64, tags=(), labels={"ai.tensorchord.envd.vendor":
                                                               "envd"}),
        ]

    def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
        self.calls.append(("create", spec.name, replace))
        if spec.name in self.environments and not replace:
            raise EnvironmentExistsError(f"environment `{spec.name}` exists")
        self.specs.append(spec)
        ports = tuple(PublishedPort(p.container_port, p.host_port or next(self._ports),
                                    p.host_ip, p.protocol, p.service) for p in spec.ports)
        ssh = next((Endpoint(p.host_ip, p.host_port) for p in ports if p.service == "ssh"), None)
        labels = {**(self._labels_of(spec.image)), **spec.labels}
        env = Environment(name=spec.name, image=spec.image, status=EnvironmentStatus.RUNNING,
                          runner=self.name, id="f" * 64, ports=ports, labels=labels, ssh=ssh)
        self.environments[spec.name] = env
        return env

    def _labels_of(self, image: str) -> Mapping[str, str]:
        for info in self.image_store:
            if image in info.tags:
                return info.labels
        return {}

    def list_environments(self) -> list[Environment]:
        if not self.reachable:
            raise RunnerError("runner `recording` is down")
        return sorted(self.environments.values(), key=lambda e: e.name)

    def inspect(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            raise EnvironmentNotFoundError(f"environment `{name}` not found") from None

    def _set(self, name: str, status: EnvironmentStatus) -> None:
        import attrs

        self.environments[name] = attrs.evolve(self.inspect(name), status=status)

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        self._set(name, EnvironmentStatus.EXITED)

    def remove(self, name: str, *, force: bool = False) -> None:
        self.calls.append(("remove", name, force))
        self.inspect(name)
        del self.environments[name]

    def exec(self, name: str, argv: Sequence[str], *, tty: bool = False,
             stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None,
             stderr: IO[bytes] | None = None, env: Mapping[str, str] | None = None,
             workdir: str | None = None, user: str | None = None) -> int:
        self.calls.append(("exec", name, list(argv), tty))
        self.require_running(self.inspect(name))
        if stdout is not None:
            stdout.write(("ran " + " ".join(argv) + "\n").encode())
        return 3 if argv[-1] == "fail" else 0

    def pause(self, name: str) -> None:
        self._set(name, EnvironmentStatus.PAUSED)

    def resume(self, name: str) -> None:
        self._set(name, EnvironmentStatus.RUNNING)

    def top(self, name: str) -> tuple[list[str], list[list[str]]]:
        self.inspect(name)
        return ["PID", "CMD"], [["1", "sleep"]]

    def images(self) -> list[ImageInfo]:
        return list(self.image_store)

    def remove_image(self, name: str, *, force: bool = False) -> None:
        self.calls.append(("remove_image", name, force))
        self.image_store = [i for i in self.image_store
                            if name not in i.tags and i.id != name]


def recording_plugin() -> object:
    """A plugin providing the recording runner and the stub builder."""
    return make_plugin(runners=[RecordingRunner], builders=[StubBuilder])
