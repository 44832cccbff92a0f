"""``envd up`` on an envd-server context, end to end, through the real ``envd`` console script.

Build on the shared buildkitd (``tcp``), push to the local registry, create the environment on
the double, wait for ``Running``, write the gateway's SSH entry, ``--sync`` the project; then the
system OpenSSH client reaches the environment with ``ssh <name>.envd``, ``envd sync`` carries a
local change over, and ``envd down`` removes the environment and the entry.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from envd_server_double import EnvdServerDouble
from envd_server_double.support import Envd, unique


def test_up_sync_ssh_and_down(double: EnvdServerDouble, tmp_path: Path, sshd_image: str,
                              infra: dict[str, Any]) -> None:
    envd = Envd(tmp_path)
    envd("context", "create", "--name", "srv", "--builder", "tcp",
         "--builder-address", str(infra["BUILDKIT_TCP"]).removeprefix("tcp://"),
         "--runner", "envd-server", "--runner-address", double.address,
         "--runner-opt", f"ssh-port={double.gateway.port}", "--use")
    user = unique("up-")
    envd("login", "-u", user)  # register, log in, upload envd's public key
    project = tmp_path / "proj"
    project.mkdir()
    (project / "build.envd").write_text(textwrap.dedent(f"""\
        def build():
            base(image="{sshd_image}", dev=False)
            # a non-dev build runs as root: drop to envd as a dev image's supervisor does
            config.entrypoint(["setpriv", "--reuid=envd", "--regid=envd", "--init-groups",
                               "/usr/bin/envd-sshd", "--port", "2222", "--shell", "/bin/bash"])
        """))
    (project / "hello.txt").write_text("first\n")
    name = unique()
    tag = f"{infra['REGISTRY']}/envd-test/server-up:{name}"
    up = envd("up", "--path", str(project), "--name", name, "--tag", tag, "--detach",
              "--sync", "--timeout", "120s")
    assert f"ssh {name}.envd" in up.stderr
    # the entry goes through the gateway as <login>/<env>, as upstream writes it
    config = envd.ssh_config.read_text()
    assert f"Host {name}.envd\n" in config and f"  User {user}/{name}\n" in config
    assert f"  Port {double.gateway.port}\n" in config and "ForwardAgent" not in config
    # the image was pushed where the server pulls it from
    assert double.images[tag]["name"] == tag

    remote = f"/home/envd/{project.name}"
    assert envd.ssh(f"{name}.envd", f"id -un; cat {remote}/hello.txt").split() == [
        "envd", "first"]

    # a local change reaches the environment with `envd sync`
    (project / "hello.txt").write_text("second\n")
    (project / "sub").mkdir()
    (project / "sub" / "new.txt").write_text("new\n")
    envd("sync", "--path", str(project), "--name", name)
    assert envd.ssh(f"{name}.envd", f"cat {remote}/hello.txt {remote}/sub/new.txt").split() == [
        "second", "new"]

    rows = json.loads(envd("envs", "ls", "--format", "json").stdout)
    row = next(r for r in rows if r["name"] == name)
    assert row["status"] == "running" and row["ssh_target"] == f"{name}.envd"

    envd("down", "--name", name)
    assert f"Host {name}.envd" not in envd.ssh_config.read_text()
    assert not double.docker.containers.list(all=True,
                                             filters={"name": double.container_name(name)})


def _one_line(proc: Any) -> str:
    """The error of a failed command: exactly one `envd:` line (and a hint), no traceback."""
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("envd: ")]
    assert len(lines) == 1, proc.stderr
    return str(lines[0])


def test_errors_through_the_cli_are_one_line(double: EnvdServerDouble, tmp_path: Path,
                                             not_envd_server: str) -> None:
    envd = Envd(tmp_path)
    envd("context", "create", "--name", "srv", "--builder", "tcp", "--builder-address",
         "127.0.0.1:1234", "--runner", "envd-server", "--runner-address", double.address,
         "--use")
    envd("login", "-u", unique("err-"))
    token_file = Path(envd.env["ENVD_CONFIG_DIR"]) / "envd-server" / "srv.json"
    data = json.loads(token_file.read_text())
    header, claims, signature = data["token"].split(".")
    token_file.write_text(json.dumps({**data, "token": f"{header}.{claims}.x{signature[1:]}"}))
    proc = envd("envs", "ls", check=False)
    assert _one_line(proc) == (f"envd: envd-server at `{double.address}` refused the request "
                               "(401 Unauthorized): invalid token: signature is invalid")
    assert "envd login" in proc.stderr  # the hint: log in again
    assert data["token"].split(".")[2] not in proc.stderr

    for name, address, expected in (
            ("gone", "http://127.0.0.1:9", ("envd: cannot reach envd-server at "
                                           "`http://127.0.0.1:9`: Connection refused")),
            ("other", not_envd_server, (f"envd: `{not_envd_server}` is not an envd-server: "
                                       "POST /login answered 404 without envd-server's error "
                                       "JSON"))):
        envd("context", "create", "--name", name, "--builder", "tcp", "--builder-address",
             "127.0.0.1:1234", "--runner", "envd-server", "--runner-address", address)
        proc = envd("--context", name, "login", "-u", "x", "-p", "y", check=False)
        assert _one_line(proc) == expected
