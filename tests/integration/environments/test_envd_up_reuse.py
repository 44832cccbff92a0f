"""``envd up`` of an unchanged project keeps the image of its last solve (envd_core.pipeline.reuse).

The real dockerd (default context: moby-worker builder, docker runner) and the ``envd`` console
script with a private HOME and config dir, as in test_envd_environments. Each rule of
:mod:`envd_core.pipeline.reuse` that a real build can exercise has a test here that fails
without it: the second ``up`` must solve again whenever the image a solve would make may differ.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_envd_environments import Envd, docker

pytestmark = pytest.mark.integration

UP_TO_DATE = "is up to date"


@pytest.fixture
def envd(tmp_path: Path, docker_host: str) -> Envd:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    return Envd(home, docker_host)


@pytest.fixture
def project(tmp_path: Path, docker_host: str) -> Iterator[Path]:
    name = f"envd-h8-reuse-{uuid.uuid4().hex[:8]}"
    directory = tmp_path / name
    directory.mkdir()
    yield directory
    docker("rm", "-f", name, docker_host=docker_host, check=False)
    docker("rmi", "-f", f"{name}:dev", docker_host=docker_host, check=False)


def write(project: Path, base: str, extra: str = "") -> None:
    (project / "build.envd").write_text(
        "# syntax=v1\ndef build():\n"
        f'    base(image="{base}", dev=False)\n'
        '    runtime.environ(env={"REUSE": "1"})\n' + (f"    {extra}\n" if extra else ""))


def up(envd: Envd, project: Path, tmp_path: Path, *, force: bool = False,
       **env: str) -> tuple[str, dict[str, Any]]:
    """``envd up --detach`` then ``down``; (its stderr, its ENVD_TIMINGS phases, with the
    Docker request count as ``requests``)."""
    timings = tmp_path / "timings.json"
    timings.unlink(missing_ok=True)
    saved = envd.env
    envd.env = lambda: {**saved(), "ENVD_TIMINGS": str(timings), **env}  # type: ignore[method-assign]
    try:
        proc = envd("up", "--detach", "--progress", "plain", *(["--force"] if force else []),
                    cwd=project)
    finally:
        envd.env = saved  # type: ignore[method-assign]
    envd("down", "--name", project.name)
    doc = json.loads(timings.read_text())
    return proc.stderr, {**doc["phases"], "requests": doc["counts"]["docker requests"]}


def image_id(ref: str, docker_host: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", ref,
                  docker_host=docker_host).stdout.strip()


def test_unchanged_project_keeps_its_image_without_a_solve(
        envd: Envd, project: Path, tmp_path: Path, registry: str, docker_host: str) -> None:
    write(project, f"{registry}/busybox:latest")
    first, phases = up(envd, project, tmp_path)
    assert UP_TO_DATE not in first and "session" in phases
    built = image_id(f"{project.name}:dev", docker_host)

    second, phases = up(envd, project, tmp_path)
    assert UP_TO_DATE in second, second
    assert "session" not in phases and "solve (with push)" not in phases, phases
    # version, the name check, the tag and base inspects, create, start, inspect: the image is
    # not looked up again by the launch
    assert phases["requests"] <= 7, phases
    assert image_id(f"{project.name}:dev", docker_host) == built

    # the switch of the definition cache turns it off, and --force (upstream: "force rebuild
    # and run") always solves
    off, phases = up(envd, project, tmp_path, ENVD_EVAL_CACHE="0")
    assert UP_TO_DATE not in off and "session" in phases
    forced, phases = up(envd, project, tmp_path, force=True)
    assert UP_TO_DATE not in forced and "session" in phases


def test_a_base_tag_moved_in_dockerd_is_solved_again(
        envd: Envd, project: Path, tmp_path: Path, registry: str, docker_host: str) -> None:
    # dockerd's BuildKit takes a base tag from dockerd's store: moving it changes the build
    base = f"{registry}/{project.name}-base:1"
    docker("tag", f"{registry}/busybox:latest", base, docker_host=docker_host)
    try:
        write(project, base)
        up(envd, project, tmp_path)
        before = image_id(f"{project.name}:dev", docker_host)
        docker("tag", f"{registry}/debian:bookworm", base, docker_host=docker_host)
        again, _ = up(envd, project, tmp_path)
        assert UP_TO_DATE not in again, again
        after = image_id(f"{project.name}:dev", docker_host)
        assert after != before
        layers = docker("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                        f"{project.name}:dev", docker_host=docker_host).stdout
        debian = docker("image", "inspect", "--format", "{{index .RootFS.Layers 0}}",
                        f"{registry}/debian:bookworm", docker_host=docker_host).stdout.strip()
        assert debian in layers
    finally:
        docker("rmi", base, docker_host=docker_host, check=False)


def test_a_tag_moved_by_hand_is_solved_again(
        envd: Envd, project: Path, tmp_path: Path, registry: str, docker_host: str) -> None:
    write(project, f"{registry}/busybox:latest")
    up(envd, project, tmp_path)
    built = image_id(f"{project.name}:dev", docker_host)
    docker("tag", f"{registry}/busybox:latest", f"{project.name}:dev", docker_host=docker_host)
    again, _ = up(envd, project, tmp_path)
    assert UP_TO_DATE not in again, again
    assert image_id(f"{project.name}:dev", docker_host) == built

    docker("rmi", f"{project.name}:dev", docker_host=docker_host)
    gone, _ = up(envd, project, tmp_path)
    assert UP_TO_DATE not in gone, gone


def test_a_local_source_is_solved_again(
        envd: Envd, project: Path, tmp_path: Path, registry: str, docker_host: str) -> None:
    # the build file does not read data.txt (BuildKit copies it), so the definition is the same
    # bytes after an edit: only a solve sees the new content
    (project / "data.txt").write_text("one\n")
    write(project, f"{registry}/busybox:latest", 'io.copy("data.txt", "/data.txt")')
    up(envd, project, tmp_path)
    (project / "data.txt").write_text("two\n")
    again, _ = up(envd, project, tmp_path)
    assert UP_TO_DATE not in again, again
    shown = docker("run", "--rm", "--entrypoint", "cat", f"{project.name}:dev", "/data.txt",
                   docker_host=docker_host).stdout
    assert shown == "two\n"
