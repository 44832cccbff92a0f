"""A protocol-faithful double of envd-server for tests (see docs/envd-server.md).

Run it by hand: ``python -m envd_server_double --help`` from this directory.
"""

from __future__ import annotations

from .server import EnvdServerDouble, make_jwt

__all__ = ["EnvdServerDouble", "make_jwt"]
