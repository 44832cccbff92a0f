"""Runner type ``envd-server``: environments live on an envd-server, reached over its REST API.

The address is the server (``http://host:8080``, ``https://host:8443/prefix``); empty means
``ENVD_SERVER_HOST`` or upstream's default ``http://0.0.0.0:8080``. ``envd login`` keeps a token
per context (mode 0600). Only the standard library is used (``socket``, ``ssl``), imported
when a method needs it, so ``envd context ls`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envd_core import hookimpl

if TYPE_CHECKING:
    from envd_core.runner import Runner
    from envd_server_runner.runner import EnvdServerRunner

__all__ = ["EnvdServerRunner"]


def __getattr__(name: str) -> object:
    # The runner class (and the records and clients it imports) loads when asked for: every
    # envd command loads this plugin, few of them need its runner (a build that pushes never).
    if name == "EnvdServerRunner":
        from envd_server_runner.runner import EnvdServerRunner

        return EnvdServerRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def envd_runner_types() -> list[type[Runner]]:
    from envd_server_runner.runner import EnvdServerRunner

    return [EnvdServerRunner]
