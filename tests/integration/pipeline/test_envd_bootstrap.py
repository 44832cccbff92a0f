"""``envd bootstrap`` and the build path's auto-bootstrap against the real daemons.

The console script checks the shared tcp buildkitd and dockerd's BuildKit (builders that manage
no daemon); an in-process builder that *pretends* to manage the tcp daemon shows a real build
bootstraps it once, before its solve, and then builds on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_envd_build_support import Envd

from envd_core.builder import DaemonAction, DaemonChange, Report, silent
from envd_core.testing import StubRunner, make_plugin

envd_tcp = pytest.importorskip("envd_tcp")


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str, buildkit_tcp: str) -> Envd:
    cli = Envd(tmp_path / "config", docker_host, ca_bundle)
    cli.run("context", "create", "--name", "tcp-boot", "--builder", "tcp", "--builder-address",
            buildkit_tcp, "--use")
    return cli


def test_bootstrap_checks_the_tcp_builder(envd: Envd, buildkit_tcp: str) -> None:
    text = envd.run("bootstrap")
    url = f"tcp://{buildkit_tcp.removeprefix('tcp://')}"
    assert text.stderr.splitlines()[-1] == f"The buildkit is running at {url}", text.stderr
    assert text.stdout == ""
    found = json.loads(envd.run("bootstrap", "--format", "json").stdout)
    assert found["running"] is True and found["managed"] is False and found["action"] == "none"
    assert found["workers"] >= 1 and "linux/amd64" in found["platforms"]
    assert found["url"] == url and found["context"] == "tcp-boot"


def test_bootstrap_checks_moby_worker(envd: Envd) -> None:
    envd.run("context", "create", "--name", "moby-boot", "--builder", "moby-worker")
    done = envd.run("--context", "moby-boot", "bootstrap", "--format", "json")
    found = json.loads(done.stdout)
    assert found["running"] is True and found["url"] == "moby-worker://envd_buildkitd"
    assert found["version"].startswith("dockerd "), found


def test_bootstrap_of_a_dead_address_is_one_line(envd: Envd) -> None:
    envd.run("context", "create", "--name", "dead", "--builder", "tcp", "--builder-address",
             "127.0.0.1:9")
    done = envd.run("--context", "dead", "bootstrap", "--timeout", "1s", check=False)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("envd: ")]
    assert errors == [("envd: cannot connect to BuildKit at `tcp://127.0.0.1:9`: connection "
                       "refused or socket missing; start buildkitd or fix the address")]


class ManagedTcp(envd_tcp.TcpBuilder):  # type: ignore[misc,name-defined]
    """The tcp builder, pretending it started the daemon: first missing, then running."""

    name = "managed-tcp"
    can_bootstrap = True
    calls: ClassVar[list[str]] = []

    def needs_bootstrap(self) -> bool:
        self.calls.append("needs_bootstrap")
        return "bootstrap" not in self.calls

    def connect(self, *, timeout: float) -> Any:
        self.calls.append("connect")
        return super().connect(timeout=timeout)

    def bootstrap(self, *, force: bool = False, report: Report = silent) -> DaemonChange:
        self.calls.append("bootstrap")
        report("pretending to start the shared buildkitd")
        return DaemonChange(DaemonAction.CREATED, "the shared buildkitd")

    def remove(self, *, keep_state: bool = False, report: Report = silent) -> DaemonChange:
        self.calls.append("remove")
        return DaemonChange(DaemonAction.ABSENT)


def test_build_bootstraps_once_before_solving(cli: Any, register_plugin: Any, buildkit_tcp: str,
                                              registry: str, tmp_path: Path) -> None:
    ManagedTcp.calls = []
    register_plugin(make_plugin(builders=[ManagedTcp], runners=[StubRunner]))
    assert cli("context", "create", "--name", "managed", "--builder", "managed-tcp",
               "--builder-address", buildkit_tcp.removeprefix("tcp://"),
               "--runner", StubRunner.name,
               "--use").exit_code == 0
    project = tmp_path / "project"
    project.mkdir()
    (project / "build.envd").write_text(
        f'def build():\n    base(image="{registry}/debian:bookworm", dev=False)\n')
    dest = tmp_path / "out"
    done = cli("build", "--path", str(project), "--progress", "plain",
               "--output", f"type=local,dest={dest}")
    assert done.exit_code == 0, done
    assert ManagedTcp.calls == ["needs_bootstrap", "bootstrap", "connect"]
    assert "is not running: bootstrapping it" in done.stderr
    assert "pretending to start the shared buildkitd" in done.stderr
    assert (dest / "etc" / "debian_version").is_file()
    again = cli("build", "--path", str(project), "--output", f"type=local,dest={dest}")
    assert again.exit_code == 0, again
    assert ManagedTcp.calls[3:] == ["needs_bootstrap", "connect"]
