"""Cached rebuild over kube-pod (port-forward, and exec) vs tcp, same daemon.

Not a test. Needs ``scripts/infra up --kube`` (the cluster, the registry, the CA bundle)::

    .venv/bin/python bench/bench_kube.py [--example examples/python-basic] [--runs 5]

One Deployment (one pod, host network) runs buildkitd listening on its unix socket *and* on a
127.0.0.1 TCP port, so every context reaches the very same daemon and cache:

- ``kube-pod`` (the default transport, ``auto``): ``deployment/<name>?namespace=…``; the pod's
  buildkitd has a TCP ``--addr``, so each gRPC connection is a port-forward WebSocket through
  the API server and the kubelet to that port;
- ``kube-exec``: the same context with ``transport=exec``: a WebSocket exec of
  ``buildctl dial-stdio`` in the pod;
- ``tcp``: ``tcp://127.0.0.1:<port>``, straight to the pod's listener.

Each run is a fresh ``envd build --output type=image,name=…,push=true`` process of the same
unchanged environment (one warm-up each first), interleaved; medians of wall time and of the
process's CPU time (user+sys, from wait4: what load distorts least), the phases of
``ENVD_TIMINGS``, and the ratios are printed. The namespace is deleted at the end.

Every contender runs as users get it, with envd's resident process on (a server of the bench's
own, warmed first: bench/_resident.py; CPU adds the server's forked child); ``kube direct`` and
``tcp direct`` are the same builds with ``ENVD_RESIDENT=0``, interleaved, with their own ratio.
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
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _resident

ROOT = Path(__file__).resolve().parent.parent
ENVD = str(Path(sys.executable).with_name("envd"))


def infra_env() -> dict[str, str]:
    """``scripts/infra env --json``."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "infra"), "env", "--json"],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envd(env: dict[str, str], *args: str, cwd: Path | None = None) -> float:
    """Run ``envd ARGS``; its wall time in seconds (fails loudly)."""
    return envd_rusage(env, *args, cwd=cwd)[0]


def envd_rusage(env: dict[str, str], *args: str, cwd: Path | None = None
                ) -> tuple[float, float]:
    """Run ``envd ARGS``; (wall seconds, CPU seconds user+sys of the process)."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([ENVD, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"envd {' '.join(args)} failed:\n{err.read().decode()[-3000:]}")
    return took, usage.ru_utime + usage.ru_stime


def phases(path: Path) -> dict[str, float]:
    """The ENVD_TIMINGS phases of the last build."""
    return json.loads(path.read_text())["phases"]  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", default=str(ROOT / "examples" / "python-basic"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--namespace-prefix", default="envd-bench-",
                        help="the bench's namespace is this plus a random suffix")
    args = parser.parse_args()
    infra = infra_env()
    if not infra.get("KUBECONFIG"):
        sys.exit("the cluster is not running: scripts/infra up --kube")
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=infra["KUBECONFIG"])
    core = client.CoreV1Api(api)
    ns = f"{args.namespace_prefix}{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    port = free_port()
    cfg = Path(tempfile.mkdtemp(prefix="envd-bench-kube-"))
    env = _resident.resident_env({**os.environ, "ENVD_CONFIG_DIR": str(cfg), "NO_COLOR": "1"})
    image = f"{infra['REGISTRY']}/bench-kube/{uuid.uuid4().hex[:8]}:latest"
    build = ["build", "--progress", "plain", "--ca-bundle", infra["CA_BUNDLE"],
             "--output", f"type=image,name={image},push=true"]
    try:
        while not core.list_namespaced_service_account(ns).items:
            time.sleep(0.3)
        flags = f"--addr unix:///run/buildkit/buildkitd.sock --addr tcp://127.0.0.1:{port}"
        envd(env, "context", "create", "--name", "kube", "--builder", "kube-pod",
             "--builder-address", f"deployment/bench?namespace={ns}",
             "--builder-opt", f"kubeconfig={infra['KUBECONFIG']}",
             "--builder-opt", f"image={infra['BUILDKIT_IMAGE_REF']}",
             "--builder-opt", "host-network=true", "--builder-opt", f"buildkitd-flags={flags}")
        envd(env, "context", "create", "--name", "kube-exec", "--builder", "kube-pod",
             "--builder-address", f"deployment/bench?namespace={ns}",
             "--builder-opt", f"kubeconfig={infra['KUBECONFIG']}",
             "--builder-opt", f"image={infra['BUILDKIT_IMAGE_REF']}",
             "--builder-opt", "host-network=true", "--builder-opt", f"buildkitd-flags={flags}",
             "--builder-opt", "transport=exec")
        envd(env, "context", "create", "--name", "tcp", "--builder", "tcp",
             "--builder-address", f"tcp://127.0.0.1:{port}")
        print(f"bootstrap (deployment + pod ready): "
              f"{envd(env, '--context', 'kube', 'bootstrap'):.1f}s", flush=True)
        names = ("kube", "kube-exec", "tcp")
        for name in names:  # warm-up: the first build fills the cache
            envd(env, "--context", name, *build, cwd=Path(args.example))
        _resident.warm(env)
        direct = _resident.direct_env(env)
        contenders = {name: (name, env) for name in names}
        contenders.update({"kube direct": ("kube", direct), "tcp direct": ("tcp", direct)})
        runs = run_interleaved(contenders, build, Path(args.example), args.runs)
        report(runs)
    finally:
        core.delete_namespace(ns, grace_period_seconds=0)
        _resident.stop(env)
    return 0


def run_interleaved(contenders: dict[str, tuple[str, dict[str, str]]], build: list[str],
                    cwd: Path, runs: int) -> dict[str, list[tuple[float, float, dict[str, float]]]]:
    """``runs`` rounds of one cached rebuild per contender (label: context, environment):
    (wall, cpu, phases) each."""
    out: dict[str, list[tuple[float, float, dict[str, float]]]] = {n: [] for n in contenders}
    timings = Path(tempfile.mkdtemp(prefix="envd-bench-kube-t-")) / "timings.json"
    for _ in range(runs):
        for label, (name, env) in contenders.items():
            resident = env.get("ENVD_RESIDENT") != "0"
            served = _resident.children_cpu(env) if resident else 0.0
            wall, cpu = envd_rusage({**env, "ENVD_TIMINGS": str(timings)}, "--context", name,
                                    *build, cwd=cwd)
            if resident:  # the build ran in the server's child
                cpu += _resident.children_cpu(env) - served
            out[label].append((wall, cpu, phases(timings)))
    return out


def report(runs: dict[str, list[tuple[float, float, dict[str, float]]]]) -> None:
    """Medians, per-phase medians and the ratios to tcp."""
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    med = {n: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for n, v in runs.items()}
    for name, values in runs.items():
        walls = [f"{r[0]:.2f}" for r in values]
        print(f"{name:9} cached rebuild: median {med[name][0]:.2f}s wall, "
              f"{med[name][1]:.2f}s CPU ({', '.join(walls)})")
    keys = list(dict.fromkeys(k for v in runs.values() for r in v for k in r[2]))
    print("phases (median s): " + " | ".join(runs))
    for key in keys:
        cells = [f"{statistics.median(r[2].get(key, 0.0) for r in v):.3f}"
                 for v in runs.values()]
        print(f"  {key:18} " + "  ".join(cells))
    for name in runs:
        base = "tcp direct" if name.endswith(" direct") else "tcp"
        if name != base and base in med:
            tcp_wall, tcp_cpu = med[base]
            mode = "ENVD_RESIDENT=0" if base != "tcp" else "resident on"
            print(f"ratio {name} / {base}: {med[name][0] / tcp_wall:.2f}x wall, "
                  f"{med[name][1] / tcp_cpu:.2f}x CPU ({mode})")


if __name__ == "__main__":
    sys.exit(main())
