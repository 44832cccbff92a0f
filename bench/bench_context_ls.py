#!/usr/bin/env python3
"""Benchmark: cold-process wall time of envd's quick commands against upstream envd v1.3.4.

Each command runs as a fresh process, interleaved with its upstream peer round by round (so load
spikes on this shared machine hit both), after warm-up runs, on the same kind of store: a
throwaway ``HOME`` where both CLIs created the same five contexts with their own ``context
create``. Ours gets its own config directory and cache directory (its plugin index is written by
the warm-up runs, as by a user's first command).

- ``python -c pass`` with the same interpreter: the floor no Python CLI can beat;
- ``context ls``, ``context ls --format json``, ``context show`` (upstream has none: its peer is
  upstream's ``context ls``), ``context use``;
- ``envs ls`` (talks to dockerd through the docker SDK; upstream through its Go client).

Prints wall-time median / min and the median CPU time (user+sys of the child, from
``wait4``) per command, and ours/upstream ratios of the wall medians and of the CPU medians (CPU
is what load distorts least). Upstream's binary comes from ``$UPSTREAM_ENVD``, else ``scripts/infra
env``.

    .venv/bin/python bench/bench_context_ls.py [--runs 30] [--warmup 3] [--json] [--only ls,show]
        [--install wheel|editable|both]

Which envd is measured (``--install``, default ``both``): ``wheel`` is the tree installed the way
users install it, ``pip install`` of the core and every plugin without ``-e``, into a throwaway
venv under ``bench/.wheel-venv`` (built once per source change, see ``bench/_wheel_venv.py``);
``editable`` is the ``envd`` script beside the interpreter running the bench (``scripts/setup``'s
editable installs, whose ``.pth`` paths and out-of-tree plugin code a user never has).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTEXTS = [("remote", "tcp", "127.0.0.1:1234"), ("mtls", "tcp", "127.0.0.1:1235"),
            ("gpu-farm", "tcp", "10.0.0.7:1234"), ("sock", "unix", "/run/buildkit.sock")]
COMMANDS: dict[str, list[str]] = {
    "ls": ["context", "ls"],
    "ls-json": ["context", "ls", "--format", "json"],
    "show": ["context", "show"],
    "use": ["context", "use", "--name", "remote"],
    "envs-ls": ["envs", "ls"],
}
#: Upstream's command for the same need where it lacks ours: it has no `context show`, so its
#: users read the current context off `context ls`.
UPSTREAM_PEER: dict[str, list[str]] = {"show": ["context", "ls"]}


def upstream_envd() -> str | None:
    """Path of upstream's Go envd: ``$UPSTREAM_ENVD``, else what the infra installed."""
    path = os.environ.get("UPSTREAM_ENVD")
    if not path:
        try:
            out = subprocess.run([sys.executable, str(ROOT / "scripts" / "infra"), "env", "--json"],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            path = json.loads(out).get("UPSTREAM_ENVD")
        except (OSError, subprocess.SubprocessError, ValueError):
            path = None
    return path if path and os.access(path, os.X_OK) else None


def envd_script() -> str:
    beside = Path(sys.executable).with_name("envd")
    found = str(beside) if beside.exists() else shutil.which("envd")
    if not found:
        sys.exit("bench: the envd console script is not installed (scripts/setup)")
    return found


def installs(which: str) -> dict[str, tuple[str, str]]:
    """``{label: (envd script, its python)}`` for ``--install``."""
    found: dict[str, tuple[str, str]] = {}
    if which in ("wheel", "both"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _wheel_venv import wheel_venv

        bin_dir = wheel_venv()
        found["wheel"] = (str(bin_dir / "envd"), str(bin_dir / "python"))
    if which in ("editable", "both"):
        found["editable"] = (envd_script(), sys.executable)
    return found


def once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user+sys) milliseconds of one fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = (time.perf_counter() - started) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"bench: `{' '.join(argv)}` failed: {err.decode(errors='replace')}")
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    wall = sorted(s[0] for s in samples)
    return {"median_ms": round(statistics.median(wall), 1), "min_ms": round(wall[0], 1),
            "cpu_median_ms": round(statistics.median(s[1] for s in samples), 1)}


def prepare(tmp: Path, ours: list[str], upstream: str | None) -> tuple[dict[str, str], ...]:
    """A HOME with the same contexts for both CLIs; ours gets its config and cache dirs."""
    home = tmp / "home"
    home.mkdir()
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
            "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")}
    # ENVD_RESIDENT=0: the measured commands take the fast path, which never uses the resident
    # process; without it the setup's `context create` would leave a server behind
    our_env = {**base, "ENVD_CONFIG_DIR": str(tmp / "envd-config"),
               "ENVD_CACHE_DIR": str(tmp / "envd-cache"), "ENVD_RESIDENT": "0"}
    up_env = {**base, "ENVD_ANALYTICS": "false"}
    for name, kind, addr in CONTEXTS:
        create = ["context", "create", "--name", name, "--builder", kind,
                  "--builder-address", addr]
        once([*ours, *create], our_env)
        if upstream:
            once([upstream, *create], up_env)
    return base, our_env, up_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", default=",".join(COMMANDS),
                        help=f"comma-separated subset of {', '.join(COMMANDS)}")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--install", choices=("wheel", "editable", "both"), default="both",
                        help="which envd to measure (default: both)")
    args = parser.parse_args()
    wanted = [c for c in args.only.split(",") if c]
    unknown = set(wanted) - set(COMMANDS)
    if unknown:
        sys.exit(f"bench: unknown command(s) {', '.join(sorted(unknown))}")

    ours = installs(args.install)
    upstream = upstream_envd()
    results: dict[str, Any] = {"runs": args.runs, "upstream": upstream, "commands": {},
                               "installs": {k: v[0] for k, v in ours.items()},
                               "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="envd-bench-") as tmp_name:
        first = next(iter(ours.values()))[0]
        base, our_env, up_env = prepare(Path(tmp_name), [first], upstream)
        cases: list[tuple[str, list[str], dict[str, str]]] = [
            ("python -c pass", [next(iter(ours.values()))[1], "-c", "pass"], base)]
        for key in wanted:
            for install, (script, _python) in ours.items():
                cases.append((f"envd[{install}] {key}", [script, *COMMANDS[key]], our_env))
            if upstream:
                cases.append((f"upstream {key}",
                              [upstream, *UPSTREAM_PEER.get(key, COMMANDS[key])], up_env))
        samples: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in cases}
        for i in range(args.warmup + args.runs):
            for label, argv, env in cases:  # interleaved: load spikes hit every contender
                sample = once(argv, env)
                if i >= args.warmup:
                    samples[label].append(sample)
    for label, got in samples.items():
        results["commands"][label] = summary(got)
    commands = results["commands"]
    floor = commands["python -c pass"]["median_ms"]
    ratios: dict[str, float] = {}
    for key in wanted:
        for install in ours:
            mine = commands[f"envd[{install}] {key}"]
            ratios[f"{key} [{install}]: envd / python floor"] = round(mine["median_ms"] / floor, 2)
            if upstream:
                theirs = commands[f"upstream {key}"]
                ratios[f"{key} [{install}]: envd / upstream, wall"] = round(
                    mine["median_ms"] / theirs["median_ms"], 2)
                ratios[f"{key} [{install}]: envd / upstream, cpu"] = round(
                    mine["cpu_median_ms"] / theirs["cpu_median_ms"], 2)
    results["ratios"] = ratios
    results["load_average_after"] = os.getloadavg()

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"cold-process benchmark: {args.runs} interleaved runs after {args.warmup} warm-up; "
          f"upstream: {upstream or 'not installed'}")
    for install, script in results["installs"].items():
        print(f"envd[{install}]: {script}")
    load = results["load_average"]
    print(f"load average before: {load[0]:.2f}, after: {results['load_average_after'][0]:.2f}")
    print(f"{'command':<30}{'median':>10}{'min':>10}{'cpu median':>12}")
    for label, stats in commands.items():
        print(f"{label:<30}{stats['median_ms']:>8.1f}ms{stats['min_ms']:>8.1f}ms"
              f"{stats['cpu_median_ms']:>10.1f}ms")
    for label, ratio in ratios.items():
        print(f"{label}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
