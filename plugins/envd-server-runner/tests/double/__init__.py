"""A protocol-faithful double of envd-server for tests (see docs/envd-server.md)."""

from __future__ import annotations

from .server import EnvdServerDouble, make_jwt

__all__ = ["EnvdServerDouble", "make_jwt"]
