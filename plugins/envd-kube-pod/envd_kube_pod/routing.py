"""Which BuildKit pod builds which project: rendezvous (highest-random-weight) hashing.

buildx's ``loadbalance=sticky`` hashes the build context onto the pod list so that a project's
cache stays on one daemon. Plain ``hash % len(pods)`` moves almost every project when a pod is
replaced; rendezvous hashing moves only the projects of the pod that left. Each pod gets a score
``sha256(project NUL pod)``; the project goes to the ready pod with the highest score.

The last pod each project went to is remembered (a small JSON file in the envd config dir), so
that a move can be announced: "pod X is gone, building on Y" tells the user why the cache is
cold this time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path


def score(project: str, pod: str) -> int:
    """The weight of ``pod`` for ``project`` (stable across processes and machines)."""
    digest = hashlib.sha256(f"{project}\0{pod}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def pick(project: str, pods: Sequence[str]) -> str:
    """The pod of ``pods`` that ``project`` builds on; ValueError when there is none."""
    if not pods:
        raise ValueError("no pods to route to")
    # Ties (never seen with 64 bits) fall to the name, so the choice is total.
    return max(pods, key=lambda pod: (score(project, pod), pod))


def routes_file() -> Path:
    """Where the last pod per project is remembered."""
    from envd_core.contexts.store import config_dir

    return config_dir() / "kube-pod-routes.json"


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a lost or corrupt memory only costs one missed notice
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def remember(key: str, pod: str, path: Path | None = None) -> str | None:
    """Record that ``key`` (context + project) now builds on ``pod``; return the previous pod
    if it was another one."""
    from envd_core.atomic import write_atomic

    path = path or routes_file()
    routes = _load(path)
    previous = routes.get(key)
    if previous == pod:
        return None
    routes[key] = pod
    if len(routes) > 500:  # bounded: forget the oldest entries
        routes = dict(list(routes.items())[-500:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(routes, indent=1, sort_keys=False).encode())
    except OSError:
        pass  # a read-only config dir must not fail a build over a notice
    return previous
