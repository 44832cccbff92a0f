"""Fixtures for the environment tests: a context on the recording runner, a private HOME."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _environments_support import RecordingRunner, recording_plugin

from envd_core.testing import EnvdCli, StubBuilder


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("envd_core.testing"):
        config.pluginmanager.import_plugin("envd_core.testing")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME with a user's own ~/.ssh/config (no trailing newline on purpose)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_bytes(b"Host mine\n  HostName example.org\n  Port 2200")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ENVD_SSH_CONFIG", raising=False)
    return home


@pytest.fixture
def envs_cli(cli: EnvdCli, register_plugin: Callable[..., str], home: Path,
             envd_config_dir: Path) -> EnvdCli:
    """``cli`` with a current context whose runner is :class:`RecordingRunner`."""
    RecordingRunner.reset()
    register_plugin(recording_plugin())
    created = cli("context", "create", "--name", "rec", "--builder", StubBuilder.name,
                  "--builder-address", "x", "--runner", RecordingRunner.name, "--use")
    assert created.exit_code == 0, created
    # a key pair in place, so these tests never wait for ssh-keygen (test_keys covers that)
    for name in ("id_rsa_envd", "id_rsa_envd.pub"):
        (envd_config_dir / name).write_text("test key\n")
    return cli
