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
    text = envd.run("bootstrap", "--with-autocomplete=false")
    url = f"tcp://{buildkit_tcp.removeprefix('tcp://')}"
    assert text.stderr.splitlines()[-1] == f"The buildkit is running at {url}", text.stderr
    assert text.stdout == ""
    found = json.loads(envd.run("bootstrap", "--with-autocomplete=false", "--format",
                                "json").stdout)
    assert found["running"] is True and found["managed"] is False and found["action"] == "none"
    assert found["workers"] >= 1 and "linux/amd64" in found["platforms"]
    assert found["url"] == url and found["context"] == "tcp-boot"


def test_bootstrap_checks_moby_worker(envd: Envd) -> None:
    envd.run("context", "create", "--name", "moby-boot", "--builder", "moby-worker")
    done = envd.run("--context", "moby-boot", "bootstrap", "--with-autocomplete=false",
                    "--format", "json")
    found = json.loads(done.stdout)
    assert found["running"] is True and found["url"] == "moby-worker://envd_buildkitd"
    assert found["version"].startswith("dockerd "), found


def test_bootstrap_of_a_dead_address_is_one_line(envd: Envd) -> None:
    envd.run("context", "create", "--name", "dead", "--builder", "tcp", "--builder-address",
             "127.0.0.1:9")
    done = envd.run("--context", "dead", "bootstrap", "--with-autocomplete=false", "--timeout",
                    "1s", check=False)
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


def test_registry_flags_reach_a_bootstrapped_container(envd: Envd, tmp_path: Path,
                                                      infra: dict[str, Any]) -> None:
    """Upstream's registry flags on a docker-container context: the daemon envd creates runs
    with them (its buildkitd.toml), and a second bootstrap with other settings reports the
    container stale until --force recreates it."""
    import subprocess
    import uuid

    name = f"envd_test_builders_{uuid.uuid4().hex[:8]}"
    envd.run("context", "create", "--name", "dc-boot", "--builder", "docker-container",
             "--builder-address", name, "--builder-opt", f"image={infra['BUILDKIT_IMAGE_REF']}",
             "--use")

    def toml() -> str:
        return subprocess.run(["docker", "exec", name, "cat", "/etc/envd-buildkit/buildkitd.toml"],
                              capture_output=True, text=True, check=True).stdout

    try:
        done = envd.run("bootstrap", "--with-autocomplete=false", "-m", "mirror.corp:5000",
                        "--use-http", "--format", "json")
        found = json.loads(done.stdout)
        stages = [line for line in done.stderr.splitlines() if line.startswith("[")]
        assert stages == [f"[{i}/5] Bootstrap {n}" for i, n in enumerate(
            ["SSH Key", "registry CA keypair", "registry json config", "autocomplete",
             "buildkit"], 1)]
        assert found["action"] == "created" and found["registries"]["applied"] is True
        text = toml()
        assert '[registry."docker.io"]' in text and 'mirrors = ["mirror.corp:5000"]' in text
        assert "http = true" in text
        again = envd.run("bootstrap", "--with-autocomplete=false", "-m", "other.corp",
                         "--format", "json")
        assert json.loads(again.stdout)["action"] == "reused"
        assert "is stale" in again.stderr and 'mirrors = ["mirror.corp:5000"]' in toml()
        forced = envd.run("bootstrap", "--with-autocomplete=false", "--force", "--format",
                          "json")
        assert json.loads(forced.stdout)["action"] == "recreated"
        assert 'mirrors = ["other.corp"]' in toml()
    finally:
        envd.run("builder", "rm", check=False)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_registry_flags_on_tcp_are_reported_not_applied(envd: Envd) -> None:
    done = envd.run("bootstrap", "--with-autocomplete=false", "-m", "mirror.corp", "--format",
                    "json")
    assert json.loads(done.stdout)["registries"] == {"applied": False, "registry_config": None}
    assert ("warning: builder type `tcp` does not start its daemon, so the registry settings "
            "are not applied; configure registries in that daemon's buildkitd.toml"
            ) in done.stderr.splitlines()
