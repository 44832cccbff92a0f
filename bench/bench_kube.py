"""Cached rebuild over kube-pod (exec'd dial-stdio through the API server) vs tcp, same daemon.

Not a test. Needs ``scripts/infra up --kube`` (the cluster, the registry, the CA bundle)::

    .venv/bin/python bench/bench_kube.py [--example examples/python-basic] [--runs 5]

One Deployment (one pod, host network) runs buildkitd listening on its unix socket *and* on a
127.0.0.1 TCP port, so both contexts reach the very same daemon and cache:

- ``kube-pod``: ``deployment/<name>?namespace=…``; every gRPC connection is a WebSocket exec of
  ``buildctl dial-stdio`` via the API server and the kubelet;
- ``tcp``: ``tcp://127.0.0.1:<port>``, straight to the pod's listener.

Each run is a fresh ``envd build --output type=image,name=…,push=true`` process of the same
unchanged environment (one warm-up each first), interleaved; medians and the ratio printed.
The namespace is deleted at the end.
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
    t0 = time.monotonic()
    proc = subprocess.run([ENVD, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"envd {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", default=str(ROOT / "examples" / "python-basic"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    infra = infra_env()
    if not infra.get("KUBECONFIG"):
        sys.exit("the cluster is not running: scripts/infra up --kube")
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=infra["KUBECONFIG"])
    core = client.CoreV1Api(api)
    ns = f"envd-bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    port = free_port()
    cfg = Path(tempfile.mkdtemp(prefix="envd-bench-kube-"))
    env = {**os.environ, "ENVD_CONFIG_DIR": str(cfg), "NO_COLOR": "1"}
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
        envd(env, "context", "create", "--name", "tcp", "--builder", "tcp",
             "--builder-address", f"tcp://127.0.0.1:{port}")
        print(f"bootstrap (deployment + pod ready): "
              f"{envd(env, '--context', 'kube', 'bootstrap'):.1f}s", flush=True)
        times: dict[str, list[float]] = {"kube-pod": [], "tcp": []}
        for name in ("kube", "tcp"):  # warm-up: the first build fills the cache
            envd(env, "--context", name, *build, cwd=Path(args.example))
        for _ in range(args.runs):
            for name, key in (("kube", "kube-pod"), ("tcp", "tcp")):
                times[key].append(envd(env, "--context", name, *build,
                                       cwd=Path(args.example)))
        kube_med, tcp_med = (statistics.median(times[k]) for k in ("kube-pod", "tcp"))
        for key, values in times.items():
            print(f"{key:9} cached rebuild: median {statistics.median(values):.2f}s "
                  f"min {min(values):.2f}s ({', '.join(f'{v:.2f}' for v in values)})")
        print(f"ratio kube-pod / tcp: {kube_med / tcp_med:.2f}x")
    finally:
        core.delete_namespace(ns, grace_period_seconds=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
