"""Fixtures: envd-server doubles on the shared dockerd, and runners logged in to them."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from double import EnvdServerDouble  # noqa: E402
from envd_server_runner import EnvdServerRunner  # noqa: E402
from envd_server_runner.tokens import TokenStore  # noqa: E402

BUSYBOX = "127.0.0.1:5000/busybox:latest"


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


def unique(prefix: str = "envd-h13-") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def logged_in(double: EnvdServerDouble, tokens: TokenStore, *, context: str = "ctx",
              user: str | None = None, password: str = "s3cret",
              options: dict[str, str] | None = None) -> EnvdServerRunner:
    """A runner for ``double`` whose user is registered and logged in for ``context``."""
    runner = EnvdServerRunner(double.address, options, context=context, tokens=tokens)
    name = user or unique("user-")
    runner.client().request("POST", "/register", {"login_name": name, "password": password},
                            auth=False)
    runner.login(context, username=name, password=password)
    return runner
