"""What ``env`` and ``status`` print: the endpoints (a contract, see docs/infra.md) and health."""

from __future__ import annotations

from .buildkitd import BUILDKITDS, buildkitd_probe
from .config import (
    AUTH_PASSWORD,
    AUTH_REGISTRY,
    AUTH_USER,
    BIN,
    BUILDKIT_IMAGE,
    BUILDKIT_IMAGE_REF,
    BUILDKIT_MTLS,
    BUILDKIT_ROOTLESS_IMAGE_REF,
    BUILDKIT_TCP,
    BUILDKIT_UNIX,
    CA_BUNDLE,
    CERTS,
    DOCKER_SOCK,
    IMAGE_PYTHON_HOSTCA,
    IMAGES,
    MTLS_SERVERNAME,
    REGISTRY,
    ROOTLESS_USER,
    SSHD_IMAGE_REF,
    STATE,
    UPSTREAM_BIN,
)
from .kube import kube_env, kube_status
from .processes import tracked
from .registries import auth_registry_up, in_registry, registry_up
from .shell import docker_answers

CORE = ("dockerd", "registry", "auth-registry", "buildkitd", "buildkitd-mtls")


def env_map() -> dict[str, object]:
    """The endpoints other tools code against; key names are a contract (see docs/infra.md)."""
    envd = UPSTREAM_BIN / "envd"
    pids = {n: tracked(n) for n in BUILDKITDS}
    return {
        "DOCKER_HOST": f"unix://{DOCKER_SOCK}",
        "REGISTRY": REGISTRY,
        "AUTH_REGISTRY": AUTH_REGISTRY,
        "AUTH_REGISTRY_USER": AUTH_USER,
        "AUTH_REGISTRY_PASSWORD": AUTH_PASSWORD,
        "AUTH_REGISTRY_CA": str(CERTS / "registry-ca.pem"),
        "BUILDKIT_UNIX": BUILDKIT_UNIX,
        "BUILDKIT_TCP": BUILDKIT_TCP,
        "BUILDKIT_MTLS": BUILDKIT_MTLS,
        "BUILDKIT_MTLS_CA": str(CERTS / "buildkit-ca.pem"),
        "BUILDKIT_MTLS_CERT": str(CERTS / "buildkit-client.pem"),
        "BUILDKIT_MTLS_KEY": str(CERTS / "buildkit-client-key.pem"),
        "BUILDKIT_MTLS_SERVERNAME": MTLS_SERVERNAME,
        "BUILDKIT_TLS_BAD_CA": str(CERTS / "bad-ca.pem"),
        "IMAGE_DEBIAN": IMAGES["debian"][0],
        "IMAGE_BUSYBOX": IMAGES["busybox"][0],
        "IMAGE_PYTHON": IMAGES["python"][0],
        "IMAGE_PYTHON_HOSTCA": IMAGE_PYTHON_HOSTCA,
        "BUILDKIT_IMAGE": BUILDKIT_IMAGE,
        "BUILDKIT_IMAGE_REF": BUILDKIT_IMAGE_REF,
        "SSHD_IMAGE": SSHD_IMAGE_REF,
        "ENVD_SSHD": str(BIN / "envd-sshd"),
        "BUILDKIT_ROOTLESS_IMAGE_REF": BUILDKIT_ROOTLESS_IMAGE_REF,
        "BUILDCTL": str(BIN / "buildctl"),
        "BUILDKITD": str(BIN / "buildkitd"),
        "UPSTREAM_ENVD": str(envd) if envd.exists() else "",
        "UPSTREAM_ENVD_REGISTRIES_CONF": str(STATE / "upstream" / "registries.conf"),
        "CA_BUNDLE": CA_BUNDLE,
        "ROOTLESS_USER": ROOTLESS_USER,
        "INFRA_DIR": str(STATE),
        "BUILDKITD_PIDS": {n: pid for n, pid in pids.items() if pid},
        **kube_env(),
    }


def status_map() -> dict[str, str]:
    """One line of health per component, keyed as in ``status --json``."""
    docker = f"up (ours, pid {tracked('dockerd')})" if tracked("dockerd") else (
        "up (external)" if docker_answers() else "down")
    st = {"dockerd": docker if docker_answers() or docker == "down" else "not answering"}
    st["registry"] = "up" if registry_up() else "down"
    st["auth-registry"] = "up" if auth_registry_up() else "down"
    for name in BUILDKITDS:
        st[name] = "up" if tracked(name) and buildkitd_probe(name) else "down"
    if st["dockerd"].startswith("up") and st["registry"] == "up":
        refs = [r for r, _ in IMAGES.values()] + [BUILDKIT_IMAGE_REF, BUILDKIT_ROOTLESS_IMAGE_REF,
                                                   IMAGE_PYTHON_HOSTCA, SSHD_IMAGE_REF]
        missing = [r for r in refs if not in_registry(r)]
        st["images"] = "complete" if not missing else "missing " + " ".join(missing)
    else:
        st["images"] = "unknown (dockerd or registry down)"
    st["kubernetes"] = kube_status()
    st["upstream-envd"] = "installed" if (UPSTREAM_BIN / "envd").exists() else "missing"
    return st


def core_up(st: dict[str, str]) -> bool:
    """The daemons the tests need are up and every image is in the registry."""
    return all(st[k].startswith("up") for k in CORE) and st["images"] == "complete"
