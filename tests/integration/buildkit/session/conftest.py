"""Fixtures for session tests against the real daemons started by ``scripts/infra up``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(Path(__file__).parent))

from _daemon import channel_for  # noqa: E402


@pytest.fixture(scope="session")
def infra() -> dict[str, Any]:
    """The infra endpoints (``scripts/infra env --json``); skips when infra is not up."""
    try:
        out = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "infra"), "env", "--json"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"infra env unavailable: {exc}")
    env: dict[str, Any] = json.loads(out)
    path = env["BUILDKIT_UNIX"][len("unix://") :]
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except OSError:
        pytest.skip(f"buildkitd not running at {env['BUILDKIT_UNIX']}: run `scripts/infra up`")
    finally:
        probe.close()
    return env


@pytest.fixture
def buildkit(infra: dict[str, Any]) -> Iterator[grpc.Channel]:
    """A channel to the shared root buildkitd (v0.18.2)."""
    channel = channel_for(infra["BUILDKIT_UNIX"])
    yield channel
    channel.close()


@pytest.fixture
def dockerfile_dir(tmp_path: Path) -> Any:
    """Write a Dockerfile into its own directory and return that directory."""

    def write(text: str) -> Path:
        d = tmp_path / f"df{len(list(tmp_path.glob('df*')))}"
        d.mkdir()
        (d / "Dockerfile").write_text(text)
        return d

    return write


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write a docker config.json into a temp DOCKER_CONFIG and return its path."""

    def write(data: dict[str, Any]) -> Path:
        d = tmp_path / "docker-config"
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps(data))
        monkeypatch.setenv("DOCKER_CONFIG", str(d))
        return d / "config.json"

    return write


@pytest.fixture(scope="module")
def push_buildkit(infra: dict[str, Any]) -> Iterator[grpc.Channel]:
    """A disposable buildkitd whose config reaches the TLS auth registry over https.

    BuildKit talks plain http to any 127.0.0.1 registry unless the config says ``http = false``
    for it, so push tests bring their own daemon (root dir and socket under /tmp, stopped and
    removed afterwards) rather than depending on the shared daemon's config.
    """
    import shutil
    import tempfile
    import time

    base = tempfile.mkdtemp(prefix="envd-bk-push-")
    config = Path(base) / "buildkitd.toml"
    config.write_text(
        f'[registry."{infra["AUTH_REGISTRY"]}"]\n'
        "  http = false\n"
        f'  ca = ["{infra["AUTH_REGISTRY_CA"]}"]\n'
    )
    sock = Path(base) / "buildkitd.sock"
    log = open(Path(base) / "buildkitd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            infra["BUILDKITD"],
            "--root",
            str(Path(base) / "root"),
            "--addr",
            f"unix://{sock}",
            "--config",
            str(config),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        channel = channel_for(f"unix://{sock}")
        deadline = time.monotonic() + 30
        while True:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                break
            except grpc.FutureTimeoutError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"disposable buildkitd did not start; see {base}/buildkitd.log")
        yield channel
        channel.close()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)
