"""A loopback HTTP proxy that answers upstream envd's base-image lookups from the local registry.

Upstream envd reads the base image's config from its registry while compiling
(``ir.FetchImageConfig``, containers/image), even for ``envd debug llb``. No registry on the
internet is reachable here, and containers/image's digest lookup ignores registries.conf
rewrites, but it honours ``HTTP_PROXY`` for a registry marked insecure. This proxy takes those
requests (``GET http://registry-1.docker.io/v2/<name>/...``) and serves them from
``<local registry>/v2/<prefix>/<name>/...``, where the harness pushed a stand-in image. Only
the image config is read; layers are never pulled (nothing is built from the stand-in).
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "host"}


def _handler(registry: str, prefix: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            path = urlsplit(self.path).path or "/"
            query = urlsplit(self.path).query
            if path.startswith("/v2/") and path != "/v2/":
                path = f"/v2/{prefix}/" + path[len("/v2/"):]
            if query:
                path += "?" + query
            conn = http.client.HTTPConnection(registry, timeout=30)
            conn.putrequest(self.command, path)
            # repeated headers (Accept: one per manifest type) must all reach the registry
            for key, value in self.headers.items():
                if key.lower() not in HOP_HEADERS:
                    conn.putheader(key, value)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in HOP_HEADERS | {"content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            conn.close()

        do_GET = _forward
        do_HEAD = _forward

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@contextmanager
def registry_proxy(registry: str, prefix: str) -> Iterator[str]:
    """Run the proxy on 127.0.0.1 (a free port); yield its ``http://`` URL; stop it after."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry, prefix))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
