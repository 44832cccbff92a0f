"""``envd init`` writes a file that builds for real; ``init``/``new`` take upstream's flags.

The build runs on the tcp buildkitd and loads into the infra's dockerd; the image's Python is
asked for the package that the detected requirements.txt named.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from test_envd_build_support import Envd, docker, marker, remove_images

pytestmark = pytest.mark.integration


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str, buildkit_tcp: str) -> Envd:
    cli = Envd(tmp_path / "config", docker_host, ca_bundle)
    cli.run("context", "create", "--name", "tcp-init", "--builder", "tcp", "--builder-address",
            buildkit_tcp, "--use")
    return cli


def test_init_file_builds_and_has_the_requirements(envd: Envd, tmp_path: Path, registry: str,
                                                   docker_host: str) -> None:
    mark = marker()
    project = tmp_path / f"proj{mark}"
    project.mkdir()
    (project / "requirements.txt").write_text(f"six  # {mark}\n")
    envd.run("init", "--path", str(project), "--base", f"{registry}/python:3.11-bookworm",
             "--no-jupyter", "--cuda", "no")
    assert 'install.python_packages(requirements="requirements.txt")' in (
        project / "build.envd").read_text()
    image = f"init-{mark}:dev"
    try:
        envd.build(project, "--tag", image)
        out = docker("run", "--rm", "--entrypoint", "python3", image, "-c",
                     "import six, sys; print(sys.version_info[:2], six.__version__)",
                     docker_host=docker_host).stdout
        assert out.startswith("(3, 11)"), out
    finally:
        remove_images(docker_host, image)


def _flags(help_text: str) -> set[str]:
    """Every ``--long`` and ``-s`` flag an OPTIONS section names."""
    options = help_text.split("OPTIONS:", 1)[-1] if "OPTIONS:" in help_text else help_text
    return set(re.findall(r"(?<![\w-])(--[a-z][\w-]*|-[a-z])\b", options))


@pytest.mark.parametrize("command", ["init", "new", "completion"])
def test_same_flags_as_upstream(envd: Envd, upstream_envd: str, tmp_path: Path,
                                command: str) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "ENVD_ANALYTICS": "false"}
    theirs = subprocess.run([upstream_envd, command, "--help"], capture_output=True, text=True,
                            env=env, timeout=60, check=True).stdout
    ours = envd.run(command, "--help").stdout
    missing = _flags(theirs) - _flags(ours)
    assert not missing, f"upstream `{command}` flags ours lacks: {sorted(missing)}"
    # the parse found upstream's flags
    assert ({"--shell", "--no-install"} if command == "completion" else {"--path", "--force"}) \
        <= _flags(theirs)
