"""Upstream envd's own envd-server client (v1.3.4) against the double: the wire really matches."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from envd_server_client.tokens import TokenStore
from envd_server_double import EnvdServerDouble
from envd_server_double.support import BUSYBOX, Envd, unique
from envd_server_runner import EnvdServerRunner

from envd_core.environment import EnvironmentSpec


def _upstream(binary: str, home: Path, *args: str) -> str:
    env = {**os.environ, "HOME": str(home)}
    env.pop("ENVD_SERVER_HOST", None)
    proc = subprocess.run([binary, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def test_upstream_login_list_and_destroy(upstream_envd: str, double: EnvdServerDouble,
                                         tokens: TokenStore, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _upstream(upstream_envd, home, "context", "create", "--name", "srv", "--builder", "tcp",
              "--builder-address", "127.0.0.1:1234", "--runner", "envd-server",
              "--runner-address", double.address, "--use")
    user = unique("up-")
    _upstream(upstream_envd, home, "login", "-u", user)  # register + login + key upload
    assert (user, "default") in double.keys
    # our runner logs in as the same user and creates an environment…
    ours = EnvdServerRunner(double.address, context="srv", tokens=tokens)
    ours.login("srv", username=user)
    name = unique()
    ours.create(EnvironmentSpec(name=name, image=BUSYBOX, command=("sleep", "120")))
    # …which upstream lists from the same JSON, and destroys through the same route
    rows = [line.split() for line in _upstream(upstream_envd, home, "envs", "ls").splitlines()]
    row = next(r for r in rows if r and r[0] == name)
    assert f"{name}.envd" in row and BUSYBOX in row and row[-1] == "Running"
    _upstream(upstream_envd, home, "destroy", "--name", name)
    assert name not in {e.name for e in ours.list_environments()}
    assert not double.docker.containers.list(all=True,
                                             filters={"name": double.container_name(name)})


def test_our_envd_takes_over_upstreams_login(upstream_envd: str, double: EnvdServerDouble,
                                             tmp_path: Path) -> None:
    """Upstream logs in; `envd context import --from-upstream` takes context and login over;
    our `envd envs ls` then lists upstream's user's environment with that token."""
    ours = Envd(tmp_path)
    _upstream(upstream_envd, ours.home, "context", "create", "--name", "srv", "--builder",
              "tcp", "--builder-address", "127.0.0.1:1234", "--runner", "envd-server",
              "--runner-address", double.address, "--use")
    user = unique("up-")
    _upstream(upstream_envd, ours.home, "login", "-u", user)
    runner = EnvdServerRunner(double.address, context="x", tokens=TokenStore(tmp_path / "t"))
    runner.login("x", username=user)
    name = unique()
    runner.create(EnvironmentSpec(name=name, image=BUSYBOX, command=("sleep", "120")))

    imported = ours("context", "import", "--from-upstream", "--use")
    assert f"envd-server login `{user}` for context srv: imported" in imported.stderr
    listed = json.loads(ours("envs", "ls", "--format", "json").stdout)
    assert [row["name"] for row in listed] == [name]
    again = ours("context", "import", "--from-upstream")
    assert f"envd-server login `{user}` for context srv: unchanged" in again.stderr
