"""``envd context import --from-upstream`` takes over upstream's envd-server login.

``data/upstream/contexts`` and ``data/upstream/auth`` were written by the real upstream envd
v1.3.4 (the infra's binary) in an empty HOME: ``context create --name srv --runner envd-server``
against the double, then ``login -u alice`` and ``login -u bob`` (bob is current). Their tokens
were issued by a double with the default secret and name no real server.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from envd_server_runner import EnvdServerRunner

from envd_core.contexts import gob
from envd_core.testing import EnvdCli, StubBuilder, make_plugin

DATA = Path(__file__).parent / "data" / "upstream"


def _upstream_tokens() -> dict[str, str]:
    (value,) = gob.decode((DATA / "auth").read_bytes()).values
    return {entry["Name"]: entry["JWTToken"] for entry in value.value["Auth"]}


@pytest.fixture
def upstream_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, envd_config_dir: Path,
                  register_plugin: Callable[..., str]) -> Path:
    home = tmp_path / "home"
    shutil.copytree(DATA, home / ".config" / "envd")
    monkeypatch.setenv("HOME", str(home))
    register_plugin(make_plugin(builders=[StubBuilder], runners=[EnvdServerRunner]))
    return home


def _token_file(config: Path, context: str = "srv") -> Path:
    return config / "envd-server" / f"{context}.json"


def test_dry_run_then_import_then_again(cli: EnvdCli, upstream_home: Path,
                                        envd_config_dir: Path) -> None:
    tokens = _upstream_tokens()
    dry = cli("context", "import", "--from-upstream", "--dry-run")
    assert dry.exit_code == 0, dry
    assert "envd-server login `bob` for context srv: would be imported" in dry.stderr
    assert not _token_file(envd_config_dir).exists()

    done = cli("context", "import", "--from-upstream")
    assert done.exit_code == 0, done
    assert "envd-server login `bob` for context srv: imported" in done.stderr
    stored = _token_file(envd_config_dir)
    assert stored.stat().st_mode & 0o777 == 0o600
    data = json.loads(stored.read_text())
    # upstream's current login (bob), for the server of the imported context
    assert data["login_name"] == "bob" and data["token"] == tokens["bob"]
    assert data["address"].startswith("http://127.0.0.1:")
    for output in (dry, done):
        assert not any(t in output.stdout + output.stderr for t in tokens.values())

    again = cli("context", "import", "--from-upstream", "--format", "json")
    assert again.exit_code == 0, again
    report = json.loads(again.stdout)
    assert report["logins"] == [{"context": "srv", "login_name": "bob", "action": "unchanged",
                                 "reason": "this login is kept already"}]
    assert not any(t in again.stdout for t in tokens.values())
    assert "auth" not in report["not_imported"]
    assert json.loads(stored.read_text()) == data


def test_a_login_of_our_own_is_kept(cli: EnvdCli, upstream_home: Path,
                                    envd_config_dir: Path) -> None:
    stored = _token_file(envd_config_dir)
    stored.parent.mkdir(parents=True)
    mine = {"address": "http://elsewhere:8080", "login_name": "me", "token": "mine"}
    stored.write_text(json.dumps(mine))
    result = cli("context", "import", "--from-upstream")
    assert result.exit_code == 0, result
    assert ("envd-server login `bob` for context srv: skipped (context holds its own login "
            "(`me`); `envd --context srv logout` first to replace it)") in result.stderr
    assert json.loads(stored.read_text()) == mine


@pytest.mark.parametrize("damage", ["truncated", "empty", "contexts-file"])
def test_a_damaged_login_file_stops_the_import_unwritten(
        cli: EnvdCli, upstream_home: Path, envd_config_dir: Path, damage: str) -> None:
    auth = upstream_home / ".config" / "envd" / "auth"
    original = auth.read_bytes()
    if damage == "truncated":
        auth.write_bytes(original[: len(original) // 2])
    elif damage == "empty":
        auth.write_bytes(b"")
    else:  # another gob file of upstream's: an EnvdContext, not an EnvdAuth
        auth.write_bytes((upstream_home / ".config" / "envd" / "contexts").read_bytes())
    before = sorted(p.name for p in envd_config_dir.glob("*")) if envd_config_dir.exists() else []
    result = cli("context", "import", "--from-upstream")
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("envd:")]
    assert len(lines) == 1 and "is not a login file upstream envd writes" in lines[0], result
    after = sorted(p.name for p in envd_config_dir.glob("*")) if envd_config_dir.exists() else []
    assert after == before  # no context, no token stored
    assert not _token_file(envd_config_dir).exists()
