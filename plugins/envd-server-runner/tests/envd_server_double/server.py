"""A double of upstream envd-server v0.0.27: its REST routes, JSON, statuses and JWT rules.

Real parts: the HTTP API (``/api/v1`` routes and shapes of reference §5.2), HS256 JWTs with
``{"username", "exp"}`` checked against ``:login_name``, the error JSON, 201/401/404/409, TLS
(optionally requiring a client certificate), and a real Docker container on the shared dockerd
behind every environment (labels ``ai.tensorchord.envd.uid`` and ``…environment-name`` as
upstream puts on its pods; phase ``Pending`` until the container runs, as a pod's).
The SSH gateway is real too (:mod:`.gateway`, on ``asyncssh``): ``<login>/<env>`` users, the keys
registered with ``POST /users/:login/keys``, sessions relayed to the container's sshd on 2222.
Doubled parts: users live in memory with salted PBKDF2 instead of bcrypt in Postgres; no
Kubernetes (a container instead of a Pod and Service); ``asyncssh`` instead of ContainerSSH; the
image label ``ai.tensorchord.envd.container.name`` is not required, so plain test images run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import docker
import docker.errors

from .gateway import SSHGateway

LABEL_OWNER = "ai.tensorchord.envd.uid"
LABEL_ENV = "ai.tensorchord.envd.environment-name"
LABEL_DOUBLE = "ai.tensorchord.envd.h13-double"
#: The spec's ports, kept on the container as the Service keeps them for the real server.
LABEL_PORTS = "ai.tensorchord.envd.h13-double.ports"
#: Where the double writes the gateway's public key in each environment (the env var upstream's
#: envd-server sets on its pods names the file for the environment's sshd).
AUTHORIZED_KEYS_PATH = "/var/envd/authorized_keys"
_ENV_ROUTE = re.compile(r"^/api/v1/users/([^/]+)/(environments|images|keys)(?:/(.+))?$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(secret: str, username: str, exp: float) -> str:
    """An HS256 JWT with upstream's claims (tests forge expired or foreign tokens with it)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"username": username, "exp": int(exp)}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256)
    return f"{header}.{claims}.{_b64(signature.digest())}"


def _check_jwt(secret: str, token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("token contains an invalid number of segments")
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
    pad = "=" * (-len(parts[2]) % 4)
    if not hmac.compare_digest(base64.urlsafe_b64decode(parts[2] + pad), expected.digest()):
        raise ValueError("signature is invalid")
    header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    if header.get("alg") != "HS256":
        raise ValueError(f"unexpected signing method: {header.get('alg')}")
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    if float(claims.get("exp", 0)) < time.time():
        raise ValueError("token is expired")
    return claims


class _Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class EnvdServerDouble:
    """Serve the double on ``127.0.0.1:<free port>`` in a thread; :meth:`close` removes all."""

    def __init__(self, *, jwt_secret: str = "envd-server", tls: ssl.SSLContext | None = None,
                 docker_host: str = "unix:///var/run/docker.sock",
                 token_lifetime: float = 365 * 24 * 3600, port: int = 0,
                 ssh_port: int = 0) -> None:
        self.secret = jwt_secret
        self.token_lifetime = token_lifetime
        self.id = uuid.uuid4().hex[:8]
        self.docker = docker.DockerClient(base_url=docker_host, version="auto")
        self.users: dict[str, tuple[bytes, bytes]] = {}
        self.keys: dict[tuple[str, str], str] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        #: Every request's method, path and Authorization header, for wire-level assertions.
        self.requests: list[tuple[str, str, str | None]] = []
        handler = type("Handler", (_Handler,), {"double": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        #: The SSH gateway (ContainerSSH's part); its port goes in the runner option ssh-port.
        self.gateway = SSHGateway(keys_of=self.keys_of, resolve=self.ssh_target, port=ssh_port)

    @property
    def address(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def container_name(self, env: str) -> str:
        # a Pod name is unique in its namespace; a container name on the shared dockerd must be
        # unique machine-wide, hence the per-double prefix
        return f"envd-h13-{self.id}-{env}"

    def close(self) -> None:
        """Stop serving and remove every container this double made."""
        self.gateway.close()
        self.httpd.shutdown()
        self.httpd.server_close()
        for container in self.docker.containers.list(
                all=True, filters={"label": f"{LABEL_DOUBLE}={self.id}"}):
            container.remove(force=True)
        self.docker.close()

    # -- users --------------------------------------------------------------------------------
    def _hash(self, password: str, salt: bytes) -> bytes:
        return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10_000)

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        name, password = _credentials(body)
        with self.lock:
            if name in self.users:
                raise _Error(409, f"user {name} already exists")
            salt = os.urandom(16)
            self.users[name] = (salt, self._hash(password, salt))
        return self._login_answer(name)

    def login(self, body: dict[str, Any]) -> dict[str, Any]:
        name, password = _credentials(body)
        stored = self.users.get(name)
        if stored is None or not hmac.compare_digest(self._hash(password, stored[0]), stored[1]):
            raise _Error(401, "failed to login: wrong login name or password")
        return self._login_answer(name)

    def _login_answer(self, name: str) -> dict[str, Any]:
        token = make_jwt(self.secret, name, time.time() + self.token_lifetime)
        return {"login_name": name, "identity_token": token, "status": "Login succeeded"}

    def authorize(self, header: str | None, login_name: str) -> None:
        if not header:
            raise _Error(401, "no authorization token")
        try:
            claims = _check_jwt(self.secret, header)
        except (ValueError, TypeError) as exc:
            raise _Error(401, f"invalid token: {exc}") from None
        if claims.get("username") != login_name:
            raise _Error(401, "the token does not belong to this user")

    # -- the SSH gateway's questions (ContainerSSH asks envd-server's webhooks) ----------------
    def keys_of(self, login: str) -> list[str]:
        """The public keys registered for ``login``."""
        with self.lock:
            return [key for (owner, _), key in self.keys.items() if owner == login]

    def ssh_target(self, login: str, env: str) -> str:
        """The address of ``env``'s container when it runs and belongs to ``login``."""
        try:
            container = self._container(login, env)
        except _Error as exc:
            raise LookupError(str(exc)) from None
        container.reload()
        if not container.attrs["State"].get("Running"):
            raise LookupError(f"environment {env} is not running")
        address = str(container.attrs["NetworkSettings"].get("IPAddress") or "")
        if not address:
            raise LookupError(f"environment {env} has no address")
        return address

    # -- environments -------------------------------------------------------------------------
    def _container(self, owner: str, env: str) -> Any:
        try:
            container = self.docker.containers.get(self.container_name(env))
        except docker.errors.NotFound:
            raise _Error(404, f'pods "{env}" not found') from None
        if container.labels.get(LABEL_OWNER) != owner:
            raise _Error(401, "the environment belongs to another user")
        return container

    def environment_json(self, container: Any) -> dict[str, Any]:
        container.reload()
        state = container.attrs["State"]
        if state.get("Running"):
            phase = "Running"
        elif state.get("Status") == "created":
            phase = "Pending"
        else:
            phase = "Succeeded" if state.get("ExitCode") == 0 else "Failed"
        config = container.attrs["Config"]
        env = [{"name": k, "value": v} for k, _, v in
               (item.partition("=") for item in config.get("Env") or [])]
        created = container.attrs["Created"][:19]
        return {
            "name": container.labels[LABEL_ENV],
            "labels": {k: v for k, v in container.labels.items()
                       if k not in (LABEL_DOUBLE, LABEL_PORTS)},
            "annotations": {},
            "spec": {"owner": container.labels[LABEL_OWNER], "image": config["Image"],
                     "env": env, "cmd": config.get("Cmd") or [],
                     "ports": json.loads(container.labels.get(LABEL_PORTS) or "[]"),
                     "apt_packages": [], "pypi_commands": [], "sync": False},
            "status": {"phase": phase, "jupyter_addr": None, "rstudio_server_addr": None},
            "resource": {"cpu": "", "memory": "", "gpu": "", "shm": ""},
            "created_at": int(time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%S"))
                              - time.timezone),
        }

    def create(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        spec = body.get("spec") or {}
        image = spec.get("image")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
            raise _Error(400, f"invalid environment name {name!r}")
        if not isinstance(image, str) or not image:
            raise _Error(400, "the environment has no image")
        labels = {str(k): str(v) for k, v in (body.get("labels") or {}).items()}
        ports = [{"name": str(p.get("name") or ""), "port": int(p.get("port") or 0)}
                 for p in spec.get("ports") or [] if isinstance(p, dict)]
        labels.update({LABEL_OWNER: owner, LABEL_ENV: name, LABEL_DOUBLE: self.id,
                       LABEL_PORTS: json.dumps(ports)})
        env = {str(e["name"]): str(e["value"]) for e in spec.get("env") or []}
        env["ENVD_AUTHORIZED_KEYS_PATH"] = AUTHORIZED_KEYS_PATH
        try:
            image_obj = self._image(image)
            container = self.docker.containers.create(
                image, command=spec.get("cmd") or None, environment=env, labels=labels,
                name=self.container_name(name), detach=True)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise _Error(409, f'pods "{name}" already exists') from None
            raise _Error(500, f"failed to create the environment: {exc.explanation}") from None
        self._record_image(image, image_obj)
        # the gateway's key, where the environment's sshd reads it (before the start below)
        container.put_archive("/", _tar_file(AUTHORIZED_KEYS_PATH, self.gateway.public_key))
        # a pod is Pending first: start the container a moment later, as the kubelet would
        threading.Timer(0.3, container.start).start()
        return {"environment": self.environment_json(container), "warnings": []}

    def _image(self, image: str) -> Any:
        try:
            return self.docker.images.get(image)
        except docker.errors.ImageNotFound:
            return self.docker.images.pull(image)

    def _record_image(self, name: str, image: Any) -> None:
        labels = image.attrs.get("Config", {}).get("Labels") or {}
        created = image.attrs["Created"][:19]
        self.images[name] = {
            "name": name, "digest": image.id,
            "created": int(time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%S"))
                           - time.timezone),
            "size": image.attrs.get("Size", 0), "labels": labels,
            "apt_packages": [], "python_commands": [], "ports": [],
        }

    def list_environments(self, owner: str) -> dict[str, Any]:
        found = self.docker.containers.list(all=True, filters={
            "label": [f"{LABEL_DOUBLE}={self.id}", f"{LABEL_OWNER}={owner}"]})
        return {"items": [self.environment_json(c) for c in found]}

    def add_key(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        name, key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not isinstance(key, str) or not key:
            raise _Error(400, "a key needs a name and a public_key")
        with self.lock:
            if (owner, name) in self.keys:
                raise _Error(409, f"key {name} already exists")
            self.keys[(owner, name)] = key
        return {"name": name, "public_key": key, "login_name": owner}


def _tar_file(path: str, text: str) -> bytes:
    """A tar archive holding ``path`` (mode 0644, root's) with ``text``, for ``put_archive``."""
    import io
    import tarfile

    data = (text.rstrip("\n") + "\n").encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        parent = os.path.dirname(path).lstrip("/")
        directory = tarfile.TarInfo(parent)
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _credentials(body: dict[str, Any]) -> tuple[str, str]:
    name, password = body.get("login_name"), body.get("password", "")
    if not isinstance(name, str) or not name or not isinstance(password, str):
        raise _Error(400, "login_name and password are required")
    return name, password


class _Handler(BaseHTTPRequestHandler):
    double: EnvdServerDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read `double.requests` instead

    def _reply(self, status: int, body: Any, *, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise _Error(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise _Error(400, "the body is not a JSON object")
        return data

    def _handle(self, method: str) -> None:
        double = self.double
        path = self.path.split("?")[0]
        double.requests.append((method, path, self.headers.get("Authorization")))
        try:
            status, answer = self._route(method, path)
        except _Error as exc:
            status, answer = exc.status, {"http_status_code": exc.status, "message": str(exc),
                                          "request": f"{method} {path}", "op": "envd-server"}
        if answer is None:  # gin's answer to an unknown route
            self._reply(404, b"404 page not found", content_type="text/plain")
            return
        self._reply(status, answer)

    def _route(self, method: str, path: str) -> tuple[int, Any]:
        double = self.double
        if path in ("/api/v1/", "/api/v1") and method == "GET":
            return 200, {"message": "envd-server is running"}
        if path == "/api/v1/register" and method == "POST":
            return 200, double.register(self._body())
        if path == "/api/v1/login" and method == "POST":
            return 200, double.login(self._body())
        match = _ENV_ROUTE.match(path)
        if match is None:
            return 404, None
        owner, kind, item = unquote(match[1]), match[2], match[3]
        double.authorize(self.headers.get("Authorization"), owner)
        if kind == "environments" and item is None and method == "POST":
            return 201, double.create(owner, self._body())
        if kind == "environments" and item is None and method == "GET":
            return 200, double.list_environments(owner)
        if kind == "environments" and item is not None and method in ("GET", "DELETE"):
            container = double._container(owner, unquote(item))
            if method == "GET":
                return 200, double.environment_json(container)
            container.remove(force=True)
            return 200, {}
        if kind == "images" and method == "GET":
            if item is None:
                return 200, {"items": list(double.images.values())}
            image = double.images.get(unquote(item))
            if image is None:
                raise _Error(404, f"image {unquote(item)} not found")
            return 200, image
        if kind == "keys" and item is None and method == "POST":
            return 200, double.add_key(owner, self._body())
        return 404, None

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")
