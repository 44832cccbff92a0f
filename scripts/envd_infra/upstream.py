"""Upstream envd (Go) as a reference peer, in its own bin dir so it never shadows our ``envd``."""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import (
    ENVD_COMMIT,
    ENVD_DATE,
    ENVD_VERSION,
    GO_PATH_ENV,
    LOGS,
    REGISTRY,
    STATE,
    UPSTREAM_BIN,
)
from .installs import go_install
from .shell import InfraError, run


def ensure_upstream_envd() -> str:
    """``go install`` upstream envd at its release tag, with the release's ldflags."""
    if (UPSTREAM_BIN / "envd").exists():
        return "present"
    pkg, log = "github.com/tensorchord/envd/cmd/envd", LOGS / "go-envd.log"
    # Release builds stamp the version via ldflags; envd derives image tags and its
    # User-Agent from it, so an unstamped 0.0.0+unknown would not behave like v1.3.4.
    ver = "github.com/tensorchord/envd/pkg/version"
    flags = ["-ldflags", " ".join(f"-X {ver}.{k}={v}" for k, v in (
        ("version", ENVD_VERSION), ("gitTag", ENVD_VERSION), ("gitCommit", ENVD_COMMIT),
        ("gitTreeState", "clean"), ("buildDate", ENVD_DATE)))]
    try:
        go_install(UPSTREAM_BIN, [f"{pkg}@{ENVD_VERSION}"], log, 2400, flags)
        return "installed"
    except InfraError:
        pass
    # `go install pkg@v` also looks up the module's deprecation via @v/list, which the proxy
    # here answers with 403 for envd. Building from a throwaway module that requires exactly
    # that version selects the same dependency versions (envd has no replace/exclude).
    mod = STATE / "cache" / "envd-build"
    shutil.rmtree(mod, ignore_errors=True)
    mod.mkdir(parents=True)
    env = {"CGO_ENABLED": "0", "PATH": GO_PATH_ENV}
    run(["go", "mod", "init", "envd-infra-upstream-build"], log, env=env, cwd=mod)
    run(["go", "get", f"{pkg}@{ENVD_VERSION}"], log, env=env, cwd=mod, timeout=1200)
    UPSTREAM_BIN.mkdir(parents=True, exist_ok=True)
    run(["go", "build", *flags, "-o", str(UPSTREAM_BIN / "envd"), pkg], log, env=env, cwd=mod,
        timeout=2400)
    return "installed (built from a pinned module: `go install` was refused, see log)"


def upstream_registries_conf() -> Path:
    """containers/image config that lets upstream envd read the plain-HTTP registry.

    Upstream envd resolves base image configs itself (containers/image), which tries HTTPS
    unless the registry is marked insecure in $HOME/.config/containers/registries.conf.
    """
    path = STATE / "upstream" / "registries.conf"
    text = f'[[registry]]\nlocation = "{REGISTRY}"\ninsecure = true\n'
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path
