"""The two root buildkitd processes: unix socket + plain TCP in one, mTLS TCP in the other
(TLS flags apply to every TCP listener of a process)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from .config import (
    AUTH_REGISTRY,
    BIN,
    BUILDKIT_MTLS,
    BUILDKIT_TCP,
    BUILDKIT_UNIX,
    CERTS,
    MTLS_SERVERNAME,
    PIDS,
    REGISTRY,
    RUN,
    STATE,
)
from .processes import executable_replaced, start_daemon, stop, tracked
from .shell import quiet

BUILDKITDS = {  # name -> (listen addresses, mTLS)
    "buildkitd": ([BUILDKIT_UNIX, BUILDKIT_TCP], False),
    "buildkitd-mtls": ([BUILDKIT_MTLS], True),
}


def buildkitd_config() -> str:
    """buildkitd.toml: the plain registry over http, the auth registry over https with its CA.

    ``http = false`` must be explicit: BuildKit talks plain HTTP to any localhost registry
    whose ``http`` is unset, which the TLS registry answers with 400.
    """
    return (f'[registry."{REGISTRY}"]\n  http = true\n  insecure = true\n'
            f'[registry."{AUTH_REGISTRY}"]\n  http = false\n'
            f'  ca = ["{CERTS / "registry-ca.pem"}"]\n')


def unchanged(name: str, argv: list[str], config: Path, text: str) -> bool:
    """The running daemon ``name`` was started with this argv and this config file content."""
    try:
        rec = json.loads((PIDS / f"{name}.json").read_text())
        return bool(rec["argv"] == argv and config.read_text() == text)
    except (OSError, ValueError, KeyError):
        return False


def buildkitd_argv(root: Path, addrs: list[str], config: Path, otel: Path) -> list[str]:
    """Command line for a root buildkitd with host networking for build steps."""
    argv = [str(BIN / "buildkitd"), "--root", str(root), "--config", str(config),
            "--otel-socket-path", str(otel), "--oci-worker=true", "--containerd-worker=false",
            "--oci-worker-net=host", "--allow-insecure-entitlement", "network.host",
            "--allow-insecure-entitlement", "security.insecure"]
    for addr in addrs:
        argv += ["--addr", addr]
    return argv


def mtls_client_args() -> list[str]:
    """buildctl flags for the mTLS endpoint."""
    return ["--tlsservername", MTLS_SERVERNAME, "--tlscacert", str(CERTS / "buildkit-ca.pem"),
            "--tlscert", str(CERTS / "buildkit-client.pem"),
            "--tlskey", str(CERTS / "buildkit-client-key.pem")]


def buildkitd_probe(name: str) -> bool:
    """``buildctl debug workers`` succeeds against the daemon ``name``."""
    addrs, mtls = BUILDKITDS[name]
    extra = mtls_client_args() if mtls else []
    return quiet([str(BIN / "buildctl"), "--addr", addrs[0], *extra, "debug", "workers"], 10)


def ensure_buildkitds() -> str:
    """Both daemons running with the current argv, config and binary; otherwise (re)started."""
    out = []
    RUN.mkdir(parents=True, exist_ok=True)
    for name, (addrs, mtls) in BUILDKITDS.items():
        root = STATE / "buildkit" / name
        config, text = root / "buildkitd.toml", buildkitd_config()
        argv = buildkitd_argv(root, addrs, config, RUN / f"{name}-otel.sock")
        if mtls:
            argv += ["--tlscacert", str(CERTS / "buildkit-ca.pem"),
                     "--tlscert", str(CERTS / "buildkit-server.pem"),
                     "--tlskey", str(CERTS / "buildkit-server-key.pem")]
        pid = tracked(name)
        running = pid is not None and buildkitd_probe(name)
        # A rebuilt binary (e.g. the version-stamped one) only takes effect after a restart.
        rebuilt = pid is not None and executable_replaced(pid)
        if running and not rebuilt and unchanged(name, argv, config, text):
            out.append(f"{name} running")
            continue
        stop(name)
        root.mkdir(parents=True, exist_ok=True)
        config.write_text(text)
        pid = start_daemon(name, argv, functools.partial(buildkitd_probe, name))
        why = ("binary replaced on disk" if rebuilt else "configuration changed") if running else ""
        out.append(f"{name} {f'restarted ({why})' if why else 'started'} (pid {pid})")
    return ", ".join(out)
