"""``envd up --detach`` of an already-built dev environment until SSH answers, vs the floor.

Not a test. Needs ``scripts/infra up`` (dockerd, the registry's python base, the envd-sshd
image)::

    .venv/bin/python bench/bench_up.py [--runs 5] [--json]

One dev project (``base(image=<registry>/python:3.11-bookworm, dev=True)`` plus an env var) is
built once with ``envd up --detach`` and removed again. Then, interleaved, each run times:

- ``envd up``: a fresh ``envd up --detach`` process (the build is cached: the build file is
  evaluated and solved again, nothing runs), from its start until the environment's SSH server
  greets on its published port (``up`` itself waits for that);
- ``envd run``: ``envd run --detach`` of the built image (no build), same end point;
- ``floor``: ``docker run -d -p 127.0.0.1::2222`` of the same image with the same mount and, as
  envd now gives every environment, a host key for its SSH server (a read-only bind mount named
  by ``ENVD_HOST_KEY``), then the same wait for the SSH greeting. This is what any tool must
  pay at least; the ratios are against it.
- ``floor keygen``: the same without the host key, so envd-sshd generates one as it starts (the
  floor of the earlier measurements, kept for comparison).

Between runs the environment is removed (not timed). HOME and ``ENVD_CONFIG_DIR`` are temp
dirs: the user's ``~/.ssh/config`` is never touched.

Besides the wall times it prints, per command, the CPU time of the envd process (user+sys from
``os.wait4``, which load distorts far less than wall time), the number of Docker Engine API
requests it made and the median of each phase ``ENVD_TIMINGS`` records (interpreter and imports
before the command starts, the build's phases, image lookup, create and start, SSH wait, SSH
entry, exit), so the table says where the time over the floor goes.

``envd up``/``envd run`` run as users get them, with the resident process on (a server of the
bench's own, warmed first: bench/_resident.py; their CPU adds the server's forked child);
``envd up direct``/``envd run direct`` are the same with ``ENVD_RESIDENT=0``, interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _resident
from _common import (
    ENVD,
    dev_project,
    floor,
    infra_env,
    phase_medians,
    ssh_port,
    timed_process,
    wait_ssh,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    infra = infra_env()
    load_start = os.getloadavg()[0]
    p = dev_project(infra, "envd-bench-up")
    name, project, env = p.name, p.project, p.env
    # "envd up"/"envd run" as users get them (resident on, warmed); "… direct": ENVD_RESIDENT=0
    direct = _resident.direct_env(env)
    env = _resident.resident_env(env)
    modes = {"": env, " direct": direct}

    timings_file = p.work / "timings.json"
    keys = [f"envd {c}{m}" for m in modes for c in ("up", "run")]
    phases: dict[str, list[dict[str, float]]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    requests: dict[str, list[int]] = {k: [] for k in keys}

    def timed_envd(key: str, *argv: str) -> None:
        """Run envd with ENVD_TIMINGS; keep its phases, CPU time and Docker request count."""
        timings_file.unlink(missing_ok=True)
        run_env = modes[key.removeprefix("envd up").removeprefix("envd run")]
        spawned = time.time()
        done = timed_process([ENVD, *argv], {**run_env, "ENVD_TIMINGS": str(timings_file)},
                             cwd=project)
        ended = time.time()
        if done.code != 0:
            raise SystemExit(f"bench: envd {' '.join(argv)} failed: "
                             f"{done.stderr.decode(errors='replace')[-2000:]}")
        cpu[key].append(done.cpu)  # + the server's child: see timed()
        if timings_file.exists():  # an envd without ENVD_TIMINGS support writes none
            doc = json.loads(timings_file.read_text())
            row = {"interpreter+imports+cli": doc["started_epoch"] - spawned,
                   **doc["phases"], "exit": ended - doc["ended_epoch"]}
            phases[key].append(row)
            requests[key].append(int(doc.get("counts", {}).get("docker requests", 0)))

    def timed(key: str, *argv: str) -> None:
        """One timed command until its SSH greets. The server's child CPU is read from
        ``envd resident status`` before and after, outside the timed span: that is two more
        ``envd`` processes, which timed would have charged to the resident (~0.3 s)."""
        served = _resident.children_cpu(env) if not key.endswith(" direct") else None
        t = time.monotonic()
        timed_envd(key, *argv)
        wait_ssh(ssh_port(name))
        times[key].append(time.monotonic() - t)
        if served is not None:  # the command ran in the server's child: count its CPU too
            cpu[key][-1] += _resident.children_cpu(env) - served

    times: dict[str, list[float]] = {**{k: [] for k in keys}, "floor": [], "floor keygen": []}
    try:
        p.envd("up", "--detach", "--progress", "plain", env=env)  # the one real build
        p.envd("down", "--name", name, env=env)
        _resident.warm(env)
        for _ in range(args.runs):
            for mode in modes:
                timed(f"envd up{mode}", "up", "--detach", "--progress", "plain")
                p.envd("down", "--name", name, env=env)
                timed(f"envd run{mode}", "run", "--image", p.image, "--detach")
                p.envd("down", "--name", name, env=env)
            times["floor"].append(floor(p))
            times["floor keygen"].append(floor(p, host_key=False))
    finally:
        p.cleanup()
        _resident.stop(env)
    med = {k: statistics.median(v) for k, v in times.items()}
    breakdown = phase_medians(phases)
    result: dict[str, Any] = {
        "runs": args.runs, "load": (load_start + os.getloadavg()[0]) / 2, "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "cpu_median_s": {k: statistics.median(v) for k, v in cpu.items()},
        "docker_requests": {k: max(v) for k, v in requests.items() if v},
        "phases_median_s": breakdown,
        "ratio_up": med["envd up"] / med["floor"],
        "ratio_run": med["envd run"] / med["floor"],
        "ratio_up_direct": med["envd up direct"] / med["floor"],
        "ratio_run_direct": med["envd run direct"] / med["floor"]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'':16} {'median':>8} {'min':>8} {'cpu':>8} {'requests':>8}   "
              f"({args.runs} runs, interleaved, load {result['load']:.1f})")
        for k in times:
            c = result["cpu_median_s"].get(k)
            n = result["docker_requests"].get(k)
            print(f"{k:16} {med[k]:8.3f} {result['min_s'][k]:8.3f} "
                  f"{'' if c is None else f'{c:8.3f}':>8} {'' if n is None else n:>8}")
        for k, rows in breakdown.items():
            print(f"\n{k} phases (median s):")
            for phase, seconds in rows.items():
                print(f"  {phase:32} {seconds:7.3f}")
        print(f"\nenvd up / floor: {result['ratio_up']:.2f}x; "
              f"envd run / floor: {result['ratio_run']:.2f}x "
              f"(against floor keygen: {med['envd up'] / med['floor keygen']:.2f}x, "
              f"{med['envd run'] / med['floor keygen']:.2f}x); resident on")
        print(f"envd up direct / floor: {result['ratio_up_direct']:.2f}x; "
              f"envd run direct / floor: {result['ratio_run_direct']:.2f}x (ENVD_RESIDENT=0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
