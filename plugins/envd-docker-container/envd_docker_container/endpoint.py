"""Which Docker Engine a ``docker-container`` builder talks to, without the ``docker`` CLI.

Without ``?context=`` it is the engine of the environment, as every Docker client reads it:
``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``), with TLS when ``DOCKER_TLS_VERIFY``
or ``DOCKER_CERT_PATH`` is set. With ``?context=NAME`` it is the endpoint the docker CLI stored
for that context: ``$DOCKER_CONFIG`` (default ``~/.docker``) holds
``contexts/meta/<sha256(NAME)>/meta.json`` and, for TLS, ``contexts/tls/<sha256(NAME)>/docker/``.
Only ``unix://`` and ``tcp://`` endpoints are supported: an ``ssh://`` one is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
import os

from envd_docker_client.hijack import Endpoint

from envd_core.errors import BuilderError, ValidationError

__all__ = ["DEFAULT_HOST", "Endpoint", "from_context", "from_environment", "resolve"]

DEFAULT_HOST = "unix:///var/run/docker.sock"
SUPPORTED = ("unix://", "tcp://")


def docker_config_dir() -> str:
    """The docker CLI's configuration directory (``$DOCKER_CONFIG`` or ``~/.docker``)."""
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def _check_host(host: str, source: str) -> str:
    if not host.startswith(SUPPORTED):
        scheme = host.split("://", 1)[0] if "://" in host else host
        raise BuilderError(
            f"{source} points at `{host}`: builder `docker-container` supports only unix:// "
            f"and tcp:// Docker endpoints, not `{scheme}`",
            hint="use a docker context with a unix:// or tcp:// endpoint, or set DOCKER_HOST",
        )
    return host


def from_environment() -> Endpoint:
    """The engine ``DOCKER_HOST``/``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH`` describe."""
    host = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    _check_host(host, "DOCKER_HOST")
    verify = os.environ.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
    cert_path = os.environ.get("DOCKER_CERT_PATH")
    if not verify and not cert_path:
        return Endpoint(host=host)
    directory = cert_path or docker_config_dir()
    files = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key")}
    present = {name: path if os.path.exists(path) else None for name, path in files.items()}
    return Endpoint(host=host, tls=True, ca=present["ca"], cert=present["cert"],
                    key=present["key"], verify=verify)


def from_context(name: str) -> Endpoint:
    """The engine the docker CLI's context ``name`` stores; one-line errors when it cannot."""
    if name == "default":
        return from_environment()
    digest = hashlib.sha256(name.encode()).hexdigest()
    base = docker_config_dir()
    meta_path = os.path.join(base, "contexts", "meta", digest, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except FileNotFoundError:
        raise ValidationError(
            f"docker context `{name}` does not exist (no `{meta_path}`)",
            hint="list them with `docker context ls`, or drop `?context=` to use DOCKER_HOST",
        ) from None
    except (OSError, ValueError) as exc:
        raise ValidationError(f"cannot read docker context `{name}` at `{meta_path}`: {exc}") \
            from None
    docker = (meta.get("Endpoints") or {}).get("docker") or {}
    host = docker.get("Host")
    if not isinstance(host, str) or not host:
        raise ValidationError(f"docker context `{name}` has no Docker endpoint in `{meta_path}`")
    source = f"docker context `{name}`"
    _check_host(host, source)
    tls_dir = os.path.join(base, "contexts", "tls", digest, "docker")
    found = {f: os.path.join(tls_dir, f"{f}.pem") for f in ("ca", "cert", "key")}
    present = {f: p if os.path.exists(p) else None for f, p in found.items()}
    skip_verify = bool(docker.get("SkipTLSVerify"))
    tls = host.startswith("tcp://") and (skip_verify or any(present.values()))
    return Endpoint(host=host, tls=tls, ca=present["ca"], cert=present["cert"],
                    key=present["key"], verify=not skip_verify, source=source)


def resolve(context: str | None) -> Endpoint:
    """The endpoint for a builder address's ``?context=`` value (``None``: the environment)."""
    return from_context(context) if context else from_environment()
