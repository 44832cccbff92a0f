"""Fixtures for the docker-container builder against the real dockerd of ``scripts/infra``.

Every container and volume a test creates has a unique ``envd-h7-…`` name and is removed
afterwards, also when the test fails.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from dc_helpers import docker_cli

REPO = Path(__file__).resolve().parents[4]
E2E_SUPPORT = REPO / "tests" / "integration" / "pipeline" / "test_envd_build_support.py"


@pytest.fixture(scope="session")
def e2e() -> ModuleType:
    """The core's end-to-end helpers (the seed environment, image checks, the envd runner),
    reused rather than copied: loaded once from their file under a private module name, so
    nothing is put on ``sys.path`` and no other test's imports can resolve to them."""
    spec = importlib.util.spec_from_file_location("_envd_e2e_support", E2E_SUPPORT)
    assert spec is not None and spec.loader is not None, E2E_SUPPORT
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bk_image(infra: dict[str, Any]) -> str:
    """The infra's BuildKit image in the local registry (moby/buildkit cannot be pulled here)."""
    return str(infra["BUILDKIT_IMAGE_REF"])


@pytest.fixture
def container_name(docker_host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A unique container name; the container and its ``<name>_state`` volume are removed."""
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    name = f"envd-h7-{uuid.uuid4().hex[:10]}"
    yield name
    docker_cli("rm", "-f", name, check=False)
    docker_cli("volume", "rm", "-f", f"{name}_state", check=False)


@pytest.fixture
def builder_options(bk_image: str) -> dict[str, str]:
    """Options every test builder needs here: the local image; host networking so that the
    daemon reaches the registry on 127.0.0.1:5000."""
    return {"image": bk_image, "network": "host"}


@pytest.fixture(autouse=True)
def _no_stray_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDKIT_CONNECTING_TIMEOUT", raising=False)
    os.environ.pop("ENVD_CONTEXT", None)
