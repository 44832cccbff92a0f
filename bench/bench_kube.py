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

kube-pod builds go through the context's forwarding keeper (docs/kube-pod.md), as users get
them from their second build on: the bench waits for both kube contexts' keepers after the
warm-up. ``kube no keeper`` is the same build with ``ENVD_KUBE_KEEPER=0`` (the build process
lists, upgrades and bridges itself). The keepers' own CPU over the timed rounds (from
``/proc/PID/stat``) is printed per build they routed, apart from the build processes' CPU.

Every contender runs as users get it, with envd's resident process on (a server of the bench's
own, warmed first: bench/_resident.py; CPU adds the server's forked child); ``kube direct`` and
``tcp direct`` are the same builds with ``ENVD_RESIDENT=0``, interleaved, with their own ratio.

``--warm`` adds rounds that measure what a build costs once every module is already imported,
as under the resident process, but without it (no client, no hand-over): this process
imports envd's CLI, the plugins, ``kubernetes``, grpc and the BuildKit protobufs once, then
forks a child per build that runs the CLI in-process (:func:`warm_build`). The child's CPU
(wait4), wall time, phases, and its TCP connections by destination (an audit hook on
``socket.connect``: API server, buildkitd) are printed per context, with the ratios
``kube / tcp`` warm, then the connection alone (:func:`breakdown`).
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
    parser.add_argument("--warm", action="store_true",
                        help="also measure warm builds (modules already imported, one forked "
                             "child per build), the resident process's case")
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
        # The first kube-pod build started each context's keeper; wait until they serve
        # (a user's second build finds it: ~1 s after the first).
        kube_options = {"kubeconfig": infra["KUBECONFIG"], "image": infra["BUILDKIT_IMAGE_REF"],
                        "host-network": "true", "buildkitd-flags": flags}
        keeper_socks = wait_keepers(env, f"deployment/bench?namespace={ns}", kube_options)
        direct = _resident.direct_env(env)
        contenders = {name: (name, env) for name in names}
        contenders["kube no keeper"] = ("kube", {**env, "ENVD_KUBE_KEEPER": "0"})
        contenders.update({"kube direct": ("kube", direct), "tcp direct": ("tcp", direct)})
        before = keeper_usage(keeper_socks)
        runs = run_interleaved(contenders, build, Path(args.example), args.runs)
        report(runs)
        shares = report_keepers(before, keeper_usage(keeper_socks))
        tcp_cpu = statistics.median(r[1] for r in runs["tcp"])
        for label, share in shares.items():
            cpu = statistics.median(r[1] for r in runs[label])
            print(f"ratio {label} / tcp CPU with its keeper's share: {cpu + share:.3f} / "
                  f"{tcp_cpu:.3f} s = {(cpu + share) / tcp_cpu:.2f}x")
        if args.warm:
            warm = run_warm(direct, names, build, Path(args.example), args.runs)
            print("\nwarm (every module imported; one forked child per build):")
            report({n: [r[:3] for r in v] for n, v in warm.items()}, mode="warm child")
            for name, values in warm.items():
                print(f"  {name:9} Python socket connects in the last build (grpc's own "
                      f"are not seen): {values[-1][3]}")
            kube_options = {"kubeconfig": infra["KUBECONFIG"],
                            "image": infra["BUILDKIT_IMAGE_REF"], "host-network": "true",
                            "buildkitd-flags": flags}
            breakdown(direct, f"deployment/bench?namespace={ns}", kube_options,
                      f"127.0.0.1:{port}", str(Path(args.example).resolve()), args.runs * 3)
    finally:
        from envd_kube_pod.keeper_client import stop_all

        stop_all(env["ENVD_RESIDENT_DIR"])
        core.delete_namespace(ns, grace_period_seconds=0)
        _resident.stop(env)
    return 0


def wait_keepers(env: dict[str, str], address: str, options: dict[str, str]
                 ) -> dict[str, str]:
    """The control sockets of the keepers of ``kube`` and ``kube-exec`` (started if needed,
    waited for) in the bench's socket directory."""
    from envd_kube_pod.keeper_client import start

    out = {}
    for label, extra in (("kube", {}), ("kube-exec", {"transport": "exec"})):
        sock = start(address, {**options, **extra}, env)
        if sock is None:
            sys.exit(f"the {label} keeper did not start: {env['ENVD_RESIDENT_DIR']}/"
                     "kube-keeper.log")
        out[label] = sock
    return out


def keeper_usage(socks: dict[str, str]) -> dict[str, tuple[float, int]]:
    """Per keeper: (CPU seconds user+sys so far, from /proc/PID/stat; routes answered)."""
    from envd_kube_pod.keeper_client import ask

    out = {}
    for label, sock in socks.items():
        state = ask(sock, {"op": "status"}, timeout=10) or {}
        pid = int(state.get("pid", 0))
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        out[label] = ((int(fields[11]) + int(fields[12])) / ticks, int(state.get("routes", 0)))
    return out


def report_keepers(before: dict[str, tuple[float, int]],
                   after: dict[str, tuple[float, int]]) -> dict[str, float]:
    """The keepers' CPU over the timed rounds, per build they routed (not in the CPU columns
    above, which are the build processes'): what a kube-pod build costs in total is both.
    Returns the CPU seconds per build of each keeper."""
    shares = {}
    for label, (cpu, routes) in after.items():
        cpu0, routes0 = before[label]
        builds = max(routes - routes0, 1)
        shares[label] = (cpu - cpu0) / builds
        print(f"{label} keeper: {cpu - cpu0:.3f}s CPU for {routes - routes0} builds routed = "
              f"{shares[label] * 1000:.1f} ms per build (listing, bridge, spare refill; "
              "`kube` and `kube direct` share one keeper)")
    return shares


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


Run = tuple[float, float, dict[str, float], dict[str, int]]


def preload() -> None:
    """Import what a resident process keeps loaded: envd's CLI, every builder plugin, the
    ``kubernetes`` client, grpc, websocket-client and BuildKit's protobuf modules."""
    import contextlib
    import importlib

    for name in ("envd_core.cli.app", "envd_core.pipeline.execute",
                 "envd_core.buildkit.client", "envd_core.buildkit.session",
                 "envd_core.buildkit.progress", "envd_core.buildkit.transport",
                 "envd_core.buildkit._pb.control_pb2", "envd_core.buildkit._pb.control_pb2_grpc",
                 "envd_kube_pod", "envd_kube_pod.cluster", "envd_kube_pod.stream",
                 "envd_kube_pod.deploy", "envd_kube_pod.routing", "envd_kube_pod.kubeconfig",
                 "envd_core.contexts.store", "envd_core.atomic", "envd_tcp",
                 "kubernetes", "kubernetes.client", "kubernetes.config", "kubernetes.stream",
                 "websocket", "grpc", "yaml"):
        # a module a later version renamed: the child imports what it needs
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def warm_build(env: dict[str, str], argv: list[str], cwd: Path, counts: Path) -> Run:
    """One build in a forked child of this (preloaded) process: (wall, CPU, phases,
    connections by destination)."""
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: one envd invocation, as a resident would run it
        code = 1
        try:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            seen: dict[str, int] = {}

            def audit(event: str, args: tuple[object, ...]) -> None:
                if event == "socket.connect" and isinstance(args[1], tuple):
                    key = f"{args[1][0]}:{args[1][1]}"
                    seen[key] = seen.get(key, 0) + 1

            sys.addaudithook(audit)
            import atexit

            atexit.register(lambda: counts.write_text(json.dumps(seen)))
            from envd_core.cli.app import main as envd_main

            envd_main(argv, write_index=False)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    took = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"warm envd {' '.join(argv)} failed (exit {status})")
    timings = Path(env["ENVD_TIMINGS"])
    return (took, usage.ru_utime + usage.ru_stime, phases(timings),
            json.loads(counts.read_text()) if counts.exists() else {})


def run_warm(env: dict[str, str], names: tuple[str, ...], build: list[str], cwd: Path,
             runs: int) -> dict[str, list[Run]]:
    """Warm-up then ``runs`` interleaved rounds of :func:`warm_build` per context."""
    preload()
    folder = Path(tempfile.mkdtemp(prefix="envd-bench-kube-w-"))
    child_env = {**env, "ENVD_TIMINGS": str(folder / "timings.json")}
    out: dict[str, list[Run]] = {n: [] for n in names}
    for name in names:
        warm_build(child_env, ["--context", name, *build], cwd, folder / "c.json")
    for _ in range(runs):
        for name in names:
            out[name].append(warm_build(child_env, ["--context", name, *build], cwd,
                                        folder / "c.json"))
    return out


def connect_phases(kind: str, address: str, options: dict[str, str], project: str
                   ) -> list[tuple[str, float, float]]:
    """In this (forked, preloaded) process: a build's connection to buildkitd, as the
    early-connect thread makes it, in phases of (name, wall s, CPU s)."""
    from envd_core.buildkit.client import probe

    marks: list[tuple[str, float, float]] = []
    last = [time.perf_counter(), time.process_time()]

    def mark(name: str) -> None:
        now = [time.perf_counter(), time.process_time()]
        marks.append((name, now[0] - last[0], now[1] - last[1]))
        last[:] = now

    if kind == "kube":
        from envd_kube_pod import KubePodBuilder

        kube = KubePodBuilder(address, options)
        kube.project = project
        kube.needs_bootstrap()
        mark("kubeconfig + pod listing")
        conn = kube.connect(timeout=30)
        mark("route + WebSocket + grpc ready")
    else:
        from envd_tcp import TcpBuilder

        conn = TcpBuilder(address, {}).connect(timeout=30)
        mark("grpc connect + ready")
    probe(conn, timeout=30)
    mark("one ListWorkers round trip")
    conn.close()
    mark("close")
    return marks


def breakdown(env: dict[str, str], kube_address: str, kube_options: dict[str, str],
              tcp_address: str, project: str, runs: int) -> None:
    """Warm: only the connection a build makes, kube-pod vs tcp, interleaved, one forked
    child each (median wall and CPU per phase)."""
    results: dict[str, list[list[tuple[str, float, float]]]] = {"kube": [], "tcp": []}
    for i in range(runs + 1):
        for kind in results:
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child
                os.close(read)
                os.environ.update(env)
                address = kube_address if kind == "kube" else tcp_address
                marks = connect_phases(kind, address, kube_options, project)
                os.write(write, json.dumps(marks).encode())
                os._exit(0)
            os.close(write)
            with os.fdopen(read, "rb") as pipe:
                data = pipe.read()
            os.waitpid(pid, 0)
            if i and data:  # the first round is a warm-up
                results[kind].append([tuple(m) for m in json.loads(data)])  # type: ignore[misc]
    print(f"\nwarm connection only (median of {runs}; load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    totals = {}
    for kind, values in results.items():
        for i, (name, _, _) in enumerate(values[0]):
            wall = statistics.median(v[i][1] for v in values)
            cpu = statistics.median(v[i][2] for v in values)
            print(f"  {kind:5} {name:32} {wall * 1000:7.1f} ms wall {cpu * 1000:6.1f} ms CPU")
        totals[kind] = (statistics.median(sum(m[1] for m in v) for v in values),
                        statistics.median(sum(m[2] for m in v) for v in values))
        print(f"  {kind:5} {'total':32} {totals[kind][0] * 1000:7.1f} ms wall "
              f"{totals[kind][1] * 1000:6.1f} ms CPU")
    print(f"  kube adds {(totals['kube'][0] - totals['tcp'][0]) * 1000:.1f} ms wall, "
          f"{(totals['kube'][1] - totals['tcp'][1]) * 1000:.1f} ms CPU per connection")


def report(runs: dict[str, list[tuple[float, float, dict[str, float]]]],
           mode: str | None = None) -> None:
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
            label = mode or ("ENVD_RESIDENT=0" if base != "tcp" else "resident on")
            print(f"ratio {name} / {base}: {med[name][0] / tcp_wall:.2f}x wall, "
                  f"{med[name][1] / tcp_cpu:.2f}x CPU ({label})")


if __name__ == "__main__":
    sys.exit(main())
