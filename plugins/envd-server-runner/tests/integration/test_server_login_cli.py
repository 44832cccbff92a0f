"""``envd login``/``logout`` through the CLI against a double: the token stays out of sight."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from envd_server_double import EnvdServerDouble
from envd_server_runner import EnvdServerRunner

from envd_core.testing import EnvdCli, StubBuilder, make_plugin


def test_login_and_logout_through_the_cli(
        cli: EnvdCli, register_plugin: Callable[..., str], envd_config_dir: Path,
        double: EnvdServerDouble) -> None:
    register_plugin(make_plugin(builders=[StubBuilder], runners=[EnvdServerRunner]))
    created = cli("context", "create", "--name", "team", "--builder", StubBuilder.name,
                  "--builder-address", "x", "--runner", "envd-server",
                  "--runner-address", double.address, "--use")
    assert created.exit_code == 0, created
    result = cli("login", "-u", "gina", "--password-stdin", input="pw\n")
    # with a password upstream only logs in: gina does not exist yet
    assert result.exit_code == 1, result
    assert result.stderr_lines[0] == (f"envd: login as `gina` at envd-server `{double.address}` "
                                      "failed: failed to login: wrong login name or password")
    result = cli("login", "-u", "gina")  # no password: register, then log in
    assert result.exit_code == 0, result
    assert result.stdout == "Login succeeded\n"
    token_file = envd_config_dir / "envd-server" / "team.json"
    token = json.loads(token_file.read_text())["token"]
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token not in result.stdout + result.stderr
    # the key pair was made in the config dir and its public half registered as `default`
    public = (envd_config_dir / "id_rsa_envd.pub").read_text().strip()
    assert double.keys[("gina", "default")] == public
    inspected = cli("context", "inspect", "team")
    assert token not in inspected.stdout + inspected.stderr
    assert "team.json" not in (envd_config_dir / "contexts.json").read_text()
    result = cli("logout")
    assert result.exit_code == 0 and result.stdout == "Removed the login of context team\n"
    assert not token_file.exists()
