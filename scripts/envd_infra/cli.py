"""The ``scripts/infra`` commands: up, down, status, env, install."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from .buildkitd import ensure_buildkitds
from .certs import ensure_certs
from .config import ENVD_VERSION, STATE
from .images import ensure_images
from .installs import ensure_buildkit_binaries, ensure_packages, ensure_rootless_user
from .processes import lock, stop, tracked
from .registries import ensure_dockerd, ensure_registries
from .report import core_up, env_map, status_map
from .shell import InfraError, docker_answers, say, tail
from .sshd import ensure_sshd_image
from .upstream import ensure_upstream_envd, upstream_registries_conf

USAGE = ("Usage: scripts/infra up [--skip-upstream] [--kube] | build-kube | down "
         "| status [--json] | env [--json] | install")


def fail(step: str, err: InfraError) -> NoReturn:
    """Report a failed step with the tail of its log and exit 1."""
    print(f"\ninfra: step `{step}` failed: {err}", file=sys.stderr)
    if err.log:
        print(f"--- last lines of {err.log} ---\n{tail(err.log)}\n---", file=sys.stderr)
    sys.exit(1)


def cmd_up(args: list[str]) -> int:
    """Install and start everything; idempotent (a warm run only checks)."""
    if os.geteuid() != 0:
        print("infra: `up` needs root (daemons, apt, debootstrap); run it as root", file=sys.stderr)
        return 1
    _held = lock()
    t0 = time.monotonic()
    steps: list[tuple[str, Callable[[], str]]] = [
        ("apt packages", ensure_packages), ("buildkit binaries", ensure_buildkit_binaries),
        ("rootless user", ensure_rootless_user), ("certificates", ensure_certs),
        ("dockerd", ensure_dockerd), ("registries", ensure_registries),
        ("buildkitd", ensure_buildkitds), ("images", ensure_images),
        ("envd-sshd image", ensure_sshd_image),
        ("upstream envd config", lambda: str(upstream_registries_conf())),
    ]
    for name, fn in steps:
        t = time.monotonic()
        try:
            result = fn()
        except InfraError as err:
            fail(name, err)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            fail(name, InfraError(f"{type(exc).__name__}: {exc}"))
        say(f"[{time.monotonic() - t:6.1f}s] {name}: {result}")
    if "--skip-upstream" in args or os.environ.get("ENVD_INFRA_SKIP_UPSTREAM") == "1":
        say("[   0.0s] upstream envd: skipped on request")
    else:
        t = time.monotonic()
        try:
            result = ensure_upstream_envd()
            say(f"[{time.monotonic() - t:6.1f}s] upstream envd: {result}")
        except InfraError as err:  # a reference peer only: report loudly, keep the rest up
            say(f"WARNING: upstream envd {ENVD_VERSION} is NOT installed: {err}\n"
                f"--- last lines of {err.log} ---\n{tail(err.log) if err.log else ''}\n---\n"
                "UPSTREAM_ENVD stays empty; tests needing it skip locally and fail in CI.")
    if "--kube" in args or os.environ.get("ENVD_INFRA_KUBE") == "1":
        # Only the kube-pod tests need it: built (~15-20 min cold) and started on request.
        from .kube import ensure_kube

        t = time.monotonic()
        try:
            result = ensure_kube()
            say(f"[{time.monotonic() - t:6.1f}s] kubernetes: {result}")
        except InfraError as err:
            fail("kubernetes", err)
    say(f"infra up in {time.monotonic() - t0:.1f}s; state in {STATE}")
    return 0


def cmd_down(_args: list[str]) -> int:
    """Stop exactly the processes ``up`` started (never a dockerd somebody else runs)."""
    _held = lock()
    from .kube import down_kube

    for line in down_kube():  # first: its pods may use the registries
        say(f"kubernetes: {line}")
    for name in ("buildkitd-mtls", "buildkitd", "auth-registry", "registry", "dockerd"):
        # dockerd stops its containers first (10 s each by default): give it longer.
        if stop(name, grace=90 if name == "dockerd" else 20):
            say(f"stopped {name}")
    if not tracked("dockerd") and docker_answers():
        say("dockerd not started by infra: left running")
    return 0


def cmd_status(args: list[str]) -> int:
    """Health of each component; exit 0 when the core is up, 3 when not."""
    st = status_map()
    if "--json" in args:
        print(json.dumps(st, indent=2))
    else:
        for k, v in st.items():
            print(f"{k:15} {v}")
    return 0 if core_up(st) else 3


def cmd_env(args: list[str]) -> int:
    """The endpoints as ``export`` lines, or as JSON with ``--json``."""
    env = env_map()
    if "--json" in args:
        print(json.dumps(env, indent=2))
        return 0
    for k, v in env.items():
        print(f"export {k}={shlex.quote(json.dumps(v) if isinstance(v, dict) else str(v))}")
    return 0


def cmd_build_kube(_args: list[str]) -> int:
    """The Kubernetes packages and binaries only, without the infra lock: ``scripts/test`` runs
    it beside ``up`` and the tests, which never touch what it builds."""
    from .kube import ensure_kube_installed

    t = time.monotonic()
    try:
        say(f"[{time.monotonic() - t:6.1f}s] kubernetes binaries: {ensure_kube_installed()}")
    except InfraError as err:
        fail("kubernetes binaries", err)
    return 0


def cmd_install(_args: list[str]) -> int:
    """Packages and go binaries only (used by scripts/setup)."""
    _held = lock()
    for name, fn in (("apt packages", ensure_packages),
                     ("buildkit binaries", ensure_buildkit_binaries)):
        try:
            say(f"{name}: {fn()}")
        except InfraError as err:
            fail(name, err)
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], frozenset[str]]] = {
    "up": (cmd_up, frozenset({"--skip-upstream", "--kube"})),
    "down": (cmd_down, frozenset()),
    "status": (cmd_status, frozenset({"--json"})),
    "env": (cmd_env, frozenset({"--json"})),
    "install": (cmd_install, frozenset()),
    "build-kube": (cmd_build_kube, frozenset()),
}


def main(argv: list[str]) -> int:
    """Dispatch ``argv`` (without the program name); 2 on a usage error."""
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    fn, allowed = COMMANDS[argv[0]]
    unknown = [a for a in argv[1:] if a not in allowed]
    if unknown:
        print(f"infra: `{argv[0]}` does not take `{unknown[0]}`\n{USAGE}", file=sys.stderr)
        return 2
    return fn(argv[1:])


def run_main() -> NoReturn:
    """Entry point of ``scripts/infra``: exit codes, a closed pipe and Ctrl-C handled."""
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:  # `infra env | head`: the reader left, nothing to report
        sys.stderr.close()
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)
