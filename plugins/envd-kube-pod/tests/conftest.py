"""The forwarding keeper in this plugin's tests.

Unit tests exercise the direct path (``ENVD_KUBE_KEEPER=0``) unless they ask for the keeper
(the ``keeper`` fixture of their own); integration tests run with it on, as users do. Keepers
the session starts idle out after a minute and are stopped when the session ends, in the
session's socket directory (``ENVD_RESIDENT_DIR``, see the root conftest) and in the default
ones (a test that runs envd with an environment of its own): no process is left behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _keepers_of_this_session(_resident_servers_of_this_session: str) -> Iterator[None]:
    from envd_kube_pod.keeper_client import keepers, stop_all

    began = time.time()
    idle_set = "ENVD_KUBE_KEEPER_IDLE" in os.environ
    if not idle_set:
        os.environ["ENVD_KUBE_KEEPER_IDLE"] = "60"
    try:
        yield
    finally:
        from envd_core.resident.wire import socket_dir

        stop_all(_resident_servers_of_this_session)
        for directory in {socket_dir({}), socket_dir({k: v for k, v in os.environ.items()
                                                      if k == "XDG_RUNTIME_DIR"})}:
            if directory != _resident_servers_of_this_session and keepers(directory):
                stop_all(directory, started_after=began)
        if not idle_set:
            os.environ.pop("ENVD_KUBE_KEEPER_IDLE", None)


@pytest.fixture(autouse=True)
def _direct_unless_integration(request: pytest.FixtureRequest,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("ENVD_KUBE_KEEPER", "0")
