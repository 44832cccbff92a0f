#!/usr/bin/env python3
"""8 concurrent ``envd build``s of distinct projects vs 8 concurrent ``buildctl build``s of the
same LLBs, on one private buildkitd (not a test).

    .venv/bin/python bench/bench_concurrent.py [--builds 8] [--rounds 3]

Each project is a busybox environment whose steps differ by a project number (so no two builds
share their exec vertices; they share the base image). ``envd build --dump-llb`` writes each
project's definition, which buildctl builds with the same local directory. A round starts all
builds of one contender at once and waits for the last; the time is the round's wall time. Before
every round, ``buildctl prune --all`` empties the cache, so each round really runs every step.
Rounds alternate contenders. Results: every build's outcome (envd reports a failure as one
``envd:`` line; BuildKit v0.18.2 has been seen to panic on concurrent solves sharing vertices,
which shows up there), median round time and the ratio envd / buildctl.

``envd`` runs as users get it, with its resident process (a server of the bench's own, warmed
before timing: bench/_resident.py); ``envd-direct`` is the same builds with ``ENVD_RESIDENT=0``,
in the same rounds. The CPU column of ``envd`` adds what the server's forked children used to
what the client processes used. ``--resident off`` drops the resident contender.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _resident
from bench_build import ENVD, infra_env, private_buildkitd

BUILD_FILE = """# syntax=v1
def build():
    base(image="{image}", dev=False)
    run(commands=["echo project {n} > /project.txt", "sleep 1", "mkdir -p /work/{n}"])
    io.copy(source="data.txt", target="/work/{n}/data.txt")
"""


def run_round(argvs: list[tuple[list[str], Path, Path | None]], env: dict[str, str]
              ) -> tuple[float, list[str]]:
    """Start every command at once; wall time of the round and each failure's last line."""

    def one(item: tuple[list[str], Path, Path | None]) -> str:
        argv, cwd, stdin_path = item
        stdin = stdin_path.open("rb") if stdin_path else subprocess.DEVNULL
        try:
            done = subprocess.run(argv, cwd=cwd, env=env, stdin=stdin, capture_output=True,
                                  check=False, timeout=900)
        finally:
            if stdin_path:
                stdin.close()  # type: ignore[union-attr]
        if done.returncode:
            lines = done.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
            envd_lines = [line for line in lines if line.startswith("envd:")]
            return (envd_lines or lines)[-1][:300]
        return ""

    started = time.perf_counter()
    with ThreadPoolExecutor(len(argvs)) as pool:
        outcomes = list(pool.map(one, argvs))
    return time.perf_counter() - started, [o for o in outcomes if o]


def children_cpu() -> float:
    """User + system CPU seconds of every child this process has reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resident", choices=["on", "off"], default="on")
    args = parser.parse_args()
    infra = infra_env()
    work = Path(tempfile.mkdtemp(prefix="envd-bench-concurrent-"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("BUILDKIT_PROGRESS", "ENVD_CONTEXT", "PYTHONDONTWRITEBYTECODE")}
    env.update(ENVD_CONFIG_DIR=str(work / "config"), DOCKER_HOST=infra["DOCKER_HOST"],
               ENVD_CACHE_DIR=str(work / "cache"))
    direct = _resident.direct_env(env)
    env = _resident.resident_env(env) if args.resident == "on" else direct
    projects = []
    for n in range(args.builds):
        project = work / f"project-{n}"
        project.mkdir()
        (project / "build.envd").write_text(BUILD_FILE.format(image=infra["IMAGE_BUSYBOX"], n=n))
        (project / "data.txt").write_text(f"data of project {n}\n" * 100)
        projects.append(project)
    registry = infra["REGISTRY"]
    with private_buildkitd(infra) as (unix_addr, tcp_addr):
        print(f"private buildkitd tcp://{tcp_addr}; {args.builds} projects, {args.rounds} rounds")
        subprocess.run([ENVD, "context", "create", "--name", "bench", "--builder", "tcp",
                        "--builder-address", tcp_addr, "--use"], env=env, check=True,
                       capture_output=True)
        envd_round, buildctl_round = [], []
        for n, project in enumerate(projects):
            llb = work / f"project-{n}.llb"
            subprocess.run([ENVD, "build", "--dump-llb", str(llb)], cwd=project, env=env,
                           check=True, capture_output=True)
            out = f"type=image,name={registry}/bench/concurrent-{n}:latest,push=true"
            envd_round.append(([ENVD, "build", "--progress", "plain", "--output", out],
                               project, None))
            buildctl_round.append(([infra["BUILDCTL"], "--addr", f"tcp://{tcp_addr}", "build",
                                    "--progress", "plain", "--local",
                                    f"build-context={project}", "--output",
                                    out.replace("concurrent-", "concurrent-buildctl-")],
                                   project, llb))

        def prune() -> None:
            subprocess.run([infra["BUILDCTL"], "--addr", unix_addr, "prune", "--all"],
                           check=True, capture_output=True)

        contenders: list[tuple[str, Any, dict[str, str]]] = [
            ("envd", envd_round, env), ("buildctl", buildctl_round, direct)]
        if args.resident == "on":
            print(f"resident server pid {_resident.warm(env)} (warmed, not timed)")
            contenders.insert(1, ("envd-direct", envd_round, direct))
        times: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        failures: dict[str, list[str]] = {name: [] for name, _, _ in contenders}
        for i in range(args.rounds):
            for name, argvs, round_env in contenders:
                prune()
                served = (_resident.children_cpu(round_env)
                          if "ENVD_RESIDENT_DIR" in round_env else None)
                before = children_cpu()
                elapsed, failed = run_round(argvs, round_env)
                used = children_cpu() - before
                if served is not None:  # the commands ran in the server's children
                    used += _resident.children_cpu(round_env) - served
                cpu[name].append(used)
                times[name].append(elapsed)
                failures[name] += failed
                print(f"  round {i + 1} {name:9}{elapsed:7.2f} s, client CPU "
                      f"{cpu[name][-1]:5.2f} s, {len(failed)} failed", flush=True)
    print(f"\nmedian wall time of {args.builds} concurrent builds (s), and the client "
          "processes' CPU (user+sys, all builds of the round)")
    for name, values in times.items():
        print(f"  {name:9}{statistics.median(values):8.2f}   CPU "
              f"{statistics.median(cpu[name]):6.2f}   rounds: "
              + " ".join(f"{v:.2f}" for v in values))
    if args.resident == "on":
        _resident.stop(env)
    base = statistics.median(times["buildctl"])
    for name, label in (("envd", "envd (resident on)" if args.resident == "on" else "envd"),
                        ("envd-direct", "envd (ENVD_RESIDENT=0)")):
        if times.get(name):
            print(f"concurrent builds: {label} / buildctl = "
                  f"{statistics.median(times[name]) / base:.2f}x")
    for name, lines in failures.items():
        for line in sorted(set(lines)):
            print(f"  {name} failure ({lines.count(line)}x): {line}")


if __name__ == "__main__":
    main()
