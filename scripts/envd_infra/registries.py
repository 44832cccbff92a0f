"""dockerd (started only when none answers) and the two registries: plain and htpasswd + TLS."""

from __future__ import annotations

from pathlib import Path

from .config import AUTH_REGISTRY, CERTS, DOCKER_SOCK, REGISTRY, STATE
from .processes import start_daemon, stop, tracked
from .shell import docker_answers, http_status


def ensure_dockerd() -> str:
    """Use the dockerd answering on the default socket; start one only when none does."""
    if tracked("dockerd"):
        return f"running (pid {tracked('dockerd')})"
    if docker_answers():
        return f"external dockerd answers on {DOCKER_SOCK}; left alone"
    pid = start_daemon("dockerd", ["dockerd", "--data-root", str(STATE / "docker"),
                                   "-H", f"unix://{DOCKER_SOCK}"], docker_answers)
    return f"started (pid {pid})"


def _registry_config(name: str, addr: str, tls: bool) -> Path:
    conf = STATE / "registry" / f"{name}.yml"
    storage = STATE / "registry" / name
    storage.mkdir(parents=True, exist_ok=True)
    text = (f"version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {addr}\n  secret: envd-infra-{name}\n")
    if tls:
        text += (f"  tls:\n    certificate: {CERTS / 'registry-server.pem'}\n"
                 f"    key: {CERTS / 'registry-server-key.pem'}\n"
                 f"auth:\n  htpasswd:\n    realm: envd-infra\n"
                 f"    path: {CERTS / 'registry.htpasswd'}\n")
    conf.write_text(text)
    return conf


def registry_up() -> bool:
    """The plain registry answers its API root."""
    return http_status(f"http://{REGISTRY}/v2/") == 200


def auth_registry_up() -> bool:
    """The auth registry answers over TLS (verified with its CA) and asks for credentials."""
    return http_status(f"https://{AUTH_REGISTRY}/v2/", CERTS / "registry-ca.pem") == 401


def in_registry(ref: str) -> bool:
    """The plain registry has a manifest for ``ref`` (``host/repo:tag``)."""
    repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
    accept = ("application/vnd.docker.distribution.manifest.v2+json,"
              "application/vnd.oci.image.manifest.v1+json")
    return http_status(f"http://{REGISTRY}/v2/{repo}/manifests/{tag}", method="HEAD",
                       headers={"Accept": accept}) == 200


def ensure_registries() -> str:
    """Both registries running from this script's config (a dead or foreign one is replaced)."""
    out = []
    for name, addr, tls, probe in (("registry", REGISTRY, False, registry_up),
                                   ("auth-registry", AUTH_REGISTRY, True, auth_registry_up)):
        if tracked(name) and probe():
            out.append(f"{name} running")
            continue
        stop(name)
        conf = _registry_config(name, addr, tls)
        pid = start_daemon(name, ["docker-registry", "serve", str(conf)], probe, timeout=30)
        out.append(f"{name} started (pid {pid})")
    return ", ".join(out)
