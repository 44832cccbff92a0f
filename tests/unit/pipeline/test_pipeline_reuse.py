"""The rules of envd_core.pipeline.reuse that need no daemon: which builds may skip their solve.

The definitions are real ``pb.Definition`` messages; the builder and runner are plain objects
with the attributes :func:`plan` reads (its dockerd checks run against the real daemon in
tests/integration/environments/test_envd_up_reuse.py).
"""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest

from envd_core.buildkit._pb import ops_pb2
from envd_core.environment import ImageInfo
from envd_core.pipeline import reuse
from envd_core.pipeline.defcache import CachedBuild
from envd_core.pipeline.execute import BuildRequest

HOST = "unix:///var/run/docker.sock"
BASE = "docker.io/library/python:3.11"


def definition(*sources: tuple[str, dict[str, str]]) -> bytes:
    ops = []
    for identifier, source_attrs in sources:
        op = ops_pb2.Op()
        op.source.identifier = identifier
        op.source.attrs.update(source_attrs)
        ops.append(op.SerializeToString())
    exec_op = ops_pb2.Op()
    exec_op.exec.meta.args.append("true")
    ops.append(exec_op.SerializeToString())
    message = ops_pb2.Definition()
    getattr(message, "def").extend(ops)
    return message.SerializeToString()


def compiled(data: bytes, local_dirs: dict[str, str] | None = None) -> CachedBuild:
    return CachedBuild({
        "definition": base64.b64encode(data).decode(), "image_config": {"config": {}},
        "local_dirs": local_dirs or {}, "entitlements": [], "shared_key": "k", "warnings": [],
        "platform": "linux/amd64"})


class Runner:
    """The two things a record is checked against: the daemon's address and its image ids."""

    can_manage_images = True

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self.ids: dict[str, str] = {BASE: "sha256:base1", "p:dev": "sha256:img1"}

    def find_image(self, ref: str) -> ImageInfo | None:
        found = self.ids.get(ref)
        return ImageInfo(id=found, tags=(ref,)) if found else None


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ENVD_EVAL_CACHE", raising=False)


def planned(request: BuildRequest | None = None, build: Any = None, *, kind: str = "moby",
            push_after: bool = False, runner: Any = None,
            builder_host: str = HOST) -> reuse.Reuse | None:
    return reuse.plan(
        request=request or BuildRequest(reuse=True),
        compiled=build or compiled(definition((f"docker-image://{BASE}", {}))),
        kind=kind, push_after=push_after, exporter_attrs={"name": "p:dev"},
        builder=SimpleNamespace(docker_host=builder_host),
        runner=Runner() if runner is None else runner)


def test_an_eligible_up_plans_with_its_base_tags() -> None:
    found = planned()
    assert found is not None and found.bases == [BASE] and found.tag == "p:dev"


@pytest.mark.parametrize("change", [
    {"reuse": False}, {"no_cache": True}, {"export_cache": ("type=inline",)},
    {"import_cache": ("type=registry,ref=r/c",)},
])
def test_requests_that_must_solve(change: dict[str, Any]) -> None:
    assert planned(attrs.evolve(BuildRequest(reuse=True), **change)) is None


def test_the_definition_cache_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVD_EVAL_CACHE", "0")
    assert planned() is None


def test_other_exports_a_push_and_another_daemon_must_solve() -> None:
    assert planned(kind="docker") is None
    assert planned(push_after=True) is None
    assert planned(builder_host="tcp://other:2375") is None
    assert planned(runner=Runner(host="tcp://other:2375")) is None


@pytest.mark.parametrize("source", [
    ("local://context", {}),
    ("git://github.com/x/y#main", {}),
    ("https://example.org/file.tar", {}),
    (f"docker-image://{BASE}", {"image.resolvemode": "pull"}),
])
def test_sources_a_solve_reads_again_must_solve(source: tuple[str, dict[str, str]]) -> None:
    data = definition((f"docker-image://{BASE}", {}), source)
    assert reuse.image_sources(data) is None
    assert planned(build=compiled(data)) is None


def test_local_dirs_must_solve() -> None:
    assert planned(build=compiled(definition((f"docker-image://{BASE}", {})),
                                  {"context": "/p"})) is None


def test_a_record_stands_until_the_tag_or_a_base_moves() -> None:
    runner = Runner()
    first = planned(runner=runner)
    assert first is not None and not first.attempt()  # nothing recorded yet
    first.before_solve()
    first.after_solve()
    again = planned(runner=runner)
    assert again is not None and again.attempt()
    runner.ids[BASE] = "sha256:base2"
    assert not again.attempt()
    runner.ids[BASE] = "sha256:base1"
    runner.ids["p:dev"] = "sha256:img2"
    assert not again.attempt()


def test_a_base_missing_before_the_solve_is_never_recorded() -> None:
    runner = Runner()
    del runner.ids[BASE]
    first = planned(runner=runner)
    assert first is not None
    first.before_solve()
    runner.ids[BASE] = "sha256:base1"  # pulled by the solve
    first.after_solve()
    assert not first.attempt()


def test_another_definition_has_its_own_record() -> None:
    runner = Runner()
    first = planned(runner=runner)
    assert first is not None
    first.before_solve()
    first.after_solve()
    other = compiled(definition((f"docker-image://{BASE}", {}), ("docker-image://busybox", {})))
    runner.ids["busybox"] = "sha256:bb"
    second = planned(build=other, runner=runner)
    assert second is not None and not second.attempt()


def test_a_damaged_record_is_a_miss() -> None:
    runner = Runner()
    first = planned(runner=runner)
    assert first is not None
    first.before_solve()
    first.after_solve()
    first.path.write_text("{not json")
    again = planned(runner=runner)
    assert again is not None and not again.attempt()


def test_a_recorded_definition_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner()
    first = planned(runner=runner)
    assert first is not None
    first.before_solve()
    first.after_solve()

    def no_parse(data: bytes) -> list[str] | None:
        raise AssertionError("the definition was parsed (protobuf imported) for a recorded one")

    monkeypatch.setattr(reuse, "image_sources", no_parse)
    again = planned(runner=runner)
    assert again is not None and again.bases == [BASE] and again.attempt()
