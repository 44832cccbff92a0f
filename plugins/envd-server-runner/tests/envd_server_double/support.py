"""Helpers the envd-server tests share (names, logged-in runners)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from envd_server_client.tokens import TokenStore
from envd_server_runner import EnvdServerRunner

from .server import EnvdServerDouble

BUSYBOX = "127.0.0.1:5000/busybox:latest"
ENVD = str(Path(sys.executable).parent / "envd")


class Envd:
    """``envd`` in a subprocess with its own HOME, config dir and SSH config."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir()
        self.ssh_config = root / "ssh_config"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("ENVD_") or k == "ENVD_CA_BUNDLE"}
        self.env.update(HOME=str(self.home), ENVD_CONFIG_DIR=str(root / "envd-config"),
                        ENVD_SSH_CONFIG=str(self.ssh_config))

    def __call__(self, *args: str, cwd: Path | None = None, timeout: float = 600,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([ENVD, *args], env=self.env, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        if check:
            assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-5000:])
        return proc

    def ssh(self, host: str, command: str) -> str:
        proc = subprocess.run(["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", host,
                               command], capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 0, (command, proc.stderr)
        return proc.stdout


def unique(prefix: str = "envd-h13-") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def logged_in(double: EnvdServerDouble, tokens: TokenStore, *, context: str = "ctx",
              user: str | None = None, password: str = "s3cret",
              options: dict[str, str] | None = None) -> EnvdServerRunner:
    """A runner for ``double`` whose user is registered and logged in for ``context``."""
    runner = EnvdServerRunner(double.address, options, context=context, tokens=tokens)
    name = user or unique("user-")
    runner.client().request("POST", "/register", {"login_name": name, "password": password},
                            auth=False)
    runner.login(context, username=name, password=password)
    return runner
