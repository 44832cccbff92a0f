"""A small Docker Engine API client on the standard library.

Builders and runners that talk to dockerd (``moby-worker`` pushes, the ``docker`` runner loads
images) share it. It speaks HTTP/1.1 over ``unix://`` or ``tcp://`` (TLS when
``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH`` say so), honours ``DOCKER_HOST``, and streams bodies
both ways so that multi-gigabyte images never sit in memory.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import quote, urlencode

from envd_core.errors import EnvdError

DEFAULT_HOST = "unix:///var/run/docker.sock"
API_VERSION = "v1.41"  # dockerd 20.10; newer engines accept it too
CHUNK = 1 << 20


class DockerError(EnvdError):
    """The Docker daemon cannot be reached or refused a request."""


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class DockerClient:
    """Just enough of the Engine API: version, image load and push, commit (commit_config)."""

    def __init__(self, host: str | None = None, *, timeout: float | None = 600.0) -> None:
        self.host = host or docker_host()
        self.timeout = timeout

    # -- plumbing --------------------------------------------------------------------------
    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        host = self.host
        if host.startswith("unix://"):
            return _UnixConnection(host[len("unix://"):], timeout)
        if host.startswith("tcp://"):
            hostport = host[len("tcp://"):].rstrip("/")
            cert_path = os.environ.get("DOCKER_CERT_PATH")
            if os.environ.get("DOCKER_TLS_VERIFY") or cert_path:
                ctx = ssl.create_default_context(
                    cafile=os.path.join(cert_path, "ca.pem") if cert_path else None
                )
                if cert_path:
                    ctx.load_cert_chain(
                        os.path.join(cert_path, "cert.pem"), os.path.join(cert_path, "key.pem")
                    )
                if not os.environ.get("DOCKER_TLS_VERIFY"):
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                return http.client.HTTPSConnection(hostport, timeout=timeout, context=ctx)
            return http.client.HTTPConnection(hostport, timeout=timeout)
        raise DockerError(
            f"unsupported DOCKER_HOST `{host}`", hint="use unix:///path/docker.sock or tcp://host:port"
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> http.client.HTTPResponse:
        url = f"/{API_VERSION}{path}"
        if params:
            url += "?" + urlencode(params)
        conn = self._connection(self.timeout if timeout is None else timeout)
        hdrs = {"Host": "docker", **(headers or {})}
        try:
            if body is not None and not isinstance(body, bytes):
                hdrs["Transfer-Encoding"] = "chunked"
                conn.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
                for key, value in hdrs.items():
                    conn.putheader(key, value)
                conn.endheaders()
                while True:
                    chunk = body.read(CHUNK)
                    if not chunk:
                        break
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
            else:
                conn.request(method, url, body=body, headers=hdrs)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DockerError(
                f"cannot reach the Docker daemon at `{self.host}`: {exc}",
                hint="start dockerd or set DOCKER_HOST",
            ) from None
        if response.status >= 400:
            detail = response.read().decode("utf-8", "replace").strip()
            conn.close()
            try:
                detail = json.loads(detail).get("message", detail)
            except (ValueError, AttributeError):
                pass
            raise DockerError(f"Docker daemon: {detail} (HTTP {response.status} on {method} {path})")
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        data = response.read()
        return json.loads(data) if data else None

    @staticmethod
    def _messages(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
        """The JSON message stream of load/push; an ``error`` message raises."""
        decoder = json.JSONDecoder()
        buffer = ""
        while True:
            chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
            if not chunk:
                break
            buffer += chunk.decode("utf-8", "replace")
            while True:
                buffer = buffer.lstrip()
                if not buffer:
                    break
                try:
                    message, end = decoder.raw_decode(buffer)
                except ValueError:
                    break
                buffer = buffer[end:]
                if isinstance(message, dict):
                    if message.get("error"):
                        raise DockerError(f"Docker daemon: {message['error']}")
                    yield message

    # -- API -------------------------------------------------------------------------------
    def version(self, *, timeout: float = 3.0) -> dict[str, Any]:
        return self._json("GET", "/version", timeout=timeout)  # type: ignore[no-any-return]

    def image_load(self, tarball: IO[bytes]) -> list[str]:
        """``docker load`` of a docker-format tarball; returns the loaded image names."""
        response = self.request(
            "POST", "/images/load", params={"quiet": "1"}, body=tarball,
            headers={"Content-Type": "application/x-tar"},
        )
        loaded = []
        for message in self._messages(response):
            stream = str(message.get("stream", ""))
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if stream.startswith(prefix):
                    loaded.append(stream[len(prefix):].strip())
        return loaded

    def image_push(self, name: str, *, auth: dict[str, str] | None = None) -> str | None:
        """``docker push``; returns the pushed digest when the daemon reports it."""
        repo, tag = split_tag(name)
        header = base64.urlsafe_b64encode(json.dumps(auth or {}).encode()).decode()
        response = self.request(
            "POST", f"/images/{quote(repo, safe='')}/push", params={"tag": tag},
            headers={"X-Registry-Auth": header},
        )
        digest = None
        for message in self._messages(response):
            aux = message.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
        return digest


def commit_config(client: DockerClient, name: str, config: dict[str, Any]) -> str:
    """Re-tag ``name`` as itself with OCI ``config`` (Env, Cmd, Labels…) applied.

    dockerd's graphdriver ``moby`` exporter ignores an image config passed as an exporter
    attribute, so the image arrives with an empty config. Committing an unstarted container of
    it with the wanted config is the Engine API's way to set one; it adds an empty layer.
    """
    created = client._json(
        "POST", "/containers/create",
        body=json.dumps({"Image": name, "Cmd": ["/bin/true"], "Entrypoint": []}).encode(),
        headers={"Content-Type": "application/json"},
    )
    container = created["Id"]
    repo, tag = split_tag(name)
    try:
        result = client._json(
            "POST", "/commit",
            params={"container": container, "repo": repo, "tag": tag, "pause": "false"},
            body=json.dumps(_container_config(config)).encode(),
            headers={"Content-Type": "application/json"},
        )
    finally:
        client.request("DELETE", f"/containers/{container}", params={"force": "1"}).read()
    return str(result.get("Id", ""))


def _container_config(config: dict[str, Any]) -> dict[str, Any]:
    """The Engine API container-config shape of an OCI image config's ``config`` part."""
    keys = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "Labels", "ExposedPorts",
            "Volumes", "StopSignal")
    # The API treats a missing Cmd as "keep the container's" (our /bin/true): send null.
    out: dict[str, Any] = {"Cmd": None, "Entrypoint": None}
    out.update({k: config[k] for k in keys if k in config})
    return out


def split_tag(name: str) -> tuple[str, str]:
    """``host:5000/a/b:tag`` → (``host:5000/a/b``, ``tag``); default tag ``latest``."""
    if "@" in name:
        repo, digest = name.split("@", 1)
        return repo, digest
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, "latest"


def registry_host(name: str) -> str:
    """The registry part of an image reference (``docker.io`` when there is none)."""
    first, sep, _ = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def registry_auth(name: str) -> dict[str, str]:
    """The ``X-Registry-Auth`` body for pushing ``name``, from the user's docker config."""
    from envd_core.buildkit.session.auth import AuthProvider

    host = registry_host(name)
    creds = AuthProvider.from_docker_config().lookup(host)
    if not creds.username and not creds.secret:
        return {}
    if not creds.username:
        return {"identitytoken": creds.secret, "serveraddress": host}
    return {"username": creds.username, "password": creds.secret, "serveraddress": host}
