"""Unit tests of the rootless builder: names, paths, command line, refusals (no daemon)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from envd_rootless import RootlessBuilder
from envd_rootless import daemon as d

from envd_core.errors import BuilderError, ValidationError
from envd_core.testing import BuilderContract


class TestRootlessContract(BuilderContract):
    builder_cls = RootlessBuilder
    valid_address = "buildkitd"


@pytest.mark.parametrize("raw", ["", "a/b", "has space", "-x", "x" * 70, "unix:///x.sock"])
def test_bad_names_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        RootlessBuilder.normalize_address(raw)


def test_paths_follow_xdg(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    paths = d.Paths.for_name("buildkitd", env)
    assert paths.socket == str(tmp_path / "run" / "buildkit" / "buildkitd.sock")
    assert paths.data == str(tmp_path / "data" / "envd" / "rootless" / "buildkitd")
    assert paths.log == str(tmp_path / "state" / "envd" / "rootless" / "buildkitd.log")
    fallback = d.Paths.for_name("ci", {})
    assert fallback.socket.endswith("/buildkit/ci.sock")


def test_command_line(tmp_path: Path) -> None:
    paths = d.Paths.for_name("bk", {"XDG_RUNTIME_DIR": str(tmp_path)})
    host = d.argv(paths, rootlesskit="/usr/bin/rootlesskit", buildkitd="/bin/buildkitd",
                  net="host", config=None, flags=["--debug"])
    assert host[:2] == ["/usr/bin/rootlesskit", "--net=host"]
    assert "--disable-host-loopback" not in host
    assert host[host.index("/bin/buildkitd") + 1:][:2] == ["--addr", f"unix://{paths.socket}"]
    assert host[-1] == "--debug"
    slirp = d.argv(paths, rootlesskit="rk", buildkitd="bk", net="slirp4netns",
                   config="/etc/bk.toml", flags=[])
    assert "--disable-host-loopback" in slirp
    assert slirp[-2:] == ["--config", "/etc/bk.toml"]


def test_flags_envd_owns_are_refused() -> None:
    for flag in ("--addr=unix:///x", "--root /x", "--config=/c"):
        with pytest.raises(ValidationError, match="envd sets it"):
            RootlessBuilder.check_options({"buildkitd-flags": flag})
    RootlessBuilder.check_options({"buildkitd-flags": "--debug"})


def test_stale_pid_file_is_not_a_daemon(tmp_path: Path) -> None:
    paths = d.Paths.for_name("bk", {"XDG_RUNTIME_DIR": str(tmp_path)})
    os.makedirs(os.path.dirname(paths.pidfile))
    Path(paths.pidfile).write_text(f"{os.getpid()}\n")  # alive, but not rootlesskit
    assert d.running_pid(paths) is None
    Path(paths.pidfile).write_text("garbage")
    assert d.running_pid(paths) is None


def test_missing_tool_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BuilderError, match="not installed") as info:
        d._tool(str(tmp_path / "no-buildkitd"), "buildkitd", "BuildKit")
    assert "\n" not in info.value.message


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the refusal as root")
def test_root_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(BuilderError, match="running as root") as info:
        RootlessBuilder("buildkitd").bootstrap()
    assert info.value.hint and "normal user" in info.value.hint
    assert not (tmp_path / "buildkit").exists()  # nothing started, nothing written


def test_import_is_light() -> None:
    code = "import sys, envd_rootless; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_nothing_to_remove_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    builder = RootlessBuilder("buildkitd")
    assert builder.needs_bootstrap() is True
    assert builder.remove().action == "absent"
    status = builder.status()
    assert status.reachable is False and status.error_kind == "not-found"
    with pytest.raises(BuilderError, match="is not running"):
        builder.connect(timeout=1)


# -- container mode ------------------------------------------------------------------------------
def test_container_mode_maps_onto_the_docker_container_builder() -> None:
    from envd_docker_container.settings import ROOTLESS_SOCKET
    from envd_rootless.container import DEFAULT_IMAGE, NO_SANDBOX, container_options, delegate

    assert container_options({"mode": "container"}) == {
        "security": "rootless", "image": DEFAULT_IMAGE, "cache-volume": "auto"}
    mapped = container_options({"mode": "container", "process-sandbox": "false",
                                "buildkitd-flags": "--debug", "network": "host"})
    assert mapped["buildkitd-flags"] == f"--debug {NO_SANDBOX}" and mapped["network"] == "host"
    inner = delegate("ci", {"mode": "container", "image": "reg/bk:rootless"})
    assert inner.address == "envd_rootless_ci"
    spec = inner.spec()  # type: ignore[attr-defined]
    assert spec.entrypoint[0] == "rootlesskit" and spec.entrypoint[-1] == "buildkitd"
    assert spec.socket == ROOTLESS_SOCKET and spec.file_owner == 1000
    assert "--root" in spec.command and spec.image == "reg/bk:rootless"


@pytest.mark.parametrize(("options", "wrong"), [
    ({"mode": "container", "net": "slirp4netns"}, "net"),
    ({"mode": "container", "ephemeral": "true"}, "ephemeral"),
    ({"image": "x"}, "image"),
    ({"mode": "process", "process-sandbox": "false"}, "process-sandbox"),
])
def test_options_of_the_other_mode_are_refused(options: dict[str, str], wrong: str) -> None:
    with pytest.raises(ValidationError, match=f"option `{wrong}` does not apply"):
        RootlessBuilder.check_options(options)


def test_container_mode_skips_the_root_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, process mode refuses; container mode hands over to Docker's isolation."""
    calls: list[str] = []

    class Fake:
        def bootstrap(self, *, force: bool = False, report: object = None) -> str:
            calls.append("bootstrap")
            return "done"

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    builder = RootlessBuilder("ci", {"mode": "container"})
    monkeypatch.setattr(builder, "_delegate", lambda: Fake())
    assert builder.bootstrap() == "done" and calls == ["bootstrap"]
    with pytest.raises(BuilderError, match="running as root"):
        RootlessBuilder("ci", {}).bootstrap()
