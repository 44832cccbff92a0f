"""``envd up --detach`` / ``run --detach`` with every module already imported, vs the floor.

Not a test. Needs ``scripts/infra up``::

    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python bench/bench_up_warm.py [--runs 5] [--profile]

What a resident envd (one process that keeps the imports loaded and forks a child per
invocation) leaves of ``up`` and ``run``: this process imports every module a first, cold
``envd up`` imported (the child lists ``sys.modules`` for it), then for each run forks a child
that runs the command through :func:`envd_core.cli.app.run` and ends with
:func:`~envd_core.cli.app.exit_now`, as the console script does. Each run is timed from the
fork until the environment's SSH server greets, interleaved with the floor of ``bench_up.py``
(``docker run -d`` of the same image, mount and host key, then the same wait).

Printed per contender: wall median/min, the child's CPU (user+sys from ``os.wait4``), its Docker
Engine API requests and the median of each ``ENVD_TIMINGS`` phase (``fork to command`` is the
part before ``up``/``run`` starts: click, the plugin manager, the context), then the warm ratios
``up / floor`` and ``run / floor``. ``--profile`` writes a cProfile of each warm child and
prints the functions with the most cumulative time over the runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dev_project, floor, fork_envd, infra_env, phase_medians, ssh_port, wait_ssh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the envd children (e.g. ENVD_EVAL_CACHE=0)")
    args = parser.parse_args()
    infra = infra_env()
    load_start = os.getloadavg()[0]
    p = dev_project(infra, "envd-bench-upwarm")
    name, project, env, work = p.name, p.project, p.env, p.work
    env.update(item.split("=", 1) for item in args.env)
    image = p.image
    timings_file = work / "timings.json"
    modules_file = work / "modules.txt"

    # the one real build, in a process that records every module it imported
    lister = ("import atexit, sys\n"
              f"atexit.register(lambda: open({str(modules_file)!r}, 'w').write("
              "'\\n'.join(sorted(sys.modules))))\n"
              "from envd_core.cli.app import main\n"
              "main(sys.argv[1:])\n")
    subprocess.run([sys.executable, "-c", lister, "up", "--detach", "--progress", "plain"],
                   cwd=project, env=env, check=True, capture_output=True, text=True)
    p.envd("down", "--name", name)
    imported = 0
    for module in modules_file.read_text().split():
        if module.startswith("__") or module in sys.modules:
            continue
        try:
            importlib.import_module(module)
            imported += 1
        except Exception:  # noqa: BLE001 - a module only importable in its own context
            pass

    commands = {"warm up": ["up", "--detach", "--progress", "plain"],
                "warm run": ["run", "--image", image, "--detach"]}
    times: dict[str, list[float]] = {k: [] for k in (*commands, "floor")}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    requests: dict[str, list[int]] = {k: [] for k in commands}
    phases: dict[str, list[dict[str, float]]] = {k: [] for k in commands}
    profiles: list[Path] = []

    try:
        for i in range(args.runs):
            for key, argv in commands.items():
                timings_file.unlink(missing_ok=True)
                profile = work / f"{key.replace(' ', '-')}-{i}.prof" if args.profile else None
                t = time.monotonic()
                forked = time.time()
                code, used = fork_envd(argv, project,
                                       {**env, "ENVD_TIMINGS": str(timings_file)}, profile)
                ended = time.time()
                if code != 0:
                    raise SystemExit(f"bench: envd {' '.join(argv)} exited {code}")
                wait_ssh(ssh_port(name))
                times[key].append(time.monotonic() - t)
                cpu[key].append(used)
                doc = json.loads(timings_file.read_text())
                phases[key].append({"fork to command": doc["started_epoch"] - forked,
                                    **doc["phases"], "exit": ended - doc["ended_epoch"]})
                requests[key].append(int(doc.get("counts", {}).get("docker requests", 0)))
                if profile is not None and key == "warm up":
                    profiles.append(profile)
                p.envd("down", "--name", name)
            times["floor"].append(floor(p))
    finally:
        p.cleanup()
    med = {k: statistics.median(v) for k, v in times.items()}
    result: dict[str, Any] = {
        "runs": args.runs, "modules_preimported": imported,
        "load": (load_start + os.getloadavg()[0]) / 2, "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "cpu_median_s": {k: statistics.median(v) for k, v in cpu.items()},
        "docker_requests": {k: max(v) for k, v in requests.items()},
        "phases_median_s": phase_medians(phases),
        # what envd adds around the daemon's work: each run's wall time minus its create and
        # start and its SSH wait (the floor pays those too), less distorted by load than ratios
        "own_median_s": {k: statistics.median(
            t - r.get("create and start", 0.0) - r.get("ssh wait", 0.0)
            for t, r in zip(times[k], phases[k], strict=True)) for k in commands},
        "ratio_warm_up": med["warm up"] / med["floor"],
        "ratio_warm_run": med["warm run"] / med["floor"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'':10} {'median':>8} {'min':>8} {'cpu':>8} {'requests':>8}   ({args.runs} runs, "
          f"interleaved, load {result['load']:.1f}, {imported} modules pre-imported)")
    for k in times:
        c = result["cpu_median_s"].get(k)
        n = result["docker_requests"].get(k)
        print(f"{k:10} {med[k]:8.3f} {result['min_s'][k]:8.3f} "
              f"{'' if c is None else f'{c:8.3f}':>8} {'' if n is None else n:>8}")
    print("\nenvd's own time (wall minus create and start and SSH wait, median s): "
          + ", ".join(f"{k} {v:.3f}" for k, v in result["own_median_s"].items()))
    for k, rows in result["phases_median_s"].items():
        print(f"\n{k} phases (median s):")
        for phase, seconds in rows.items():
            print(f"  {phase:32} {seconds:7.3f}")
    if profiles:
        import pstats

        stats = pstats.Stats(*map(str, profiles))
        print(f"\nwarm up, cProfile over {len(profiles)} runs (cumulative):")
        stats.sort_stats("cumulative").print_stats(40)
    print(f"\nwarm (modules loaded): envd up / floor: {result['ratio_warm_up']:.2f}x; "
          f"envd run / floor: {result['ratio_warm_run']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
