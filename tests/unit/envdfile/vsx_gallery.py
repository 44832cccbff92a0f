"""An Open VSX-compatible gallery on 127.0.0.1 for tests, serving .vsix files built here.

The .vsix is assembled with :mod:`zipfile` in the layout ``vsce package`` writes
(``[Content_Types].xml``, ``extension.vsixmanifest``, ``extension/package.json``); npm, where
``@vscode/vsce`` lives, is not reachable from this project's machines. The server answers the
two Open VSX routes envd uses: ``/api/<publisher>/<name>/<version|latest>`` (JSON with
``downloads.universal`` and ``files.download``) and the file URL it names.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_vsix(publisher: str, name: str, version: str) -> bytes:
    """A minimal VS Code extension package."""
    manifest = {"name": name, "publisher": publisher, "version": version,
                "engines": {"vscode": "^1.80.0"}, "main": "./extension.js"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml",
                   '<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.'
                   'openxmlformats.org/package/2006/content-types"><Default Extension=".json" '
                   'ContentType="application/json"/></Types>')
        z.writestr("extension.vsixmanifest",
                   f'<PackageManifest Version="2.0.0"><Metadata><Identity Id="{name}" '
                   f'Version="{version}" Publisher="{publisher}"/></Metadata></PackageManifest>')
        z.writestr("extension/package.json", json.dumps(manifest))
        z.writestr("extension/extension.js", "exports.activate = () => {};\n")
    return buf.getvalue()


@contextmanager
def gallery(extensions: dict[tuple[str, str], str]) -> Iterator[tuple[str, list[str]]]:
    """Serve ``{(publisher, name): version}``; yields the base URL and the request log."""
    files = {f"/files/{p}.{n}-{v}.vsix": make_vsix(p, n, v) for (p, n), v in extensions.items()}
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            path = self.path.split("?", 1)[0]
            parts = path.strip("/").split("/")
            body: bytes | None = None
            if len(parts) == 4 and parts[0] == "api":
                version = extensions.get((parts[1], parts[2]))
                if version and parts[3] in ("latest", version):
                    url = f"http://{self.headers['Host']}/files/{parts[1]}.{parts[2]}-{version}.vsix"
                    body = json.dumps({"version": version, "downloads": {"universal": url},
                                       "files": {"download": url}}).encode()
            elif path in files:
                body = files[path]
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
