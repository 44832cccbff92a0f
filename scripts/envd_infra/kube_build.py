"""The Go build of the Kubernetes test cluster: etcd and the four control-plane/node binaries.

Neither k3s nor a kind image is reachable here (machine.md), but the Go module proxy serves
``k8s.io/kubernetes`` and ``go.etcd.io/etcd``. ``k8s.io/kubernetes`` is not meant to be a
dependency: its go.mod replaces ~30 staging modules with ``./staging/...`` paths, and a
dependency's ``replace`` lines are not inherited. So each binary set is built from a throwaway
module whose go.mod carries one ``k8s.io/X => k8s.io/X v0.31.4`` line per staging module (read
from the published go.mod, not hard-coded). Binaries are version-stamped (a kubelet reporting
``v0.0.0-master`` confuses clients) and kept under ``STATE/kube/bin``; a stamped set is reused.
One GOCACHE under the state dir serves every run, so a rebuild after a bump is incremental.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from .config import GO_PATH_ENV, LOGS, STATE
from .shell import InfraError, output, run

KUBE_VERSION, ETCD_VERSION = "v1.31.4", "v3.5.17"
# Staging modules are published as v0.X.Y for Kubernetes v1.X.Y.
STAGING_VERSION = "v0" + KUBE_VERSION[2:]
KUBE_DIR = STATE / "kube"
KUBE_BIN = KUBE_DIR / "bin"
GOCACHE = STATE / "cache" / "go-build"
KUBE_CMDS = ("kube-apiserver", "kubelet", "kube-scheduler", "kube-controller-manager")
BUILD_LOG = LOGS / "go-kube.log"


def go_env() -> dict[str, str]:
    """Build environment: static binaries, modules resolved (not vendored), our own cache."""
    return {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false", "PATH": GO_PATH_ENV,
            "GOCACHE": str(GOCACHE)}


def staging_replaces(workdir: Path) -> list[str]:
    """``replace`` lines pointing every staging module of k8s.io/kubernetes at its release."""
    log = BUILD_LOG
    proc = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBE_VERSION}"],
                          capture_output=True, text=True, cwd=workdir, env={**os.environ,
                          **go_env()}, timeout=900, check=False)
    if proc.returncode != 0:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + proc.stderr)
        raise InfraError(f"go mod download k8s.io/kubernetes@{KUBE_VERSION} failed", log)
    gomod = Path(json.loads(proc.stdout)["GoMod"]).read_text()
    mods = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, re.MULTILINE)))
    if len(mods) < 20:
        raise InfraError(f"only {len(mods)} staging modules found in the go.mod of "
                         f"k8s.io/kubernetes@{KUBE_VERSION}", log)
    return [f"replace {m} => {m} {STAGING_VERSION}" for m in mods]


def kube_ldflags() -> str:
    """Stamp what ``/version`` and the node status report."""
    pkg = "k8s.io/component-base/version"
    major, minor = KUBE_VERSION[1:].split(".")[:2]
    return (f"-s -w -X {pkg}.gitVersion={KUBE_VERSION} -X {pkg}.gitMajor={major} "
            f"-X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean")


def stamped(binary: Path) -> bool:
    """``binary --version`` names the pinned version."""
    out = output([str(binary), "--version"], timeout=30) or ""
    want = KUBE_VERSION if binary.name.startswith("kube") else ETCD_VERSION[1:]
    return want in out


def binaries_present() -> bool:
    """Every binary of the cluster is built and stamped."""
    names = (*KUBE_CMDS, "etcd")
    return all((KUBE_BIN / n).exists() for n in names) and all(
        stamped(KUBE_BIN / n) for n in names)


def build_module(workdir: Path, gomod: str, get: list[str], pkgs: list[str], out: Path,
                 ldflags: str) -> None:
    """``go get`` then ``go build -o out/`` the packages in a fresh throwaway module."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(gomod)
    (workdir / "go.sum").unlink(missing_ok=True)
    env = go_env()
    run(["go", "get", *get], BUILD_LOG, env=env, cwd=workdir, timeout=1800)
    out.mkdir(parents=True, exist_ok=True)
    run(["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(out) + "/", *pkgs],
        BUILD_LOG, env=env, cwd=workdir, timeout=7200)  # cold on a busy 2-core VM: ~60 min


def ensure_kube_binaries() -> str:
    """etcd and the Kubernetes binaries under KUBE_BIN, built once and reused."""
    if binaries_present():
        return "present"
    if not shutil.which("go", path=GO_PATH_ENV):
        raise InfraError("`go` is not installed: install Go >= 1.22 to build the test cluster")
    src = STATE / "cache" / "kube-src"
    staging = STATE / "cache" / "kube-bin"
    shutil.rmtree(staging, ignore_errors=True)
    kube_mod = src / "kubernetes"
    kube_mod.mkdir(parents=True, exist_ok=True)
    (kube_mod / "go.mod").write_text("module envdinfra/kube\n\ngo 1.22.0\n")
    replaces = staging_replaces(kube_mod)
    build_module(kube_mod, "module envdinfra/kube\n\ngo 1.22.0\n\n" + "\n".join(replaces) + "\n",
                 [f"k8s.io/kubernetes/cmd/kube-apiserver@{KUBE_VERSION}"],
                 [f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_CMDS], staging, kube_ldflags())
    # etcd's server module is its real main package (server/main.go).
    build_module(src / "etcd", "module envdinfra/etcd\n\ngo 1.22.0\n",
                 [f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], ["go.etcd.io/etcd/server/v3"],
                 staging, "-s -w")
    # Go names a ``.../server/v3`` binary after the element before the major version.
    for built in (staging / "server", staging / "v3"):
        if built.exists():
            os.replace(built, staging / "etcd")
    KUBE_BIN.mkdir(parents=True, exist_ok=True)
    for name in (*KUBE_CMDS, "etcd"):
        if not stamped(staging / name):
            raise InfraError(f"the new `{name}` does not report its pinned version", BUILD_LOG)
        os.replace(staging / name, KUBE_BIN / name)
    return "built"
