"""Fixtures of the bootstrap tests: a private home, and a context on the recording builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bootstrap_doubles import RecordingBuilder

from envd_core.testing import StubRunner, make_plugin


@pytest.fixture(autouse=True)
def _private_home(envd_config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``envd bootstrap`` writes shell completion under the user's data dir and makes an SSH
    key pair: both go to this test's directories (a fake pair, to skip ssh-keygen here)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("SHELL", "/bin/bash")
    envd_config_dir.mkdir(parents=True, exist_ok=True)
    (envd_config_dir / "id_rsa_envd").write_text("private\n")
    (envd_config_dir / "id_rsa_envd.pub").write_text("public\n")


@pytest.fixture
def recording(cli: Any, register_plugin: Any) -> type[RecordingBuilder]:
    RecordingBuilder.calls = []
    RecordingBuilder.daemon = "missing"
    RecordingBuilder.connect_fails = False
    register_plugin(make_plugin(builders=[RecordingBuilder], runners=[StubRunner]))
    made = cli("context", "create", "--name", "rec", "--builder", "recording",
               "--builder-address", "pretend", "--runner", StubRunner.name, "--use")
    assert made.exit_code == 0, made
    return RecordingBuilder
