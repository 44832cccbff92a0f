"""``launch`` on a runner that pulls from a registry and has no mounts (envd-server's shape),
and the SSH entry a runner writes (``Runner.ssh_entry``), against an in-memory runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envd_core.environment import Endpoint, Environment, EnvironmentSpec, EnvironmentStatus
from envd_core.environments.names import LABEL_GENERAL_GRAPH, LABEL_VENDOR, VENDOR_ENVD
from envd_core.environments.operations import launch
from envd_core.environments.spec import LaunchOptions
from envd_core.environments.sshconfig import SSHConfig, SSHEntry
from envd_core.runner import EnvironmentNotFoundError
from envd_core.testing import StubRunner

LABELS = {LABEL_VENDOR: VENDOR_ENVD, LABEL_GENERAL_GRAPH: '{"Entrypoint": ["/srv"]}'}


class Pulling(StubRunner):
    """Keeps what it is asked to create; pulls images, supports no mounts."""

    name = "pulling"
    pulls_images = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created: list[EnvironmentSpec] = []

    def create(self, spec: EnvironmentSpec, *, replace: bool = False) -> Environment:
        self.created.append(spec)
        return self.inspect(spec.name)

    def inspect(self, name: str) -> Environment:
        if not any(s.name == name for s in self.created):
            raise EnvironmentNotFoundError(f"no `{name}`")
        return Environment(name=name, image="img", status=EnvironmentStatus.RUNNING,
                           runner=self.name, ssh=Endpoint("0.0.0.0", 4022))


def test_launch_uses_the_build_labels_and_mounts_nothing(tmp_path: Path) -> None:
    runner = Pulling(None)
    project = tmp_path / "proj"
    project.mkdir()
    config = SSHConfig(tmp_path / "ssh_config")
    launch(runner, LaunchOptions(name="p", image="reg/p:dev", project=project), force=False,
           timeout=5, ssh_config=config, identity_file=tmp_path / "key", image_labels=LABELS)
    (spec,) = runner.created
    assert spec.mounts == ()  # synced instead (--sync)
    assert spec.working_dir == "/home/envd/proj"
    assert spec.entrypoint is None  # the image has its own, read from the build's labels
    assert [p.service for p in spec.ports] == ["ssh"]
    # the base class's entry: straight to the endpoint, as envd, agent forwarded
    block = (config.get("p.envd") or b"").decode()
    assert "  HostName 127.0.0.1\n  Port 4022\n  User envd\n" in block
    assert "  ForwardAgent yes\n" in block


def test_run_of_an_unknown_image_keeps_its_entrypoint(tmp_path: Path) -> None:
    runner = Pulling(None)
    launch(runner, LaunchOptions(name="q", image="reg/q:dev"), force=False, timeout=5,
           ssh_config=None, identity_file=None)
    (spec,) = runner.created
    assert spec.entrypoint is None and spec.command is None


def test_a_gateway_entry_renders_user_forwards_and_no_agent() -> None:
    entry = SSHEntry(host="e.envd", hostname="srv", port=2222, identity_file="/k",
                     user="alice/e", forward_agent=False,
                     local_forwards=((8888, "localhost", 8888),))
    text = entry.render().decode()
    assert "  User alice/e\n" in text and "ForwardAgent" not in text
    assert text.endswith("  LocalForward 8888 localhost:8888\n")
