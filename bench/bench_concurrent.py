#!/usr/bin/env python3
"""8 concurrent ``envd build``s of distinct projects vs 8 concurrent ``buildctl build``s of the
same LLBs, on one private buildkitd (not a test).

    .venv/bin/python bench/bench_concurrent.py [--builds 8] [--rounds 3]
        [--baseline /work/main/.venv/bin/envd] [--phases]

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
what the client processes used; the server's own CPU in the round (forking: copying its page
tables, and its copy-on-write faults) is printed beside it as ``+ server``, from
``/proc/<pid>/stat``. ``--resident off`` drops the resident contender.

``--phases`` gives every ``envd`` build its own ``ENVD_TIMINGS`` file and prints the median
phases of the last round: wall, CPU and minor page faults per build (what a served build's
child spends where, under the concurrency itself).

``--baseline PATH`` adds ``envd-base``: another installation's ``envd`` (e.g. the main branch's
venv), resident on with a server of its own, in the same rounds: a before/after of a change
measured under the same load, which on a shared machine moves wall times by tens of percent.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
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


def run_round(argvs: list[tuple[list[str], Path, Path | None]], env: dict[str, str],
              timings: Path | None = None) -> tuple[float, list[str]]:
    """Start every command at once; wall time of the round and each failure's last line.
    With ``timings``, build ``n`` writes its ``ENVD_TIMINGS`` to ``timings-n.json``."""

    def one(n: int) -> str:
        argv, cwd, stdin_path = argvs[n]
        own = env if timings is None else {**env, "ENVD_TIMINGS": f"{timings}-{n}.json"}
        stdin = stdin_path.open("rb") if stdin_path else subprocess.DEVNULL
        try:
            done = subprocess.run(argv, cwd=cwd, env=own, stdin=stdin, capture_output=True,
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
        outcomes = list(pool.map(one, range(len(argvs))))
    return time.perf_counter() - started, [o for o in outcomes if o]


def phase_table(files: list[Path]) -> list[str]:
    """Median per build of each ``ENVD_TIMINGS`` phase: wall seconds, CPU ms, minor faults."""
    import json

    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    faults: dict[str, list[float]] = {}
    for file in files:
        doc = json.loads(file.read_text())
        for phase, seconds in doc["phases"].items():
            wall.setdefault(phase, []).append(seconds)
            cpu.setdefault(phase, []).append(1000 * doc.get("cpu", {}).get(phase, 0.0))
            faults.setdefault(phase, []).append(doc.get("faults", {}).get(phase, 0))
    lines = [f"  {'phase':30}{'wall s':>8}{'CPU ms':>8}{'faults':>8}"]
    for phase, values in wall.items():
        lines.append(f"  {phase:30}{statistics.median(values):8.3f}"
                     f"{statistics.median(cpu[phase]):8.1f}"
                     f"{statistics.median(faults[phase]):8.0f}")
    lines.append(f"  {'all phases':30}{'':8}{sum(map(statistics.median, cpu.values())):8.1f}"
                 f"{sum(map(statistics.median, faults.values())):8.0f}")
    return lines


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/<pid>/stat``), 0 when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rpartition(b")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served_cpu(envd: str, env: dict[str, str]) -> tuple[int, float]:
    """The pid of ``envd``'s resident server under ``env`` and its reaped children's CPU."""
    import json

    done = subprocess.run([envd, "resident", "status", "--format", "json"], env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    state = json.loads(done.stdout)
    return int(state.get("pid") or 0), float(state.get("children_cpu", 0.0))


def warm(envd: str, env: dict[str, str]) -> int:
    """Start ``envd``'s resident server under ``env`` and wait until it serves; its pid."""
    subprocess.run([envd, "version"], env=env, capture_output=True, check=True, timeout=120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pid, _ = served_cpu(envd, env)
        if pid:
            subprocess.run([envd, "version"], env=env, capture_output=True, check=True)
            return pid
        time.sleep(0.2)
    raise SystemExit(f"{envd}: the resident server did not start")


def children_cpu() -> float:
    """User + system CPU seconds of every child this process has reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resident", choices=["on", "off"], default="on")
    parser.add_argument("--baseline", default=None, metavar="ENVD",
                        help="another installation's envd, run as contender envd-base")
    parser.add_argument("--phases", action="store_true",
                        help="ENVD_TIMINGS for every envd build; print the median phases "
                             "(wall, CPU, faults) of the last round")
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
        #: contender -> (its envd, its resident server's pid)
        servers: dict[str, tuple[str, int]] = {}
        if args.resident == "on":
            servers["envd"] = (ENVD, warm(ENVD, env))
            print(f"resident server pid {servers['envd'][1]} (warmed, not timed)")
            contenders.insert(1, ("envd-direct", envd_round, direct))
        if args.baseline:
            base_env = _resident.resident_env(env)
            base_round = [([args.baseline, *argv[1:]], cwd, stdin)
                          for argv, cwd, stdin in envd_round]
            servers["envd-base"] = (args.baseline, warm(args.baseline, base_env))
            print(f"baseline {args.baseline}: resident server pid "
                  f"{servers['envd-base'][1]}")
            subprocess.run([args.baseline, "build", "--dump-llb", str(work / "base.llb")],
                           cwd=projects[0], env=base_env, check=True, capture_output=True)
            contenders.insert(1, ("envd-base", base_round, base_env))
        server_cpu: dict[str, list[float]] = {name: [] for name in servers}
        times: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        failures: dict[str, list[str]] = {name: [] for name, _, _ in contenders}
        for i in range(args.rounds):
            for name, argvs, round_env in contenders:
                prune()
                server = servers.get(name)
                served = served_cpu(server[0], round_env)[1] if server else 0.0
                server_before = process_cpu(server[1]) if server else 0.0
                before = children_cpu()
                record = work / f"timings-{i}" if args.phases and name == "envd" else None
                elapsed, failed = run_round(argvs, round_env, record)
                used = children_cpu() - before
                extra = ""
                if server:  # the commands ran in the server's children
                    server_cpu[name].append(process_cpu(server[1]) - server_before)
                    used += served_cpu(server[0], round_env)[1] - served
                    extra = f" + server {server_cpu[name][-1]:4.2f} s"
                cpu[name].append(used)
                times[name].append(elapsed)
                failures[name] += failed
                print(f"  round {i + 1} {name:9}{elapsed:7.2f} s, client CPU "
                      f"{cpu[name][-1]:5.2f} s{extra}, {len(failed)} failed, load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
    print(f"\nmedian wall time of {args.builds} concurrent builds (s), and the client "
          "processes' CPU (user+sys, all builds of the round)")
    for name, values in times.items():
        forks = (f" + server {statistics.median(server_cpu[name]):4.2f}"
                 if server_cpu.get(name) else "")
        print(f"  {name:9}{statistics.median(values):8.2f}   CPU "
              f"{statistics.median(cpu[name]):6.2f}{forks}   rounds: "
              + " ".join(f"{v:.2f}" for v in values))
    if args.resident == "on":
        _resident.stop(env)
    if args.baseline:
        subprocess.run([args.baseline, "resident", "stop", "--all"], env=base_env,
                       capture_output=True, check=False, timeout=120)
        shutil.rmtree(base_env["ENVD_RESIDENT_DIR"], ignore_errors=True)
    base = statistics.median(times["buildctl"])
    for name, label in (("envd", "envd (resident on)" if args.resident == "on" else "envd"),
                        ("envd-base", f"baseline {args.baseline}"),
                        ("envd-direct", "envd (ENVD_RESIDENT=0)")):
        if times.get(name):
            print(f"concurrent builds: {label} / buildctl = "
                  f"{statistics.median(times[name]) / base:.2f}x")
    if args.baseline:  # CPU is what the load distorts least: the change, measured the same way
        mine, theirs = (statistics.median(cpu[n]) + statistics.median(server_cpu.get(n) or [0])
                        for n in ("envd", "envd-base"))
        print(f"CPU of a round (clients + children + server): envd {mine:.2f} s, baseline "
              f"{theirs:.2f} s = {mine / theirs:.2f}x; buildctl "
              f"{statistics.median(cpu['buildctl']):.2f} s")
    if args.phases:
        last = sorted(work.glob(f"timings-{args.rounds - 1}-*.json"))
        print(f"\nenvd, round {args.rounds}: median per build over {len(last)} builds")
        print("\n".join(phase_table(last)))
    for name, lines in failures.items():
        for line in sorted(set(lines)):
            print(f"  {name} failure ({lines.count(line)}x): {line}")


if __name__ == "__main__":
    main()
