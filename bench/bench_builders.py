"""What the exec transport costs: the same daemon reached two ways, one run, ratios printed.

One BuildKit container is bootstrapped with ``network=host`` and an extra
``--addr tcp://127.0.0.1:PORT``, so a ``docker-container`` context (``buildctl dial-stdio``
through the Engine API exec) and a ``tcp`` context reach the *same* buildkitd. After one cold
build, cached rebuilds alternate between the two contexts; medians and their ratio are printed.
It also times bootstrap from no container to the first answered ``ListWorkers``, and a bare
connect (channel + ListWorkers) on each transport.

Needs the infra (``scripts/infra up``): dockerd, the registry and its base images::

    .venv/bin/python plugins/envd-docker-container/bench/exec_transport.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ENVD = str(Path(sys.executable).with_name("envd"))
IMAGE = "127.0.0.1:5000/moby/buildkit:v0.18.2"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envd(env: dict[str, str], *args: str, cwd: Path | None = None) -> float:
    started = time.monotonic()
    proc = subprocess.run([ENVD, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          check=False)
    took = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"envd {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "pipeline"))
    from envd_docker_container import DockerContainerBuilder
    from envd_docker_container.report import quiet_reporter
    from test_envd_build_support import write_environment  # the e2e tests' environment

    name = f"envd-bench-{os.getpid()}"
    port = free_port()
    options = {"image": IMAGE, "network": "host",
               "buildkitd-flags": f"--addr tcp://127.0.0.1:{port}"}
    builder = DockerContainerBuilder(name, options)
    work = Path(tempfile.mkdtemp(prefix="envd-bench-"))
    env = dict(os.environ, ENVD_CONFIG_DIR=str(work / "config"), NO_COLOR="1")
    env.pop("ENVD_CONTEXT", None)
    try:
        started = time.monotonic()
        builder.bootstrap(report=quiet_reporter)
        bootstrap_s = time.monotonic() - started

        from envd_core.buildkit.transport import connect_tcp
        connects: dict[str, list[float]] = {"docker-container": [], "tcp": []}
        for _ in range(args.runs):
            t = time.monotonic()
            builder.connect(timeout=10).close()
            connects["docker-container"].append(time.monotonic() - t)
            t = time.monotonic()
            connect_tcp("127.0.0.1", port, timeout=10).close()
            connects["tcp"].append(time.monotonic() - t)

        opt_args = [a for k, v in options.items() for a in ("--builder-opt", f"{k}={v}")]
        envd(env, "context", "create", "--name", "dc", "--builder", "docker-container",
             "--builder-address", name, *opt_args)
        envd(env, "context", "create", "--name", "tcp", "--builder", "tcp",
             "--builder-address", f"127.0.0.1:{port}")
        context = write_environment(work / "env", mark="bench", registry="127.0.0.1:5000")
        target = f"127.0.0.1:5000/envd-bench/{name}:latest"
        build = ["build", "--progress", "plain", "--ca-bundle", CA_BUNDLE,
                 "--output", f"type=image,name={target},push=true"]
        cold = envd(env, "--context", "dc", *build, cwd=context)
        times: dict[str, list[float]] = {"docker-container": [], "tcp": []}
        for _ in range(args.runs):
            times["docker-container"].append(envd(env, "--context", "dc", *build, cwd=context))
            times["tcp"].append(envd(env, "--context", "tcp", *build, cwd=context))
        med = {k: statistics.median(v) for k, v in times.items()}
        con = {k: statistics.median(v) for k, v in connects.items()}
        result = {
            "bootstrap_to_ready_s": round(bootstrap_s, 3),
            "security": builder.last_bootstrap.security if builder.last_bootstrap else None,
            "cold_build_s": round(cold, 2),
            "cached_rebuild_median_s": {k: round(v, 3) for k, v in med.items()},
            "cached_rebuild_ratio_exec_vs_tcp": round(med["docker-container"] / med["tcp"], 3),
            "connect_median_ms": {k: round(v * 1000, 1) for k, v in con.items()},
            "runs": args.runs,
        }
        print(json.dumps(result, indent=2))
    finally:
        builder.remove(report=quiet_reporter)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
