"""``envd envs ls`` on an envd-server context: the fast path prints the full CLI's bytes.

One double (real HTTP, a real container behind the environment) serves both ways in, run as
fresh interpreters through ``envd_core.cli`` (the console script's entry): ``main`` (the fast
path when it can) and ``app.main`` (the full click CLI, plugins loaded). Only this test's user
lists the double's environments, so nothing changes between the runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from envd_server_client.tokens import TokenStore
from envd_server_double import EnvdServerDouble
from envd_server_double.support import unique
from envd_server_runner import EnvdServerRunner

from envd_core.environment import EnvironmentSpec, PortMapping
from envd_core.testing import CliProbe

BUSYBOX = "127.0.0.1:5000/busybox:latest"
HEAVY = ("click", "pluggy", "attrs", "attr", "docker", "requests", "urllib3", "grpc",
         "kubernetes", "email", "http", "hashlib")

Envd = CliProbe


@pytest.fixture
def envd(tmp_path: Path, double: EnvdServerDouble) -> Envd:
    """A context on the double, logged in, with one running environment listed."""
    tool = Envd(tmp_path)
    report, _out, err = tool.run("context", "create", "--name", "srv", "--builder", "tcp",
                                 "--builder-address", "127.0.0.1:1234", "--runner",
                                 "envd-server", "--runner-address", double.address,
                                 "--runner-opt", "ssh-port=2022", "--use")
    assert report["code"] == 0, err
    user = unique("fast-")
    report, _out, err = tool.run("login", "-u", user)
    assert report["code"] == 0, err
    runner = EnvdServerRunner(double.address, {"ssh-port": "2022"}, context="srv",
                              tokens=TokenStore(tmp_path / "cfg" / "envd-server"))  # the CLI's
    runner.create(EnvironmentSpec(
        name=unique(), image=BUSYBOX, command=("sleep", "600"),
        ports=(PortMapping(2222, service="ssh"), PortMapping(8888, service="jupyter")),
        labels={"ai.tensorchord.envd.gpu": "true"},
    ))
    tool.run("envs", "ls")  # the plugin index, written by the full CLI
    return tool


@pytest.mark.parametrize("args", [["envs", "ls"], ["envs", "ls", "--format", "json"],
                                  ["--context", "srv", "envs", "list", "-fjson"]],
                         ids=" ".join)
def test_fast_envs_ls_prints_the_full_clis_bytes(envd: Envd, args: list[str]) -> None:
    full = envd.run(*args, mode="full")
    fast = envd.run(*args)
    assert "click" not in fast[0]["modules"], "expected the fast path"
    assert "click" in full[0]["modules"]
    assert (fast[0]["code"], fast[1], fast[2]) == (full[0]["code"], full[1], full[2])
    assert fast[0]["code"] == 0 and fast[1].strip()


def test_fast_envs_ls_row(envd: Envd) -> None:
    report, out, _err = envd.run("envs", "ls", "--format", "json")
    assert "click" not in report["modules"]
    [row] = json.loads(out)
    assert row["status"] == "running" and row["gpu"] is True
    assert row["ssh_port"] == 2022 and row["endpoint"] == "jupyter: http://127.0.0.1:8888"
    assert row["ssh_target"] == f"{row['name']}.envd" and len(row["id"]) == 12
    assert row["image"] == BUSYBOX


def test_fast_envs_ls_imports_nothing_heavy(envd: Envd) -> None:
    report, out, _err = envd.run("envs", "ls")
    assert report["code"] == 0 and out.strip()
    heavy = sorted(set(report["modules"]) & set(HEAVY))
    assert heavy == [], f"the fast path of envs ls imported {heavy}"
    assert "envd_server_runner" not in report["modules"], "only the light package loads"


def test_a_refused_token_is_the_full_clis_one_line(envd: Envd, double: EnvdServerDouble,
                                                   tmp_path: Path) -> None:
    token_file = tmp_path / "cfg" / "envd-server" / "srv.json"
    data = json.loads(token_file.read_text())
    header, claims, signature = data["token"].split(".")
    token_file.write_text(json.dumps({**data, "token": f"{header}.{claims}.x{signature[1:]}"}))
    report, out, err = envd.run("envs", "ls")
    assert report["code"] == 1 and out == ""
    assert "click" in report["modules"], "an error declines to the full CLI, which reports it"
    assert err.splitlines()[0] == (f"envd: envd-server at `{double.address}` refused the "
                                   "request (401 Unauthorized): invalid token: signature is "
                                   "invalid")
