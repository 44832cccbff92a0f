"""Fixtures: envd-server doubles on the shared dockerd, and token stores."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# the double is test infrastructure beside these tests, not part of the plugin package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envd_server_double import EnvdServerDouble
from envd_server_runner.tokens import TokenStore


@pytest.fixture
def make_double(infra: dict[str, Any]) -> Iterator[Callable[..., EnvdServerDouble]]:
    """``make_double(**kwargs)`` starts a double; all are closed (containers removed) after."""
    doubles: list[EnvdServerDouble] = []

    def make(**kwargs: Any) -> EnvdServerDouble:
        kwargs.setdefault("docker_host", infra["DOCKER_HOST"])
        double = EnvdServerDouble(**kwargs)
        doubles.append(double)
        return double

    yield make
    for double in doubles:
        double.close()


@pytest.fixture
def double(make_double: Callable[..., EnvdServerDouble]) -> EnvdServerDouble:
    return make_double()


@pytest.fixture
def tokens(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens")
