"""The infra script's own contract: status, env as shell and JSON, the key names."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "infra"
KEYS = {
    "DOCKER_HOST", "REGISTRY", "AUTH_REGISTRY", "AUTH_REGISTRY_USER", "AUTH_REGISTRY_PASSWORD",
    "AUTH_REGISTRY_CA", "BUILDKIT_UNIX", "BUILDKIT_TCP", "BUILDKIT_MTLS", "BUILDKIT_MTLS_CA",
    "BUILDKIT_MTLS_CERT", "BUILDKIT_MTLS_KEY", "BUILDKIT_MTLS_SERVERNAME", "BUILDKIT_TLS_BAD_CA",
    "IMAGE_DEBIAN", "IMAGE_BUSYBOX", "IMAGE_PYTHON", "BUILDKIT_IMAGE", "BUILDKIT_IMAGE_REF",
    "BUILDCTL", "BUILDKITD", "UPSTREAM_ENVD", "CA_BUNDLE", "ROOTLESS_USER", "INFRA_DIR",
    "BUILDKITD_PIDS", "IMAGE_PYTHON_HOSTCA", "UPSTREAM_ENVD_REGISTRIES_CONF", "SSHD_IMAGE",
    "ENVD_SSHD",
}


def _infra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["python3", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_env_json_has_every_contract_key(infra: dict[str, Any]) -> None:
    assert set(infra) >= KEYS
    assert infra["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    offset = int(os.environ.get("ENVD_INFRA_PORT_OFFSET", "0"))  # isolated second instance
    assert infra["BUILDKIT_TCP"] == f"tcp://127.0.0.1:{1234 + offset}"
    assert infra["REGISTRY"] == f"127.0.0.1:{5000 + offset}"
    assert set(infra["BUILDKITD_PIDS"]) == {"buildkitd", "buildkitd-mtls"}
    for key in ("AUTH_REGISTRY_CA", "BUILDKIT_MTLS_CA", "BUILDKIT_MTLS_CERT",
                "BUILDKIT_MTLS_KEY", "BUILDKIT_TLS_BAD_CA", "BUILDCTL", "BUILDKITD", "CA_BUNDLE"):
        assert Path(infra[key]).is_file(), key


def test_env_shell_form_round_trips(infra: dict[str, Any]) -> None:
    script = _infra("env").stdout + '\nprintf "%s|%s" "$BUILDKIT_UNIX" "$IMAGE_PYTHON"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False).stdout
    assert out == f"{infra['BUILDKIT_UNIX']}|{infra['IMAGE_PYTHON']}"


def test_status_reports_everything_up(infra: dict[str, Any]) -> None:
    proc = _infra("status", "--json")
    status = json.loads(proc.stdout)
    assert proc.returncode == 0, status
    assert status["images"] == "complete"
    assert all(status[k].startswith("up") for k in ("dockerd", "registry", "buildkitd"))


def test_rootless_user_has_subordinate_ids(infra: dict[str, Any]) -> None:
    user = infra["ROOTLESS_USER"]
    for kind in ("subuid", "subgid"):
        lines = Path(f"/etc/{kind}").read_text().splitlines()
        assert any(line.startswith(f"{user}:") for line in lines), kind


def test_upstream_envd_runs(upstream_envd: str, tmp_path: Path) -> None:
    # Upstream envd writes ~/.config/envd and phones home unless told not to: keep it in a
    # scratch HOME with analytics off (it must never talk to anything but 127.0.0.1 here).
    env = {**os.environ, "HOME": str(tmp_path), "ENVD_ANALYTICS": "false"}
    proc = subprocess.run([upstream_envd, "version"], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "envd: v1.3.4"
    assert "3cac99fd121961eae2ce0bb634a026891b8e77df" in proc.stdout


def test_upstream_envd_builds_against_the_infra(infra: dict[str, Any], upstream_envd: str,
                                                tmp_path: Path) -> None:
    # The recipe docs/infra.md gives for using upstream envd as a peer: scratch HOME with the
    # registries.conf, a tcp context on the shared buildkitd, the CA-carrying python image.
    home = tmp_path / "home"
    (home / ".config" / "containers").mkdir(parents=True)
    (home / ".config" / "containers" / "registries.conf").write_text(
        Path(infra["UPSTREAM_ENVD_REGISTRIES_CONF"]).read_text())
    env = {**os.environ, "HOME": str(home), "ENVD_ANALYTICS": "false"}
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "build.envd").write_text(
        "def build():\n"
        f'    base(image="{infra["IMAGE_PYTHON_HOSTCA"]}", dev=False)\n'
        '    install.python_packages(name=["six"])\n')
    addr = infra["BUILDKIT_TCP"].removeprefix("tcp://")
    for argv in (["context", "create", "--name", "infra", "--builder", "tcp",
                  "--builder-address", addr, "--use"],
                 ["build", "--output",
                  f"type=image,name={infra['REGISTRY']}/smoke/upstream:1,push=true"]):
        proc = subprocess.run([upstream_envd, *argv], capture_output=True, text=True,
                              timeout=300, env=env, cwd=proj, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
    out = subprocess.run(["docker", "run", "--rm", "--pull", "always",
                          f"{infra['REGISTRY']}/smoke/upstream:1", "python", "-c",
                          "import six; print(six.__name__)"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip() == "six", out.stderr
