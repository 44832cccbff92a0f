"""What ``up`` and ``install`` put on the machine: apt packages, the version-stamped
buildkitd/buildctl Go build, and the user rootless BuildKit runs as."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .config import (
    APT_PACKAGES,
    BIN,
    BUILDKIT_REVISION,
    BUILDKIT_VERSION,
    GO_PATH_ENV,
    LOGS,
    ROOTLESS_USER,
    STATE,
)
from .shell import InfraError, output, quiet, run

BUILDKIT_TOOLS = ("buildkitd", "buildctl")


def dpkg_missing(packages: list[str]) -> list[str]:
    """The packages of ``packages`` dpkg does not list as installed."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n",
                          *packages], capture_output=True, text=True, check=False).stdout
    installed = {ln.split()[0] for ln in out.splitlines() if ln.endswith(" installed")}
    return [p for p in packages if p not in installed]


def ensure_packages() -> str:
    """apt-get install whatever of APT_PACKAGES is missing."""
    missing = dpkg_missing(APT_PACKAGES)
    if not missing:
        return "present"
    log = LOGS / "apt.log"
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update"], log, env=env, timeout=600)
    run(["apt-get", "install", "-y", "--no-install-recommends", *missing], log, env=env,
        timeout=1200)
    return "installed " + " ".join(missing)


def go_install(gobin: Path, pkgs: list[str], log: Path, timeout: float,
               flags: list[str] | None = None) -> None:
    """``go install`` with CGO off into ``gobin``; a missing Go is one clear error."""
    if not shutil.which("go", path=GO_PATH_ENV):
        raise InfraError("`go` is not installed: install Go >= 1.22 (>= 1.25.1 for envd)", log)
    gobin.mkdir(parents=True, exist_ok=True)
    env = {"CGO_ENABLED": "0", "GOBIN": str(gobin), "PATH": GO_PATH_ENV}
    run(["go", "install", *(flags or []), *pkgs], log, env=env, timeout=timeout)


def buildkit_ldflags() -> list[str]:
    """The ldflags of a BuildKit release build: without them the binaries (and the Info RPC)
    report ``v0.0.0+unknown``."""
    ver = "github.com/moby/buildkit/version"
    stamp = f"-X {ver}.Version={BUILDKIT_VERSION} -X {ver}.Revision={BUILDKIT_REVISION}"
    return ["-ldflags", stamp]


def reported_version(binary: Path) -> str | None:
    """What ``binary --version`` prints: ``buildkitd github.com/moby/buildkit v0.18.2 <rev>``."""
    out = output([str(binary), "--version"])
    return out.strip() if out is not None else None


def is_stamped(binary: Path) -> bool:
    """``binary`` reports the pinned version and revision (an older unstamped build does not)."""
    words = (reported_version(binary) or "").split()
    return words[2:4] == [BUILDKIT_VERSION, BUILDKIT_REVISION]


def ensure_buildkit_binaries() -> str:
    """buildkitd and buildctl in BIN, stamped with their version; an unstamped build (what this
    script made before stamping) is rebuilt once, a stamped one is left alone."""
    present = [t for t in BUILDKIT_TOOLS if (BIN / t).exists()]
    if len(present) == len(BUILDKIT_TOOLS) and all(is_stamped(BIN / t) for t in present):
        return "present"
    # Build aside and rename into place: a running buildkitd keeps its (now unlinked) binary,
    # where writing over it would fail with "text file busy". `up` restarts such a daemon.
    staging = STATE / "cache" / "buildkit-bin"
    shutil.rmtree(staging, ignore_errors=True)
    go_install(staging, [f"github.com/moby/buildkit/cmd/{t}@{BUILDKIT_VERSION}"
                         for t in BUILDKIT_TOOLS], LOGS / "go-buildkit.log", 1800,
               buildkit_ldflags())
    for tool in BUILDKIT_TOOLS:
        if not is_stamped(staging / tool):
            raise InfraError(f"the new `{tool}` reports `{reported_version(staging / tool)}`, "
                             f"not {BUILDKIT_VERSION} {BUILDKIT_REVISION}",
                             LOGS / "go-buildkit.log")
    BIN.mkdir(parents=True, exist_ok=True)
    for tool in BUILDKIT_TOOLS:
        os.replace(staging / tool, BIN / tool)
    if len(present) == len(BUILDKIT_TOOLS):
        return "rebuilt: the binaries there were not version-stamped"
    return "installed"


def ensure_rootless_user() -> str:
    """The unprivileged user with subordinate ids that rootless BuildKit tests run as."""
    log = LOGS / "rootless.log"
    if not quiet(["id", ROOTLESS_USER]):
        run(["useradd", "-m", "-s", "/bin/bash", ROOTLESS_USER], log)
    for kind, flag in (("subuid", "--add-subuids"), ("subgid", "--add-subgids")):
        lines = Path(f"/etc/{kind}").read_text() if Path(f"/etc/{kind}").exists() else ""
        if not any(ln.startswith(f"{ROOTLESS_USER}:") for ln in lines.splitlines()):
            run(["usermod", flag, "300000-365535", ROOTLESS_USER], log)
    # slirp4netns opens /dev/net/tun as that user; Debian hosts ship it 0666, this VM 0600.
    tun = Path("/dev/net/tun")
    if tun.exists() and tun.stat().st_mode & 0o777 != 0o666:
        tun.chmod(0o666)
        return f"{ROOTLESS_USER} (made /dev/net/tun 0666 for slirp4netns)"
    return ROOTLESS_USER
