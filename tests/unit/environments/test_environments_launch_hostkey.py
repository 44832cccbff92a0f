"""``launch`` and ``remove_environment`` with a runner that accepts host keys: the key reaches
the spec, the entry checks it strictly, ``--force`` replaces it, ``down`` removes it; the name is
tried first and an existing environment looked at only when the runner refuses it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd_core.environment import (
    Endpoint,
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    ImageInfo,
)
from envd_core.environments.hostkeys import HostKeys
from envd_core.environments.names import LABEL_GENERAL_GRAPH, LABEL_VENDOR, VENDOR_ENVD
from envd_core.environments.operations import launch, remove_environment
from envd_core.environments.spec import LaunchOptions
from envd_core.environments.sshconfig import SSHConfig
from envd_core.runner import EnvironmentExistsError, EnvironmentNotFoundError
from envd_core.testing import StubRunner

DEV = {LABEL_VENDOR: VENDOR_ENVD, LABEL_GENERAL_GRAPH: '{"Dev": true}'}


@pytest.fixture
def greeter() -> Iterator[int]:
    """A TCP port that greets like an SSH server."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-test\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


class Keyed(StubRunner):
    """Keeps its environments in a dict; takes host keys; its image is a dev image."""

    name = "keyed"
    can_manage_images = True
    accepts_host_key = True

    def __init__(self, port: int) -> None:
        super().__init__(None)
        self.port = port
        self.envs: dict[str, Environment] = {}
        self.calls: list[tuple[str, str, bool]] = []
        self.specs: list[EnvironmentSpec] = []

    def find_image(self, ref: str) -> ImageInfo | None:
        return ImageInfo(id="sha256:1", tags=(ref,), labels=DEV)

    def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
        self.calls.append(("create", spec.name, replace))
        if spec.name in self.envs and not replace:
            raise EnvironmentExistsError(f"`{spec.name}` exists")
        self.specs.append(spec)
        env = Environment(name=spec.name, image=spec.image, status=EnvironmentStatus.RUNNING,
                          runner=self.name, ssh=Endpoint("127.0.0.1", self.port))
        self.envs[spec.name] = env
        return env

    def inspect(self, name: str) -> Environment:
        self.calls.append(("inspect", name, False))
        if name not in self.envs:
            raise EnvironmentNotFoundError(f"no `{name}`")
        return self.envs[name]

    def remove(self, name: str, *, force: bool = False) -> None:
        self.inspect(name)
        del self.envs[name]


def _launch(runner: Keyed, tmp_path: Path, *, force: bool = False) -> SSHConfig:
    config = SSHConfig(tmp_path / "ssh_config")
    launch(runner, LaunchOptions(name="p", image="p:dev"), force=force, timeout=5,
           ssh_config=config, identity_file=tmp_path / "id", host_keys=HostKeys(tmp_path / "c"))
    return config


def test_a_dev_environment_gets_a_checked_host_key(tmp_path: Path, greeter: int) -> None:
    runner = Keyed(greeter)
    config = _launch(runner, tmp_path)
    keys = HostKeys(tmp_path / "c")
    key = keys.get("p")
    assert key is not None and runner.specs[0].host_key == str(key.path)
    assert keys.known("p.envd") == key.public
    block = (config.get("p.envd") or b"").decode()
    assert "  StrictHostKeyChecking yes\n" in block and "  HostKeyAlias p.envd\n" in block
    assert f'  UserKnownHostsFile "{keys.known_hosts}"\n' in block
    assert runner.calls == [("create", "p", False)]  # a free name costs one call

    # re-created (not running): same key; the existing one is looked at only after the refusal
    runner.envs["p"] = Environment(name="p", image="p:dev", status=EnvironmentStatus.EXITED,
                                   runner="keyed")
    runner.calls.clear()
    _launch(runner, tmp_path)
    assert runner.calls == [("create", "p", False), ("inspect", "p", False),
                            ("create", "p", True)]
    assert keys.known("p.envd") == key.public

    # a running one needs --force, which also replaces the key
    with pytest.raises(EnvironmentExistsError):
        _launch(runner, tmp_path)
    _launch(runner, tmp_path, force=True)
    replaced = keys.get("p")
    assert replaced is not None and replaced.public != key.public
    assert keys.known("p.envd") == replaced.public

    # down: container, entry, key and known_hosts line go
    assert remove_environment(runner, "p", config, keys) is True
    assert config.get("p.envd") is None and keys.get("p") is None
    assert keys.known("p.envd") is None


def test_a_runner_without_host_keys_keeps_the_unchecked_entry(tmp_path: Path,
                                                              greeter: int) -> None:
    class Unkeyed(Keyed):
        accepts_host_key = False

    runner = Unkeyed(greeter)
    config = _launch(runner, tmp_path)
    assert runner.specs[0].host_key is None
    assert HostKeys(tmp_path / "c").get("p") is None
    assert b"StrictHostKeyChecking no" in (config.get("p.envd") or b"")
