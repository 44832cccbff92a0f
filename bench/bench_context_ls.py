#!/usr/bin/env python3
"""Benchmark: wall time of ``envd context ls`` as a user runs it (not a test).

Runs, each as a fresh process after warm-up runs, with a throwaway config directory:

- ``python -c pass`` with the same interpreter: the floor no Python CLI can beat;
- ``envd context ls`` through the installed console script, with every installed plugin;
- upstream envd's ``context ls`` (Go), when the infra installed it (``UPSTREAM_ENVD`` in
  ``/work/briefs/INFRA_READY`` or ``$UPSTREAM_ENVD``), with ``HOME`` set to a temporary directory.

Prints wall-time median / min / p90 and the median CPU time per command, and the ratios.
The target is a median under 150 ms.

    .venv/bin/python bench/bench_context_ls.py [--runs 30] [--warmup 3] [--json]

The interpreter running the bench is the one measured (its ``envd`` script, its plugins). An
editable install (``pip install -e``) adds a ``.pth`` finder per package to every start-up, tens
of milliseconds that a user's regular install does not pay: for user-realistic numbers run the
bench with the interpreter of a venv where envd-core and the plugins are installed normally.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

INFRA_READY = Path("/work/briefs/INFRA_READY")
TARGET_MS = 150.0


def upstream_envd() -> str | None:
    """Path of upstream's Go envd, if the infra installed it."""
    path = os.environ.get("UPSTREAM_ENVD")
    if not path and INFRA_READY.exists():
        try:
            path = json.loads(INFRA_READY.read_text()).get("UPSTREAM_ENVD") or None
        except (OSError, ValueError):
            path = None
    return path if path and os.access(path, os.X_OK) else None


def envd_script() -> str:
    beside = Path(sys.executable).with_name("envd")
    found = str(beside) if beside.exists() else shutil.which("envd")
    if not found:
        sys.exit("bench: the envd console script is not installed (pip install -e .)")
    return found


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    argv: list[str], env: dict[str, str], *, runs: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Wall and CPU (user+sys) milliseconds of ``runs`` fresh processes, after ``warmup`` ones.

    CPU time is reported too because it is far less sensitive to other load on the machine.
    """
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(warmup + runs):
        cpu_before = _children_cpu()
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              check=False)
        elapsed = (time.perf_counter() - started) * 1000
        if done.returncode != 0:
            sys.exit(f"bench: `{' '.join(argv)}` failed: {done.stderr.decode(errors='replace')}")
        if i >= warmup:
            wall.append(elapsed)
            cpu.append((_children_cpu() - cpu_before) * 1000)
    return wall, cpu


def summary(wall: list[float], cpu: list[float]) -> dict[str, float]:
    ordered = sorted(wall)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "min_ms": round(ordered[0], 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 1),
        "cpu_median_ms": round(statistics.median(cpu), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="envd-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                "LANG": "C.UTF-8"}
        ours = {**base, "ENVD_CONFIG_DIR": str(Path(tmp) / "envd-config")}
        cases: list[tuple[str, list[str], dict[str, str]]] = [
            ("python -c pass", [sys.executable, "-c", "pass"], base),
            ("envd context ls", [envd_script(), "context", "ls"], ours),
        ]
        upstream = upstream_envd()
        if upstream:
            # ENVD_ANALYTICS=false: upstream would otherwise try to reach its telemetry server
            cases.append(("upstream envd context ls", [upstream, "context", "ls"],
                          {**base, "ENVD_ANALYTICS": "false"}))
        results: dict[str, Any] = {
            "runs": args.runs,
            "plugins": sorted(ep.name for ep in metadata.entry_points(group="envd")),
            "commands": {},
        }
        for label, argv, env in cases:
            results["commands"][label] = summary(
                *measure(argv, env, runs=args.runs, warmup=args.warmup))

    commands = results["commands"]
    ours_ms = commands["envd context ls"]["median_ms"]
    results["ratios"] = {
        "envd / python floor": round(ours_ms / commands["python -c pass"]["median_ms"], 2),
    }
    if "upstream envd context ls" in commands:
        results["ratios"]["envd / upstream"] = round(
            ours_ms / commands["upstream envd context ls"]["median_ms"], 2)
    results["target_ms"] = TARGET_MS
    results["within_target"] = ours_ms < TARGET_MS

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"envd context ls benchmark: {args.runs} runs after {args.warmup} warm-up, "
          f"plugins installed: {', '.join(results['plugins']) or 'none'}")
    print(f"{'command':<28}{'median':>10}{'min':>10}{'p90':>10}{'cpu median':>12}")
    for label, stats in commands.items():
        print(f"{label:<28}{stats['median_ms']:>8.1f}ms{stats['min_ms']:>8.1f}ms"
              f"{stats['p90_ms']:>8.1f}ms{stats['cpu_median_ms']:>10.1f}ms")
    for label, ratio in results["ratios"].items():
        print(f"{label}: {ratio:.2f}x")
    verdict = "within" if results["within_target"] else "OVER"
    print(f"target: median under {TARGET_MS:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
