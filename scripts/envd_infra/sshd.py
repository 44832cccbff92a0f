"""Upstream's ``envd-sshd`` (the SSH server of dev images), built from the Go module proxy and
packed like upstream's ``tensorchord/envd-sshd-from-scratch`` image: one static binary at
``/usr/bin/envd-sshd`` in an otherwise empty image, pushed to the plain registry.

Docker Hub is not reachable here, so the image upstream envd copies from cannot be pulled; a dev
image built by our ``envd`` copies the binary from ``SSHD_IMAGE_REF`` instead (the tests and the
demo point ``ENVD_SSHD_IMAGE`` at it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .config import (
    BIN,
    ENVD_COMMIT,
    ENVD_DATE,
    ENVD_VERSION,
    GO_PATH_ENV,
    LOGS,
    SSHD_IMAGE_REF,
    STATE,
)
from .images import ensure_image
from .shell import InfraError, output, run

SSHD_PKG = "github.com/tensorchord/envd/cmd/envd-sshd"
SSHD_BIN = BIN / "envd-sshd"


def _stamp_flags() -> list[str]:
    """The release ldflags: ``envd-sshd --version`` reports v1.3.4 as upstream's binary does."""
    ver = "github.com/tensorchord/envd/pkg/version"
    return ["-ldflags", "-s -w " + " ".join(f"-X {ver}.{k}={v}" for k, v in (
        ("version", ENVD_VERSION), ("gitTag", ENVD_VERSION), ("gitCommit", ENVD_COMMIT),
        ("gitTreeState", "clean"), ("buildDate", ENVD_DATE)))]


def ensure_sshd_binary() -> str:
    """``envd-sshd`` in BIN, static (CGO off), built once from a throwaway module.

    ``go install pkg@version`` is refused here (the proxy answers ``@v/list`` with 403), so the
    binary is built from a module that requires exactly that version, as for upstream envd.
    """
    if SSHD_BIN.exists() and ENVD_VERSION in (output([str(SSHD_BIN), "--version"]) or ""):
        return "present"
    log = LOGS / "go-envd-sshd.log"
    if not shutil.which("go", path=GO_PATH_ENV):
        raise InfraError("`go` is not installed: install Go >= 1.25.1 (envd's go.mod)", log)
    mod = STATE / "cache" / "envd-sshd-build"
    shutil.rmtree(mod, ignore_errors=True)
    mod.mkdir(parents=True)
    env = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "PATH": GO_PATH_ENV}
    run(["go", "mod", "init", "envd-infra-sshd-build"], log, env=env, cwd=mod)
    run(["go", "get", f"{SSHD_PKG}@{ENVD_VERSION}"], log, env=env, cwd=mod, timeout=1200)
    BIN.mkdir(parents=True, exist_ok=True)
    staging = mod / "envd-sshd"
    run(["go", "build", *_stamp_flags(), "-o", str(staging), SSHD_PKG], log, env=env, cwd=mod,
        timeout=2400)
    os.replace(staging, SSHD_BIN)  # a rename: a copy in use elsewhere keeps its inode
    return "built"


def _sshd_rootfs(rootfs: Path) -> None:
    """The from-scratch layout: nothing but ``/usr/bin/envd-sshd``."""
    shutil.rmtree(rootfs, ignore_errors=True)
    (rootfs / "usr/bin").mkdir(parents=True)
    shutil.copy2(SSHD_BIN, rootfs / "usr/bin/envd-sshd")


def ensure_sshd_image() -> str:
    """The binary, then ``SSHD_IMAGE_REF`` in dockerd and the plain registry.

    The image's recipe label hashes the binary, so a rebuilt binary re-imports and re-pushes.
    """
    built = ensure_sshd_binary()
    digest = output(["sha256sum", str(SSHD_BIN)]) or ""
    changes = ['ENTRYPOINT ["/usr/bin/envd-sshd"]', f"LABEL org.envd-infra.sshd={digest[:16]}"]
    image = ensure_image("envd-sshd", SSHD_IMAGE_REF, changes, _sshd_rootfs)
    return f"binary {built}, image {image} ({SSHD_IMAGE_REF})"
