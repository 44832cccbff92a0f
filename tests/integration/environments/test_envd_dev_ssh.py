"""Dev environments (``base(dev=True)``) over SSH: the real dockerd, the real OpenSSH client.

Each test runs the ``envd`` console script with a private HOME (its ``~/.ssh/config`` is a temp
file seeded with a user's own entry) and ``ENVD_CONFIG_DIR``; ``ENVD_SSHD_IMAGE`` points at the
infra's build of upstream's envd-sshd (Docker Hub, the default, is not reachable here). ``ssh``
always gets ``-F`` with that temp config, so the real ``/root/.ssh/config`` is never read or
written.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_envd_environments import ENVD, USER_SSH, Envd, _read_until, docker, one_line

pytestmark = pytest.mark.integration

PROBE = ("import json, os, shutil; print(json.dumps({'cwd': os.getcwd(), "
         "'marker': open('marker.txt').read().strip(), 'uid': os.getuid(), 'gid': os.getgid(), "
         "'env': os.environ.get('DEV_ENV'), 'path': os.environ['PATH'], "
         "'home': os.environ.get('HOME'), 'tool': shutil.which('devtool')}))")


class DevEnvd(Envd):
    """The envd CLI of the environments tests, building dev images with the infra's sshd."""

    def __init__(self, home: Path, docker_host: str, sshd_image: str) -> None:
        super().__init__(home, docker_host)
        self.sshd_image = sshd_image

    def env(self) -> dict[str, str]:
        return {**super().env(), "ENVD_SSHD_IMAGE": self.sshd_image}

    def ssh(self, name: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ssh <name>.envd COMMAND`` with the system client and the test's own config."""
        assert shutil.which("ssh"), "the OpenSSH client is missing: scripts/infra installs it"
        proc = subprocess.run(
            ["ssh", "-F", str(self.home / ".ssh" / "config"), "-o", "BatchMode=yes",
             "-o", "LogLevel=ERROR", f"{name}.envd",
             # ssh joins its arguments into one remote shell line, as a shell user quotes them
             command[0] if len(command) == 1 else shlex.join(command)],
            capture_output=True, text=True, timeout=120, check=False, env=self.env())
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {name}.envd exited {proc.returncode}: {proc.stderr}")
        return proc


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, infra: dict[str, Any]) -> Iterator[DevEnvd]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_bytes(USER_SSH)
    yield DevEnvd(home, docker_host, str(infra["SSHD_IMAGE"]))


def dev_project(tmp_path: Path, body: str) -> Path:
    name = f"envd-h8-{uuid.uuid4().hex[:8]}"
    directory = tmp_path / name
    directory.mkdir()
    (directory / "marker.txt").write_text(f"marker {name}\n")
    (directory / "build.envd").write_text("# syntax=v1\ndef build():\n" + "".join(
        f"    {line}\n" for line in body.strip().splitlines()))
    return directory


@pytest.fixture
def project(tmp_path: Path, registry: str, docker_host: str) -> Iterator[Path]:
    """A dev image on the python base (no pip needed): env, an extra PATH entry, a tool there."""
    directory = dev_project(tmp_path, f"""
base(image="{registry}/python:3.11-bookworm", dev=True)
runtime.environ(env={{"DEV_ENV": "from-build"}}, extra_path=["/opt/dev/bin"])
run(["mkdir -p /opt/dev/bin", "printf '#!/bin/sh\\necho devtool' > /opt/dev/bin/devtool",
     "chmod 755 /opt/dev/bin/devtool"])
""")
    yield directory
    docker("rm", "-f", directory.name, docker_host=docker_host, check=False)
    docker("rmi", "-f", f"{directory.name}:dev", docker_host=docker_host, check=False)


def test_up_detach_then_ssh_proves_mount_user_env_and_path(envd: DevEnvd, project: Path,
                                                           docker_host: str) -> None:
    name = project.name
    up = envd("up", "--detach", "--progress", "plain", cwd=project)
    assert f"SSH entry: ssh {name}.envd" in up.stderr
    # the runner chose the port before creating the container and labelled it, as upstream
    label = docker("inspect", "--format", '{{index .Config.Labels "ai.tensorchord.envd.ssh.port"}}',
                   name, docker_host=docker_host).stdout.strip()
    published = docker("port", name, "2222/tcp", docker_host=docker_host).stdout
    assert published.strip() == f"127.0.0.1:{label}"

    seen = json.loads(envd.ssh(name, "python3", "-c", PROBE).stdout)
    assert seen["cwd"] == f"/home/envd/{name}"
    assert seen["marker"] == f"marker {name}"
    assert (seen["uid"], seen["gid"]) == (os.getuid(), os.getgid())  # the building user's
    assert seen["env"] == "from-build" and seen["home"] == "/home/envd"
    assert seen["path"].split(":")[-1] == "/opt/dev/bin" and seen["tool"] == "/opt/dev/bin/devtool"
    # the supervisor keeps a log per service where upstream's horust keeps its
    logs = envd.ssh(name, "cat", "/var/log/envd/sshd.log").stdout
    assert "ssh server v1.3.4 started in 0.0.0.0:2222" in logs

    # --force replaces the running environment; SSH answers in the new one
    first = docker("inspect", "--format", "{{.Id}}", name, docker_host=docker_host).stdout
    envd("up", "--detach", "--force", cwd=project)
    assert docker("inspect", "--format", "{{.Id}}", name, docker_host=docker_host).stdout != first
    assert envd.ssh(name, "echo", "again").stdout.strip() == "again"
    assert envd.ssh_config.count(f"Host {name}.envd".encode()) == 1

    # a killed container shows as such; down removes it and its SSH entry, nothing else
    docker("kill", name, docker_host=docker_host)
    rows = {r["name"]: r for r in json.loads(envd("envs", "ls", "-f", "json").stdout)}
    assert rows[name]["status"] == "exited"
    envd("down", "--name", name)
    assert docker("ps", "-aq", "--filter", f"name=^{name}$",
                  docker_host=docker_host).stdout.strip() == ""
    assert envd.ssh_config == USER_SSH


def _wait_greeting(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.settimeout(1)
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no SSH greeting on 127.0.0.1:{port}")


def test_the_host_key_is_fixed_checked_strictly_and_a_swapped_one_refused(
        envd: DevEnvd, project: Path, docker_host: str) -> None:
    name = project.name
    config_dir = envd.home / "envd-config"
    envd("up", "--detach", "--progress", "plain", cwd=project)
    block = envd.ssh_config.decode()
    known_hosts = config_dir / "known_hosts"
    assert "  StrictHostKeyChecking yes\n" in block and "/dev/null" not in block
    assert f'  UserKnownHostsFile "{known_hosts}"\n' in block
    key_pub = (config_dir / "hostkeys" / f"{name}.pub").read_text().split()[:2]
    assert known_hosts.read_text().split() == [f"{name}.envd", *key_pub]
    # the server presents exactly that key (the real OpenSSH client, strict checking)
    assert envd.ssh(name, "echo", "strict").stdout.strip() == "strict"
    port = int(docker("port", name, "2222/tcp", docker_host=docker_host).stdout.rsplit(":", 1)[1])
    scanned = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert scanned[1:3] == key_pub
    # never in an image layer: the image has no host key, only the container got one
    image_files = docker("run", "--rm", "--entrypoint", "ls", f"{name}:dev", "/var/envd",
                         docker_host=docker_host).stdout.split()
    assert "hostkey" not in image_files

    # another server on that port (a container made by hand from the same image: its sshd
    # makes its own key): OpenSSH refuses to connect
    impostor = f"{name}-impostor"
    docker("rm", "-f", name, docker_host=docker_host)
    try:
        docker("run", "-d", "--name", impostor, "-p", f"127.0.0.1:{port}:2222", f"{name}:dev",
               docker_host=docker_host)
        _wait_greeting(port)
        refused = envd.ssh(name, "echo", "should-not-run", check=False)
        assert refused.returncode != 0 and "should-not-run" not in refused.stdout
        assert "host key" in refused.stderr.lower(), refused.stderr
    finally:
        docker("rm", "-f", impostor, docker_host=docker_host, check=False)

    # re-created by envd: the same key, still trusted
    envd("up", "--detach", cwd=project)
    assert (config_dir / "hostkeys" / f"{name}.pub").read_text().split()[:2] == key_pub
    assert envd.ssh(name, "echo", "kept").stdout.strip() == "kept"

    # --force makes a new environment with a new key, recorded again: SSH works
    envd("up", "--detach", "--force", cwd=project)
    new_pub = (config_dir / "hostkeys" / f"{name}.pub").read_text().split()[:2]
    assert new_pub != key_pub
    assert known_hosts.read_text().split() == [f"{name}.envd", *new_pub]
    assert envd.ssh(name, "echo", "again").stdout.strip() == "again"

    # down removes the key and its known_hosts line with the entry
    envd("down", "--name", name)
    assert not (config_dir / "hostkeys" / name).exists()
    assert known_hosts.read_text() == ""
    assert envd.ssh_config == USER_SSH


def test_owner_uid_on_a_base_without_python(envd: DevEnvd, tmp_path: Path, registry: str,
                                            docker_host: str) -> None:
    project = dev_project(tmp_path, f"""
base(image="{registry}/debian:bookworm", dev=True)
config.owner(uid=1234, gid=2345)
""")
    name = project.name
    try:
        envd("up", "--detach", cwd=project)
        out = envd.ssh(name, "id -u; id -g; id -un; echo $HOME; touch $HOME/x && echo writable")
        assert out.stdout.split() == ["1234", "2345", "envd", "/home/envd", "writable"]
        perms = envd.ssh(name, "stat -c '%a %u' /var/envd/authorized_keys").stdout.split()
        assert perms == ["600", "1234"]
    finally:
        docker("rm", "-f", name, docker_host=docker_host, check=False)
        docker("rmi", "-f", f"{name}:dev", docker_host=docker_host, check=False)


def test_up_attaches_through_ssh_in_a_terminal(envd: DevEnvd, project: Path) -> None:
    main, secondary = os.openpty()
    proc = subprocess.Popen([ENVD, "up", "--progress", "plain"], cwd=project, env=envd.env(),
                            stdin=secondary, stdout=secondary, stderr=secondary,
                            start_new_session=True)
    os.close(secondary)
    try:
        banner = _read_until(main, b"SSH entry: ssh ", 300)
        assert b"SSH entry" in banner, banner[-2000:]
        os.write(main, b"echo ssh-$((6*7)) $(pwd); tty\n")
        out = _read_until(main, b"/dev/pts/", 60)
        assert f"ssh-42 /home/envd/{project.name}".encode() in out, out[-2000:]
        # OpenSSH's client made the session, not the exec fallback; and it knew the host key
        # before it connected (strict checking against envd's known_hosts: no trust on first use)
        assert b"through runner" not in banner + out
        assert b"Permanently added" not in banner + out
        os.write(main, b"exit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)


def _http_status(url: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_jupyter_and_a_daemon_answer_on_their_published_ports(
        envd: DevEnvd, tmp_path: Path, registry: str, docker_host: str, ca_bundle: str,
        buildkit_tcp: str) -> None:
    # pip needs the CA bundle mounted into the build: the tcp builder (dockerd's embedded
    # BuildKit 0.8 is not used for it)
    envd("context", "create", "--name", "tcp-dev", "--builder", "tcp", "--builder-address",
         buildkit_tcp, "--use")
    project = dev_project(tmp_path, f"""
base(image="{registry}/python:3.11-bookworm", dev=True)
install.python()
config.jupyter()
runtime.daemon(commands=[["python3", "-m", "http.server", "8000"]])
runtime.expose(envd_port=8000, service="web")
""")
    name = project.name
    try:
        envd("up", "--detach", "--ca-bundle", ca_bundle, "--timeout", "120s", cwd=project,
             timeout=1200)
        row = {r["name"]: r for r in json.loads(envd("envs", "ls", "-f", "json").stdout)}[name]
        address = row["jupyter_address"]
        label = docker("inspect", "--format",
                       '{{index .Config.Labels "ai.tensorchord.envd.jupyter.address"}}', name,
                       docker_host=docker_host).stdout.strip()
        assert address == label and address.startswith("http://127.0.0.1:")
        assert f"jupyter: {address}" in row["endpoint"]
        assert _http_status(address + "/api", 120) == 200
        web = next(p for p in row["endpoint"].split(", ") if p.startswith("web: "))[5:]
        assert _http_status(web, 60) == 200
        table = envd("envs", "ls").stdout
        assert address in table
    finally:
        docker("rm", "-f", name, docker_host=docker_host, check=False)
        docker("rmi", "-f", f"{name}:dev", docker_host=docker_host, check=False)


def test_bad_input_on_a_dev_image_is_one_line(envd: DevEnvd, project: Path,
                                              docker_host: str) -> None:
    name = project.name
    envd("up", "--detach", cwd=project)
    envd("down", "--name", name)
    for flags, fragment in [
        (("--volume", "/tmp"), "exactly one `:`"),
        (("--volume", "/envd-h8-missing:/data"), "does not exist"),
        (("--name", "envd-h8 bad/name"), "invalid environment name"),
    ]:
        proc = envd("run", "--image", f"{name}:dev", "--detach", "--name", name, *flags,
                    cwd=project, check=False)
        assert fragment in one_line(proc)
        assert envd.ssh_config == USER_SSH


def test_an_image_without_a_shell_is_one_line(envd: DevEnvd, docker_host: str) -> None:
    # the sshd image holds nothing but the envd-sshd binary: no /bin/sh to keep it running
    name = f"envd-h8-{uuid.uuid4().hex[:8]}"
    proc = envd("run", "--image", envd.sshd_image, "--detach", "--name", name, check=False)
    line = one_line(proc)
    assert f"environment `{name}` failed to start" in line and "/bin/sh" in line
    assert envd.ssh_config == USER_SSH
    assert docker("ps", "-aq", "--filter", f"name=^{name}$",
                  docker_host=docker_host).stdout.strip() == ""
