"""The resident process in the benchmarks: a server of the bench's own, warmed before timing.

Every bench that times ``envd`` runs it twice per round: as users get it (the resident on, the
default) and with ``ENVD_RESIDENT=0`` (a process per command), side by side. The server lives
in a socket directory of the bench (``ENVD_RESIDENT_DIR``), is started and waited for before the
first timed run (the first invocation only spawns it), and is stopped at the end.

The client process does almost nothing with the resident on; the command's CPU is spent in the
server's forked child. :func:`children_cpu` reads what the server reports for its reaped
children, so CPU columns count both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENVD = str(Path(sys.executable).with_name("envd"))


def resident_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with a fresh socket directory of this bench (short: AF_UNIX paths are 107
    bytes) and no ``ENVD_RESIDENT`` switch."""
    directory = tempfile.mkdtemp(prefix="envd-bench-res-", dir="/tmp")
    out = {k: v for k, v in env.items() if k not in ("ENVD_RESIDENT", "ENVD_RESIDENT_IDLE")}
    out["ENVD_RESIDENT_DIR"] = directory
    return out


def direct_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the resident off: one process per command, as before it existed."""
    return {**env, "ENVD_RESIDENT": "0"}


def status(env: dict[str, str]) -> dict[str, object]:
    """``envd resident status --format json`` under ``env``."""
    done = subprocess.run([ENVD, "resident", "status", "--format", "json"], env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def warm(env: dict[str, str], timeout: float = 120) -> int:
    """Start the server (an eligible command spawns it) and wait until it serves; its pid."""
    subprocess.run([ENVD, "version"], env=env, capture_output=True, check=True, timeout=120)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = status(env)
        if state["running"]:
            subprocess.run([ENVD, "version"], env=env, capture_output=True, check=True)
            return int(str(state["pid"]))
        time.sleep(0.2)
    raise SystemExit("the resident server did not start; see "
                     f"{env['ENVD_RESIDENT_DIR']}/server.log")


def children_cpu(env: dict[str, str]) -> float:
    """CPU seconds (user + sys) of the commands the server has run and reaped so far."""
    return float(str(status(env).get("children_cpu", 0.0)))


def stop(env: dict[str, str]) -> None:
    """Stop the bench's server and remove its directory."""
    subprocess.run([ENVD, "resident", "stop", "--all"], env=env, capture_output=True,
                   check=False, timeout=120)
    shutil.rmtree(env["ENVD_RESIDENT_DIR"], ignore_errors=True)
