"""``ssh <name>.envd`` through the double's SSH gateway, with the system OpenSSH client.

The environment is a real container running OpenSSH's sshd (the ``sshd_image`` fixture); the
gateway (asyncssh) checks the key registered with ``POST /users/:login/keys`` and relays to it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

from envd_server_client.tokens import TokenStore
from envd_server_double import EnvdServerDouble
from envd_server_double.support import unique
from envd_server_runner import EnvdServerRunner

from envd_core.environment import EnvironmentSpec, PortMapping
from envd_core.environments.sshconfig import SSHConfig


def _key(directory: Path, name: str) -> Path:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _ssh(config: Path, host: str, *command: str, data: bytes | None = None,
         ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes",
                           "-o", "ConnectTimeout=20", host, *command],
                          input=data, capture_output=True, timeout=120, check=False)


def _runner(double: EnvdServerDouble, tokens: TokenStore, context: str, user: str,
            key: Path) -> EnvdServerRunner:
    runner = EnvdServerRunner(double.address, {"ssh-port": str(double.gateway.port)},
                              context=context, tokens=tokens)
    runner.login(context, username=user, public_key=key.with_suffix(".pub").read_text())
    return runner


def test_ssh_through_the_gateway(double: EnvdServerDouble, tokens: TokenStore, tmp_path: Path,
                                 sshd_image: str) -> None:
    key = _key(tmp_path, "alice_key")
    alice = _runner(double, tokens, "a", unique("alice-"), key)
    name = unique()
    created = alice.create(EnvironmentSpec(
        name=name, image=sshd_image, working_dir="/home/envd/proj",
        ports=(PortMapping(2222, service="ssh"), PortMapping(8888, service="jupyter"))))
    config = SSHConfig(tmp_path / "ssh_config")
    entry = alice.ssh_entry(created, host=f"{name}.envd", identity_file=key)
    assert entry is not None
    config.set(entry)
    block = (config.get(f"{name}.envd") or b"").decode()
    # upstream's envd-server entry: the gateway, user <login>/<env>, no agent, ports forwarded
    assert f"  User {alice.credential().login_name}/{name}\n" in block
    assert f"  Port {double.gateway.port}\n" in block and "  HostName 127.0.0.1\n" in block
    assert "ForwardAgent" not in block
    assert "  LocalForward 8888 localhost:8888\n" in block

    proc = _ssh(config.path, f"{name}.envd", "id -un; hostname; exit 7")
    assert proc.returncode == 7, proc.stderr  # the exit status comes back through the relay
    container = double.docker.containers.get(double.container_name(name))
    # user envd, in that environment's container (its hostname is the container's short id)
    assert proc.stdout.decode().split() == ["envd", container.id[:12]]

    # binary data both ways, intact (what `envd sync` relies on)
    blob = os.urandom(300_000)
    proc = _ssh(config.path, f"{name}.envd", "sha256sum", data=blob)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0].decode() == hashlib.sha256(blob).hexdigest()

    # ssh -L (what the entry's LocalForward lines do) goes on from inside the environment:
    # here to the environment's own SSH server, which greets through the tunnel
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    tunnel = subprocess.Popen(
        ["ssh", "-F", str(config.path), "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
         "-N", "-L", f"{local}:localhost:2222", f"{name}.envd"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
                    assert conn.recv(8).startswith(b"SSH-2.0")
                    break
            except ConnectionRefusedError:
                assert tunnel.poll() is None and time.monotonic() < deadline, tunnel.stderr
                time.sleep(0.5)
    finally:
        tunnel.terminate()
        tunnel.wait(10)


def test_gateway_refuses_foreign_keys_and_environments(
        double: EnvdServerDouble, tokens: TokenStore, tmp_path: Path, sshd_image: str) -> None:
    alice_key, bob_key = _key(tmp_path, "alice_key"), _key(tmp_path, "bob_key")
    alice = _runner(double, tokens, "a", unique("alice-"), alice_key)
    bob = _runner(double, tokens, "b", unique("bob-"), bob_key)
    name = unique()
    env = alice.create(EnvironmentSpec(name=name, image=sshd_image))
    config = SSHConfig(tmp_path / "ssh_config")
    good = alice.ssh_entry(env, host="good.envd", identity_file=alice_key)
    assert good is not None
    config.set(good)
    assert _ssh(config.path, "good.envd", "true").returncode == 0
    # bob's key for alice's login; bob's login for alice's environment; a missing environment
    bob_name = bob.credential().login_name
    for host, user, key in (("k.envd", good.user, bob_key),
                            ("o.envd", f"{bob_name}/{name}", bob_key),
                            ("m.envd", f"{alice.credential().login_name}/missing", alice_key)):
        config.set(type(good)(host=host, hostname=good.hostname, port=good.port,
                              identity_file=str(key), user=user, forward_agent=False))
        proc = _ssh(config.path, host, "true")
        assert proc.returncode == 255, (host, proc)
        assert b"Permission denied (publickey)" in proc.stderr, (host, proc.stderr)
