"""The docker-container builder against the real dockerd: bootstrap, states, status, remove.

The Python API is used for bootstrap and remove (``envd bootstrap`` is being added to the core
separately); ``envd context ls --status`` goes through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dc_helpers import docker_cli, exists
from envd_docker_container import DockerContainerBuilder
from envd_docker_container.report import Recorder

from envd_core.builder import DaemonAction
from envd_core.errors import BuilderError

ENVD = shutil.which("envd", path=os.path.dirname(sys.executable)) or "envd"


def container_id(name: str) -> str:
    return docker_cli("inspect", "-f", "{{.Id}}", name).stdout.strip()


def state(name: str) -> str:
    return docker_cli("inspect", "-f", "{{.State.Status}}", name).stdout.strip()


def test_bootstrap_reuses_and_handles_every_state(container_name: str,
                                                  builder_options: dict[str, str]) -> None:
    builder = DockerContainerBuilder(container_name, builder_options)
    log = Recorder()
    assert builder.needs_bootstrap() is True
    change = builder.bootstrap(report=log)
    assert change.action == DaemonAction.CREATED and container_name in change.detail
    assert builder.needs_bootstrap() is False
    first = builder.last_bootstrap
    assert first is not None and first.action == "created"
    assert first.security in ("privileged", "restricted")
    assert any("BuildKit is running at" in line for line in log.lines), log.lines
    if first.security == "restricted":  # this machine: --privileged is refused, said so once
        assert sum("refused a privileged container" in line for line in log.lines) == 1
    original = container_id(container_name)
    assert exists("volume", f"{container_name}_state")

    builder.bootstrap(report=log)
    assert builder.last_bootstrap is not None and builder.last_bootstrap.action == "reused"
    assert container_id(container_name) == original

    docker_cli("pause", container_name)
    assert builder.needs_bootstrap() is True
    assert builder.bootstrap(report=log).action == DaemonAction.STARTED
    assert builder.last_bootstrap is not None and builder.last_bootstrap.action == "unpaused"
    assert state(container_name) == "running"

    docker_cli("stop", "-t", "2", container_name)
    assert state(container_name) == "exited"
    builder.bootstrap(report=log)
    assert builder.last_bootstrap is not None and builder.last_bootstrap.action == "started"
    assert container_id(container_name) == original
    with builder.connect(timeout=10):
        pass

    # Changed options: reported stale, kept without force, recreated with it (volume kept).
    changed = DockerContainerBuilder(container_name, {**builder_options,
                                                      "buildkitd-flags": "--debug"})
    assert "stale" in changed.bootstrap(report=log).detail
    outcome = changed.last_bootstrap
    assert outcome is not None and outcome.action == "reused"
    assert outcome.stale == ["the builder options or the buildkitd config changed"]
    assert container_id(container_name) == original
    assert any("is stale" in line and "--force" in line for line in log.lines)
    changed.bootstrap(force=True, report=log)
    assert changed.last_bootstrap is not None and changed.last_bootstrap.action == "recreated"
    assert container_id(container_name) != original
    assert "--debug" in docker_cli("inspect", "-f", "{{json .Args}}", container_name).stdout
    changed.bootstrap(report=log)
    assert changed.last_bootstrap is not None and changed.last_bootstrap.stale == []

    # Killed and removed behind envd's back: the next bootstrap creates it again.
    docker_cli("kill", container_name)
    docker_cli("rm", "-f", container_name)
    changed.bootstrap(report=log)
    assert changed.last_bootstrap is not None and changed.last_bootstrap.action == "created"

    removed = changed.remove(report=log)
    assert removed.action == "removed"
    assert changed.remove(report=log).action == "absent"
    assert not exists("container", container_name)
    assert not exists("volume", f"{container_name}_state")


def test_created_container_is_started(container_name: str,
                                      builder_options: dict[str, str]) -> None:
    """A container left in `created` (e.g. by an interrupted bootstrap) is started."""
    builder = DockerContainerBuilder(container_name, builder_options)
    builder.bootstrap(report=Recorder())
    security = builder.last_bootstrap.security if builder.last_bootstrap else None
    docker_cli("stop", "-t", "1", container_name)
    # Re-create it exactly as bootstrap would, but never start it.
    inspect = json.loads(docker_cli("inspect", container_name).stdout)[0]
    docker_cli("rm", container_name)
    from envd_docker_container.settings import ENTRY_SCRIPT, STATE_DIR

    spec = builder.spec()
    engine = builder.engine()
    engine.create(container_name, image=spec.image, entrypoint=["sh", "-c", ENTRY_SCRIPT,
                  "buildkitd"], command=spec.command, labels=inspect["Config"]["Labels"],
                  network=spec.network, volume=spec.volume, state_dir=STATE_DIR,
                  security=security or "restricted")
    engine.put_files(container_name, spec.files)
    assert state(container_name) == "created"
    builder.bootstrap(report=Recorder())
    assert builder.last_bootstrap is not None and builder.last_bootstrap.action == "started"
    assert state(container_name) == "running"


def test_foreign_container_is_never_removed(container_name: str, infra: dict[str, str],
                                            builder_options: dict[str, str]) -> None:
    docker_cli("create", "--name", container_name, infra["IMAGE_BUSYBOX"], "sleep", "60")
    builder = DockerContainerBuilder(container_name, builder_options)
    with pytest.raises(BuilderError, match="not created by envd"):
        builder.remove(report=Recorder())
    with pytest.raises(BuilderError, match="not created by envd"):
        builder.bootstrap(force=True, report=Recorder())
    assert exists("container", container_name)


def test_missing_image_is_one_line_and_creates_nothing(container_name: str,
                                                      builder_options: dict[str, str],
                                                      registry: str) -> None:
    options = {**builder_options, "image": f"{registry}/envd-h7/no-such-buildkit:missing"}
    builder = DockerContainerBuilder(container_name, options)
    with pytest.raises(BuilderError) as info:
        builder.bootstrap(report=Recorder())
    assert "no-such-buildkit" in info.value.message and "\n" not in info.value.message
    assert not exists("container", container_name)
    assert not exists("volume", f"{container_name}_state")


def test_missing_ca_is_one_line_and_creates_nothing(container_name: str, tmp_path: Path,
                                                   builder_options: dict[str, str]) -> None:
    ca = tmp_path / "mirror-ca.pem"
    ca.write_text("not used")
    config = tmp_path / "registries.json"
    config.write_text(json.dumps({"registries": [
        {"name": "docker.io", "mirror": "mirror.corp:5000", "ca": str(ca)}]}))
    builder = DockerContainerBuilder(container_name, {**builder_options,
                                                      "registry-config": str(config)})
    DockerContainerBuilder.check_options(builder.option_values)  # fine while the file is there
    ca.unlink()
    from envd_core.errors import ValidationError

    with pytest.raises(ValidationError, match=r"mirror-ca\.pem") as info:
        builder.bootstrap(report=Recorder())
    assert "\n" not in info.value.message
    assert not exists("container", container_name)
    assert not exists("volume", f"{container_name}_state")


# -- through the CLI -----------------------------------------------------------------------------
@pytest.fixture
def envd(tmp_path: Path, docker_host: str):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVD_")}
    env.update(ENVD_CONFIG_DIR=str(tmp_path / "config"), DOCKER_HOST=docker_host, NO_COLOR="1",
               # envd bootstrap installs shell completion (upstream's default): not in ~
               XDG_DATA_HOME=str(tmp_path / "data"), SHELL="/bin/bash")

    def run(*args: str, check: bool = True, cwd: Path | None = None,
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([ENVD, *args], capture_output=True, text=True, env=env,
                              check=False, timeout=600, cwd=cwd, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"envd {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        return proc

    return run


def _opts(options: dict[str, str]) -> list[str]:
    return [a for k, v in options.items() for a in ("--builder-opt", f"{k}={v}")]


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode in (1, 2), proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("envd: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_status_running_stopped_missing(envd, container_name: str,  # type: ignore[no-untyped-def]
                                        builder_options: dict[str, str]) -> None:
    envd("context", "create", "--name", "dc", "--builder", "docker-container",
         "--builder-address", container_name, *_opts(builder_options))

    def status() -> dict[str, object]:
        rows = json.loads(envd("context", "ls", "--status", "--format", "json").stdout)
        found: dict[str, object] = next(r for r in rows if r["context"] == "dc")["status"]
        return found

    missing = status()
    assert missing["reachable"] is False and missing["error_kind"] == "not-found"
    assert not exists("container", container_name)  # a status probe never bootstraps
    DockerContainerBuilder(container_name, builder_options).bootstrap(report=Recorder())
    running = status()
    assert running["reachable"] is True, running
    assert running["workers"] == 1 and "linux/amd64" in running["platforms"]  # type: ignore[operator]
    table = envd("context", "ls", "--status").stdout
    assert any(line.startswith("dc ") and "running" in line for line in table.splitlines())
    docker_cli("stop", "-t", "1", container_name)
    stopped = status()
    assert stopped["reachable"] is False and stopped["error_kind"] == "unavailable"
    assert "is exited" in str(stopped["error"])
    table = envd("context", "ls", "--status").stdout
    assert any(line.startswith("dc ") and "is exited" in line for line in table.splitlines())


def test_bad_container_name_is_refused_at_create(envd) -> None:  # type: ignore[no-untyped-def]
    proc = envd("context", "create", "--name", "dc", "--builder", "docker-container",
                "--builder-address", "bad name!", check=False)
    line = _one_line(proc)
    assert "not a valid container name" in line
    assert proc.returncode == 2
    assert "dc" not in envd("context", "ls").stdout.split()


def test_build_rebootstraps_after_kill_and_rm(envd, container_name: str,  # type: ignore[no-untyped-def]
                                              builder_options: dict[str, str],
                                              infra: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "tiny"
    project.mkdir()
    (project / "build.envd").write_text(
        "def build():\n"
        f'    base(image="{infra["IMAGE_BUSYBOX"]}")\n'
        '    run(commands=["echo h7 > /marker"])\n')
    out = tmp_path / "out"
    envd("context", "create", "--name", "dc", "--builder", "docker-container",
         "--builder-address", container_name, *_opts(builder_options), "--use")
    first = envd("build", "--output", f"type=local,dest={out}", cwd=project)
    assert "BuildKit is running at docker-container://" in first.stderr
    assert (out / "marker").read_text() == "h7\n"
    docker_cli("kill", container_name)
    docker_cli("rm", "-f", container_name)
    again = envd("build", "--output", f"type=local,dest={out}2", cwd=project)
    assert f"creating container `{container_name}`" in again.stderr
    assert (out.parent / "out2" / "marker").read_text() == "h7\n"
    # Told not to bootstrap: one line, nothing created.
    docker_cli("rm", "-f", container_name)
    proc = envd("build", "--no-bootstrap", "--output", f"type=local,dest={out}3", cwd=project,
                check=False)
    assert "is not running" in _one_line(proc)
    assert not exists("container", container_name)


def test_parallel_bootstraps_share_one_container(container_name: str,
                                                builder_options: dict[str, str]) -> None:
    """Two builds starting at once on a fresh context: one creates, the other reuses it."""
    import threading

    builders = [DockerContainerBuilder(container_name, builder_options) for _ in range(2)]
    errors: list[BaseException] = []

    def run(builder: DockerContainerBuilder) -> None:
        try:
            builder.bootstrap(report=Recorder())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in builders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    actions = sorted(b.last_bootstrap.action for b in builders if b.last_bootstrap)
    assert actions == ["created", "reused"]
    assert state(container_name) == "running"


def test_readiness_timeout_is_one_line_and_undone(container_name: str,
                                                 builder_options: dict[str, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """BUILDKIT_CONNECTING_TIMEOUT bounds the wait; a timeout leaves nothing behind."""
    monkeypatch.setenv("BUILDKIT_CONNECTING_TIMEOUT", "1ms")
    builder = DockerContainerBuilder(container_name, builder_options)
    with pytest.raises(BuilderError, match=r"^timeout 0\.001s: BuildKit in container") as info:
        builder.bootstrap(report=Recorder())
    assert "\n" not in info.value.message
    assert not exists("container", container_name)
    assert not exists("volume", f"{container_name}_state")
    monkeypatch.setenv("BUILDKIT_CONNECTING_TIMEOUT", "soon")
    from envd_core.errors import ValidationError

    with pytest.raises(ValidationError, match="BUILDKIT_CONNECTING_TIMEOUT"):
        builder.bootstrap(report=Recorder())
    assert not exists("container", container_name)


def test_envd_bootstrap_and_builder_rm(envd, container_name: str,  # type: ignore[no-untyped-def]
                                       builder_options: dict[str, str], tmp_path: Path) -> None:
    """The core's commands drive this builder through the contract."""
    envd("context", "create", "--name", "dc", "--builder", "docker-container",
         "--builder-address", container_name, *_opts(builder_options), "--use")
    first = json.loads(envd("bootstrap", "--timeout", "60s", "--format", "json").stdout)
    assert first["action"] == "created" and first["running"] is True, first
    completion = tmp_path / "data" / "bash-completion" / "completions" / "envd"
    assert first["completion"] == str(completion) and completion.is_file()
    assert first["managed"] is True and first["workers"] == 1
    again = json.loads(envd("bootstrap", "--format", "json").stdout)
    assert again["action"] == "reused"
    proc = envd("builder", "rm", "--keep-state")
    assert not exists("container", container_name)
    assert exists("volume", f"{container_name}_state"), proc.stderr
    envd("bootstrap", "--timeout", "60s")
    envd("builder", "rm")
    assert not exists("container", container_name)
    assert not exists("volume", f"{container_name}_state")
