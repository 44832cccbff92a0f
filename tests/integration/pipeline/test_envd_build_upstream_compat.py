"""The same build file built by upstream envd v1.3.4 and by us: the image metadata must agree.

Tools around envd (``envd envs ls``, envd-server, the runner) read the ``ai.tensorchord.envd.*``
labels back, so an image built by either CLI should carry the same ones. The file is what
upstream can build here: the CA-carrying python image (upstream cannot mount a CA bundle) and
no ``install.python()`` (upstream fetches micromamba from ghcr.io for it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_envd_build_support import Envd, docker, marker, remove_images

#: Labels whose values must be identical for the same build file.
SAME_VALUE = ("apt.packages", "container.name", "ports", "pypi.commands", "r.packages", "repo",
              "syntax.version", "vendor")


def _write(context: Path, infra: dict[str, Any], mark: str) -> None:
    context.mkdir(parents=True)
    (context / "app.txt").write_text(f"compat {mark}\n")
    (context / "requirements.txt").write_text("six==1.16.0\n")
    (context / "build.envd").write_text(
        "# syntax=v1\n\n"
        "def build():\n"
        f'    base(image="{infra["IMAGE_PYTHON_HOSTCA"]}", dev=False)\n'
        '    install.apt_packages(name=["jq"])\n'
        '    install.python_packages(requirements="requirements.txt")\n'
        f'    runtime.environ(env={{"COMPAT": "{mark}"}}, extra_path=["/opt/compat/bin"])\n'
        '    io.copy(source="app.txt", target="/opt/compat/app.txt")\n'
        '    runtime.expose(envd_port=8000, service="web")\n'
        '    config.entrypoint(["python3", "-c", "import six; print(six.__version__)"])\n')


def _config(image: str, docker_host: str) -> dict[str, Any]:
    docker("pull", "-q", image, docker_host=docker_host)
    raw = docker("inspect", "--type", "image", image, docker_host=docker_host).stdout
    return json.loads(raw)[0]["Config"]


@pytest.fixture
def built(tmp_path: Path, infra: dict[str, Any], upstream_envd: str, docker_host: str,
          ca_bundle: str, buildkit_tcp: str) -> Any:
    """Build the file with both CLIs on the shared tcp buildkitd; yield both image configs."""
    if not infra.get("IMAGE_PYTHON_HOSTCA"):
        pytest.skip("infra has no IMAGE_PYTHON_HOSTCA")
    mark = marker()
    context = tmp_path / "compat"
    _write(context, infra, mark)
    registry, address = infra["REGISTRY"], buildkit_tcp.removeprefix("tcp://")
    theirs, ours = f"{registry}/e2e-{mark}/upstream:1", f"{registry}/e2e-{mark}/ours:1"

    home = tmp_path / "upstream-home"
    (home / ".config" / "containers").mkdir(parents=True)
    (home / ".config" / "containers" / "registries.conf").write_text(
        Path(infra["UPSTREAM_ENVD_REGISTRIES_CONF"]).read_text())
    env = {**os.environ, "HOME": str(home), "ENVD_ANALYTICS": "false"}
    for argv in (["context", "create", "--name", "infra", "--builder", "tcp",
                  "--builder-address", address, "--use"],
                 ["build", "--output", f"type=image,name={theirs},push=true"]):
        proc = subprocess.run([upstream_envd, *argv], capture_output=True, text=True,
                              timeout=600, env=env, cwd=context, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]

    cli = Envd(tmp_path / "config", docker_host, ca_bundle)
    cli.run("context", "create", "--name", "tcp", "--builder", "tcp", "--builder-address",
            address, "--use")
    cli.run("build", "--progress", "plain", "--output", f"type=image,name={ours},push=true",
            cwd=context)
    try:
        yield _config(theirs, docker_host), _config(ours, docker_host), mark
    finally:
        remove_images(docker_host, theirs, ours)


def test_labels_shared_with_upstream_agree(built: Any) -> None:
    """Every label both set has the same value, and ours has upstream's core label set."""
    theirs, ours, _ = built
    prefix = "ai.tensorchord.envd."
    for name in SAME_VALUE:
        assert ours["Labels"].get(prefix + name) == theirs["Labels"].get(prefix + name), name
    assert json.loads(ours["Labels"][prefix + "ports"]) == [
        {"name": "ssh", "port": 2222}, {"name": "web", "port": 8000}]
    assert theirs["Entrypoint"] == ours["Entrypoint"]
    assert theirs.get("ExposedPorts") == ours.get("ExposedPorts")


def test_env_as_declared_in_both(built: Any) -> None:
    """The declared variable and the extra PATH entry are in both images' env."""
    theirs, ours, mark = built
    for config in (theirs, ours):
        env = dict(item.split("=", 1) for item in config["Env"])
        assert env["COMPAT"] == mark
        assert "/opt/compat/bin" in env["PATH"].split(":")


#: What our compiler adds on purpose (see docs/build.md, "Differences from upstream"): the
#: venv our Python packages go into, first on PATH.
OUR_PATH_PREFIX = ["/opt/envd/venv/bin"]


def test_label_set_and_runtime_label_match_upstream(built: Any) -> None:
    """Same label keys; the runtime label (read back by runners) has upstream's shape."""
    theirs, ours, _ = built
    assert set(ours["Labels"]) == set(theirs["Labels"])
    prefix = "ai.tensorchord.envd."
    assert ours["Labels"][prefix + "build.context"] == theirs["Labels"][prefix + "build.context"]
    runtime = prefix + "graph.runtime"
    want = json.loads(theirs["Labels"][runtime])
    # Upstream copies the base image's Env (here just PATH) into environ; ours does not.
    want["environ"].pop("PATH")
    want["env_paths"] = OUR_PATH_PREFIX + want["env_paths"]
    assert json.loads(ours["Labels"][runtime]) == want


def test_general_label_and_env_follow_upstream(built: Any) -> None:
    """graph.general has upstream's Go keys; Env has its PATH order and locale variables."""
    theirs, ours, _ = built
    general = "ai.tensorchord.envd.graph.general"
    their_graph, our_graph = (json.loads(c["Labels"][general]) for c in (theirs, ours))
    assert list(our_graph) == list(their_graph)
    differ = {"PublicKeyPath", "environ", "env_paths"}  # key path; runtime part as above
    assert {k: v for k, v in our_graph.items() if k not in differ} == {
        k: v for k, v in their_graph.items() if k not in differ}
    their_env, our_env = (dict(i.split("=", 1) for i in c["Env"]) for c in (theirs, ours))
    assert our_env["PATH"].split(":") == OUR_PATH_PREFIX + their_env["PATH"].split(":")
    for name in ("LANG", "LC_ALL"):
        assert our_env[name] == their_env[name] == "C.UTF-8"
