"""Fixtures: envd-server doubles on the shared dockerd, and token stores."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# the double is test infrastructure beside these tests, not part of the plugin package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envd_server_client.tokens import TokenStore
from envd_server_double import EnvdServerDouble


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


@pytest.fixture
def not_envd_server() -> Iterator[str]:
    """An HTTP server that is not envd-server (answers HTML 404 everywhere)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        do_POST = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def sshd_image(infra: dict[str, Any]) -> str:
    """The stand-in environment image with upstream's envd-sshd on 2222 (``sshd_image/``).

    Built once on the shared buildkitd from the infra's envd-sshd image (``SSHD_IMAGE``) and
    pushed to the local registry, tagged by the Dockerfile's hash, so later runs (and an
    unchanged Dockerfile) find it there and skip the build (a few seconds: one COPY, one RUN).
    """
    assert infra.get("SSHD_IMAGE"), "scripts/infra up builds envd-sshd (SSHD_IMAGE)"
    import hashlib
    import subprocess
    import urllib.error
    import urllib.request

    folder = Path(__file__).resolve().parent.parent / "envd_server_double" / "sshd_image"
    digest = hashlib.sha256((folder / "Dockerfile").read_bytes()).hexdigest()[:12]
    registry = str(infra["REGISTRY"])
    ref = f"{registry}/envd-test/server-sshd:{digest}"
    request = urllib.request.Request(
        f"http://{registry}/v2/envd-test/server-sshd/manifests/{digest}", method="HEAD",
        headers={"Accept": "application/vnd.oci.image.index.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.manifest.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            return ref
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    subprocess.run(
        [str(infra["BUILDCTL"]), "--addr", str(infra["BUILDKIT_TCP"]), "build",
         "--frontend", "dockerfile.v0", "--local", f"context={folder}",
         "--local", f"dockerfile={folder}",
         "--output", f"type=image,name={ref},push=true"],
        check=True, capture_output=True, timeout=900)
    return ref
