"""Unit tests of the moby-worker builder type."""

from __future__ import annotations

import pytest
from envd_moby import MobyWorkerBuilder

from envd_core.errors import ValidationError
from envd_core.testing import BuilderContract


def test_defaults_match_upstream() -> None:
    assert MobyWorkerBuilder.default_address == "envd_buildkitd"
    assert MobyWorkerBuilder("envd_buildkitd").url == "moby-worker://envd_buildkitd"
    assert MobyWorkerBuilder.normalize_address("moby-worker://envd_buildkitd") == "envd_buildkitd"


def test_dockerd_capabilities() -> None:
    assert MobyWorkerBuilder.exporters == frozenset({"moby", "local", "tar"})
    assert MobyWorkerBuilder.supports_merge_op is False
    assert MobyWorkerBuilder.exporter_applies_config is False


def test_host_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///from/env.sock")
    assert MobyWorkerBuilder("x").docker_host == "unix:///from/env.sock"
    assert MobyWorkerBuilder("x", {"host": "tcp://127.0.0.1:2375"}).docker_host == "tcp://127.0.0.1:2375"
    with pytest.raises(ValidationError, match="host"):
        MobyWorkerBuilder.check_options({"host": "/var/run/docker.sock"})


def test_missing_docker_socket_is_refused(tmp_path: object) -> None:
    builder = MobyWorkerBuilder("envd_buildkitd", {"host": f"unix://{tmp_path}/nope.sock"})
    status = builder.status(timeout=2)
    assert status.reachable is False
    assert status.error_kind in ("refused", "unavailable")



class TestMobyContract(BuilderContract):
    builder_cls = MobyWorkerBuilder
    valid_address = "envd_buildkitd"
