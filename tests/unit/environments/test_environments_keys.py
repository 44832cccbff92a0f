"""The envd key pair: generated once (0600, RSA PEM), or upstream's reused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from envd_core.environments.keys import ensure_key_pair, find_key_pair


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_generated_once_with_private_modes(tmp_path: Path, home: Path) -> None:
    config = tmp_path / "cfg"
    key = ensure_key_pair(config)
    assert key == config / "id_rsa_envd"
    assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert key.with_suffix(".pub").read_text().startswith("ssh-rsa ")
    for path in (key, key.with_suffix(".pub")):
        assert os.stat(path).st_mode & 0o777 == 0o600
    before = key.read_bytes()
    assert ensure_key_pair(config) == key and key.read_bytes() == before
    assert sorted(p.name for p in config.iterdir() if not p.name.startswith(".")) == [
        "id_rsa_envd", "id_rsa_envd.pub"]


def test_upstreams_pair_is_reused(tmp_path: Path, home: Path) -> None:
    upstream = home / ".config" / "envd"
    upstream.mkdir(parents=True)
    (upstream / "id_rsa_envd").write_text("private")
    (upstream / "id_rsa_envd.pub").write_text("public")
    config = tmp_path / "ours"
    assert ensure_key_pair(config) == upstream / "id_rsa_envd"
    assert not config.exists()  # nothing generated


def test_half_a_pair_is_not_a_pair(tmp_path: Path, home: Path) -> None:
    (tmp_path / "id_rsa_envd").write_text("private only")
    assert find_key_pair(tmp_path) is None
