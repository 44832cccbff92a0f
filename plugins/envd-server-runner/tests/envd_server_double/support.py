"""Helpers the envd-server tests share (names, logged-in runners)."""

from __future__ import annotations

import uuid

from envd_server_runner import EnvdServerRunner
from envd_server_runner.tokens import TokenStore

from .server import EnvdServerDouble

BUSYBOX = "127.0.0.1:5000/busybox:latest"


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
