#!/usr/bin/env python3
"""Benchmark: a cold ``envd envs ls`` on an envd-server context, ours against upstream's.

One envd-server double (``plugins/envd-server-runner/tests/envd_server_double``, real HTTP, real
Docker containers) serves both clients, with the same user and one running environment:

- upstream envd v1.3.4 (Go; ``UPSTREAM_ENVD`` or the infra's binary), in its own HOME, after
  ``context create --runner envd-server`` and ``login``, with ``ENVD_ANALYTICS=false`` (its
  telemetry otherwise resolves ``api.segment.io`` on every run);
- ours, the console script beside this interpreter, in its own config dir, after the same
  context and ``envd login`` as the same user.

Each run is a fresh process (after warm-up runs), alternating the tools so that load from
other users of the machine hits them alike. ``python -c pass`` with this interpreter runs in
the same rotation: the floor no Python CLI can beat. Prints median / min / p90 wall time and the
median CPU time (user+sys of the child, from ``wait4``: what load distorts least) per tool, and
the ratios ours/upstream of both (the target is at most 1.0) and floor/upstream.

    .venv/bin/python bench/bench_server_envs_ls.py [--runs 20] [--warmup 3] [--json]
        [--install wheel|editable|both]

Which envd is measured (``--install``, default ``both``): ``wheel``, the tree ``pip install``-ed
without ``-e`` into a throwaway venv (what users run; ``bench/_wheel_venv.py``), and
``editable``, the ``envd`` beside this interpreter (``scripts/setup``'s editable installs).

Not a test: it needs the shared dockerd and the local registry's busybox image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins" / "envd-server-runner" / "tests"))

DEFAULT_UPSTREAM = "/var/lib/envd-infra/bin/upstream/envd"
IMAGE = "127.0.0.1:5000/busybox:latest"


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user+sys) seconds of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"bench: `{' '.join(argv)}` failed: "
                 f"{err.decode(errors='replace').strip()[-500:]}")
    return elapsed, usage.ru_utime + usage.ru_stime


def _stats(samples: list[tuple[float, float]]) -> dict[str, float]:
    ordered = sorted(s[0] for s in samples)
    return {"median_ms": statistics.median(ordered) * 1000, "min_ms": ordered[0] * 1000,
            "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
            "cpu_median_ms": statistics.median(s[1] for s in samples) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--install", choices=("wheel", "editable", "both"), default="both",
                        help="which envd to measure (default: both)")
    args = parser.parse_args()

    from envd_server_client.tokens import TokenStore
    from envd_server_double import EnvdServerDouble
    from envd_server_runner import EnvdServerRunner

    from envd_core.environment import EnvironmentSpec

    upstream = os.environ.get("UPSTREAM_ENVD") or DEFAULT_UPSTREAM
    if not os.access(upstream, os.X_OK):
        sys.exit(f"bench: upstream envd not found at {upstream} (set UPSTREAM_ENVD)")
    installs: dict[str, tuple[str, str]] = {}
    if args.install in ("wheel", "both"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _wheel_venv import wheel_venv

        bin_dir = wheel_venv()
        installs["wheel"] = (str(bin_dir / "envd"), str(bin_dir / "python"))
    if args.install in ("editable", "both"):
        installs["editable"] = (str(Path(sys.executable).with_name("envd")), sys.executable)
    ours = next(iter(installs.values()))[0]
    load_before = os.getloadavg()[0]
    double = EnvdServerDouble()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # PYTHONDONTWRITEBYTECODE (set in some dev shells) would recompile every edited
            # module on every run: users' envd reads its cached bytecode
            base = {k: v for k, v in os.environ.items()
                    if not k.startswith("ENVD_") and k != "PYTHONDONTWRITEBYTECODE"}
            # upstream's telemetry off, as in bench_context_ls.py: left on, each of its runs
            # also resolves api.segment.io (a DNS round trip ours never makes)
            up_env = {**base, "HOME": f"{tmp}/up-home", "ENVD_ANALYTICS": "false"}
            our_env = {**base, "HOME": f"{tmp}/our-home", "ENVD_CONFIG_DIR": f"{tmp}/ours",
                       "ENVD_RESIDENT": "0"}  # fast path measured; no server left behind
            Path(up_env["HOME"]).mkdir()
            Path(our_env["HOME"]).mkdir()
            user = f"bench-{uuid.uuid4().hex[:6]}"
            common = ["context", "create", "--name", "srv", "--builder", "tcp",
                      "--builder-address", "127.0.0.1:1234", "--runner", "envd-server",
                      "--runner-address", double.address, "--use"]
            _run([upstream, *common], up_env)
            _run([upstream, "login", "-u", user], up_env)
            _run([ours, *common], our_env)
            _run([ours, "login", "-u", user], our_env)
            runner = EnvdServerRunner(double.address, context="b",
                                      tokens=TokenStore(Path(tmp) / "tokens"))
            runner.login("b", username=user)
            runner.create(EnvironmentSpec(name=f"bench-{uuid.uuid4().hex[:6]}", image=IMAGE,
                                          command=("sleep", "3600")))
            tools = {"upstream": ([upstream, "envs", "ls"], up_env)}
            for install, (script, _python) in installs.items():
                tools[f"ours[{install}]"] = ([script, "envs", "ls"], our_env)
            # the floor no Python CLI can beat: the interpreter starting, nothing else
            tools["floor"] = ([next(iter(installs.values()))[1], "-c", "pass"], our_env)
            for _ in range(args.warmup):
                for argv, env in tools.values():
                    _run(argv, env)
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
            for _ in range(args.runs):
                for name, (argv, env) in tools.items():
                    samples[name].append(_run(argv, env))
    finally:
        double.close()
    result: dict[str, Any] = {name: _stats(s) for name, s in samples.items()}
    up = result["upstream"]
    for install in installs:
        mine = result[f"ours[{install}]"]
        result[f"ratio_ours[{install}]_over_upstream"] = mine["median_ms"] / up["median_ms"]
        result[f"cpu_ratio_ours[{install}]_over_upstream"] = (mine["cpu_median_ms"]
                                                              / up["cpu_median_ms"])
    result["ratio_floor_over_upstream"] = result["floor"]["median_ms"] / up["median_ms"]
    result["runs"] = args.runs
    result["installs"] = {k: v[0] for k, v in installs.items()}
    result["load_average"] = [load_before, os.getloadavg()[0]]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"{args.runs} runs after {args.warmup} warm-up")
    for name in tools:
        r = result[name]
        what = "python -c pass" if name == "floor" else "envs ls"
        print(f"{name:15} {what:14}: median {r['median_ms']:7.1f} ms  min {r['min_ms']:7.1f} ms"
              f"  p90 {r['p90_ms']:7.1f} ms  cpu median {r['cpu_median_ms']:6.1f} ms")
    for install in installs:
        print(f"ratio ours[{install}]/upstream: wall median "
              f"{result[f'ratio_ours[{install}]_over_upstream']:.2f}x, cpu median "
              f"{result[f'cpu_ratio_ours[{install}]_over_upstream']:.2f}x  (target <= 1.0)")
    print(f"interpreter floor/upstream (wall): {result['ratio_floor_over_upstream']:.2f}x")


if __name__ == "__main__":
    main()
