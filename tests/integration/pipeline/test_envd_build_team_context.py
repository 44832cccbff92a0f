"""A team context (a file in the system directory) drives a real build on the shared buildkitd.

The user stores nothing: the context comes from ``ENVD_TEAM_CONTEXTS_DIR``, is probed by
``envd context ls --status`` and builds with ``--context``; the user's store keeps ``default``.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from test_envd_build_support import Envd


@pytest.mark.integration
def test_team_context_probes_and_builds(tmp_path: Path, docker_host: str, ca_bundle: str,
                                        buildkit_tcp: str, registry: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    team = tmp_path / "contexts.d"
    team.mkdir()
    (team / "farm.json").write_text(json.dumps({
        "format": "envd-team-contexts/v1",
        "contexts": [{"name": "farm",
                      "builder": {"type": "tcp", "address": buildkit_tcp.removeprefix("tcp://")},
                      "runner": {"type": "docker"}, "description": "the team's buildkitd"}],
    }))
    monkeypatch.setenv("ENVD_TEAM_CONTEXTS_DIR", str(team))
    envd = Envd(tmp_path / "config", docker_host, ca_bundle)

    listed = json.loads(envd.run("context", "ls", "--status", "--format", "json").stdout)
    (farm,) = [row for row in listed if row["context"] == "farm"]
    assert farm["origin"] == f"file {team / 'farm.json'}"
    assert farm["status"]["reachable"], farm["status"]

    project = tmp_path / "project"
    project.mkdir()
    (project / "build.envd").write_text(
        f'def build():\n    base(image="{registry}/debian:bookworm", dev=False)\n'
        '    runtime.environ(env={"TEAM_BUILD": "1"})\n')
    dest = tmp_path / "image.tar"
    envd.run("--context", "farm", "build", "--progress", "plain", "--output",
             f"type=tar,dest={dest}", cwd=project)
    with tarfile.open(dest) as tar:
        assert any(m.name.removeprefix("./").startswith("etc/") for m in tar.getmembers())
    stored = json.loads((tmp_path / "config" / "contexts.json").read_text())
    assert [c["name"] for c in stored["contexts"]] == ["default"]  # nothing was copied
