"""Builders that start their own BuildKit, side by side with upstream envd, in one run.

1. **Bootstrap to ready**, from no container to the first answered ``ListWorkers``, on the same
   image and the same dockerd: ``envd bootstrap`` (ours, a ``docker-container`` context) against
   upstream envd's ``envd --buildkitd-image IMAGE bootstrap`` (a ``docker-container`` context of
   its own). Each CLI's SSH-key stage runs once untimed first, so key generation is not counted.
   Upstream asks only for a privileged container; where the engine refuses that, its result is
   printed as the error line it ends with, not as a time. Ours is also timed in process
   (``Builder.bootstrap``) for the docker-container builder and the rootless builder's
   container mode.
2. **Cached rebuild**, exec transport against TCP: one BuildKit container started with
   ``network=host`` and an extra ``--addr tcp://127.0.0.1:PORT``, so a ``docker-container``
   context (``buildctl dial-stdio`` through the Engine API exec) and a ``tcp`` context reach the
   *same* buildkitd; after one cold build, cached rebuilds alternate between the two.

Medians and ratios are printed as JSON. Needs the infra (``scripts/infra up``)::

    .venv/bin/python bench/bench_builders.py [--runs 5]
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
from typing import Any

ENVD = str(Path(sys.executable).with_name("envd"))
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
INFRA = Path(__file__).resolve().parents[1] / "scripts" / "infra"


def infra_env() -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(INFRA), "env", "--json"], capture_output=True,
                         text=True, check=True).stdout
    return dict(json.loads(out))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None,
        check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return took, proc


def docker_rm(*names: str) -> None:
    for name in names:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", "-f", f"{name}_state"], capture_output=True,
                       check=False)


def last_error_line(text: str) -> str:
    """The last error line, its end kept (Go errors put the root cause last)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower()]
    line = (errors or lines or ["(no output)"])[-1]
    return line if len(line) <= 300 else "…" + line[-300:]


def bench_bootstrap(infra: dict[str, Any], work: Path, runs: int) -> dict[str, Any]:
    from envd_docker_container import DockerContainerBuilder
    from envd_rootless import RootlessBuilder

    from envd_core.builder import silent

    image = str(infra["BUILDKIT_IMAGE_REF"])
    ours_name, theirs_name = f"envd_bench_ours_{os.getpid()}", f"envd_bench_up_{os.getpid()}"
    ours_env = dict(os.environ, ENVD_CONFIG_DIR=str(work / "ours"), NO_COLOR="1",
                    HOME=str(work / "home-ours"))
    ours_env.pop("ENVD_CONTEXT", None)
    up_env = dict(os.environ, HOME=str(work / "home-upstream"))
    upstream = str(infra["UPSTREAM_ENVD"])
    run([ENVD, "context", "create", "--name", "dc", "--builder", "docker-container",
         "--builder-address", ours_name, "--builder-opt", f"image={image}", "--use"], ours_env)
    run([ENVD, "bootstrap", "--buildkit=false", "--with-autocomplete=false"], ours_env)
    run([upstream, "context", "create", "--name", "dc", "--builder", "docker-container",
         "--builder-address", theirs_name, "--use"], up_env, check=False)
    run([upstream, "bootstrap", "--buildkit=false", "--with-autocomplete=false"], up_env,
        check=False)
    ours_cli: list[float] = []
    theirs: list[float] = []
    theirs_error = ""
    try:
        for _ in range(runs):
            docker_rm(ours_name, theirs_name)
            took, _ = run([ENVD, "bootstrap", "--with-autocomplete=false"], ours_env)
            ours_cli.append(took)
            took, proc = run([upstream, "--buildkitd-image", image, "bootstrap",
                              "--with-autocomplete=false"], up_env, check=False)
            if proc.returncode == 0:
                theirs.append(took)
            else:
                theirs_error = last_error_line(proc.stdout + "\n" + proc.stderr)
        in_process: dict[str, list[float]] = {"docker-container": [], "rootless-container": []}
        builders = {
            "docker-container": DockerContainerBuilder(ours_name, {"image": image}),
            "rootless-container": RootlessBuilder(f"bench{os.getpid()}", {
                "mode": "container", "image": str(infra["BUILDKIT_ROOTLESS_IMAGE_REF"])}),
        }
        for _ in range(runs):
            for key, builder in builders.items():
                builder.remove(report=silent)
                started = time.monotonic()
                builder.bootstrap(report=silent)
                in_process[key].append(time.monotonic() - started)
        for builder in builders.values():
            builder.remove(report=silent)
    finally:
        docker_rm(ours_name, theirs_name)
    ours_med = statistics.median(ours_cli)
    result: dict[str, Any] = {
        "image": image,
        "ours_cli_median_s": round(ours_med, 3),
        "ours_in_process_median_s": {k: round(statistics.median(v), 3)
                                     for k, v in in_process.items()},
    }
    if theirs:
        result["upstream_cli_median_s"] = round(statistics.median(theirs), 3)
        result["ratio_ours_vs_upstream"] = round(ours_med / statistics.median(theirs), 3)
    else:
        result["upstream_cli"] = f"failed: {theirs_error}"
        result["ratio_ours_vs_upstream"] = None
    return result


def write_environment(directory: Path, registry: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "build.envd").write_text(
        "# syntax=v1\n\ndef build():\n"
        f'    base(image="{registry}/python:3.11-bookworm", dev=False)\n'
        '    install.apt_packages(name=["jq"])\n'
        '    install.python_packages(name=["six"])\n'
        '    run(commands=["echo bench > /bench-marker"])\n')
    return directory


def bench_rebuild(infra: dict[str, Any], work: Path, runs: int) -> dict[str, Any]:
    from envd_docker_container import DockerContainerBuilder

    from envd_core.builder import silent
    from envd_core.buildkit.transport import connect_tcp

    name = f"envd_bench_exec_{os.getpid()}"
    port = free_port()
    options = {"image": str(infra["BUILDKIT_IMAGE_REF"]), "network": "host",
               "buildkitd-flags": f"--addr tcp://127.0.0.1:{port}"}
    builder = DockerContainerBuilder(name, options)
    env = dict(os.environ, ENVD_CONFIG_DIR=str(work / "rebuild"), NO_COLOR="1")
    env.pop("ENVD_CONTEXT", None)
    try:
        builder.bootstrap(report=silent)
        connects: dict[str, list[float]] = {"docker-container": [], "tcp": []}
        for _ in range(runs):
            t = time.monotonic()
            builder.connect(timeout=10).close()
            connects["docker-container"].append(time.monotonic() - t)
            t = time.monotonic()
            connect_tcp("127.0.0.1", port, timeout=10).close()
            connects["tcp"].append(time.monotonic() - t)
        opt_args = [a for k, v in options.items() for a in ("--builder-opt", f"{k}={v}")]
        run([ENVD, "context", "create", "--name", "dc", "--builder", "docker-container",
             "--builder-address", name, *opt_args], env)
        run([ENVD, "context", "create", "--name", "tcp", "--builder", "tcp",
             "--builder-address", f"127.0.0.1:{port}"], env)
        context = write_environment(work / "env", str(infra["REGISTRY"]))
        target = f"{infra['REGISTRY']}/envd-bench/{name}:latest"
        build = ["build", "--progress", "plain", "--ca-bundle", CA_BUNDLE,
                 "--output", f"type=image,name={target},push=true"]
        cold, _ = run([ENVD, "--context", "dc", *build], env, cwd=context)
        times: dict[str, list[float]] = {"docker-container": [], "tcp": []}
        for _ in range(runs):
            times["docker-container"].append(
                run([ENVD, "--context", "dc", *build], env, cwd=context)[0])
            times["tcp"].append(run([ENVD, "--context", "tcp", *build], env, cwd=context)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        con = {k: statistics.median(v) for k, v in connects.items()}
        return {
            "security": builder.last_bootstrap.security if builder.last_bootstrap else None,
            "cold_build_s": round(cold, 2),
            "cached_rebuild_median_s": {k: round(v, 3) for k, v in med.items()},
            "ratio_exec_vs_tcp": round(med["docker-container"] / med["tcp"], 3),
            "connect_median_ms": {k: round(v * 1000, 1) for k, v in con.items()},
        }
    finally:
        builder.remove(report=silent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    infra = infra_env()
    work = Path(tempfile.mkdtemp(prefix="envd-bench-builders-"))
    try:
        result = {
            "runs": args.runs,
            "bootstrap_to_ready": bench_bootstrap(infra, work, args.runs),
            "cached_rebuild": bench_rebuild(infra, work, args.runs),
        }
        print(json.dumps(result, indent=2))
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
