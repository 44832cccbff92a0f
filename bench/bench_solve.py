"""Solve the same LLB with envd's Python client and with ``buildctl build``; print both times.

Not a test. Needs a running buildkitd and buildctl (``scripts/infra up`` provides both)::

    .venv/bin/python bench/bench_solve.py [--addr unix:///var/lib/envd-infra/run/buildkitd.sock]
        [--buildctl /var/lib/envd-infra/bin/buildctl] [--image 127.0.0.1:5000/busybox:latest]
        [--runs 10]

Graph: image -> exec (writes a file, prints a line) -> mkdir -> mkfile -> copy. buildctl gets the
very bytes our client sends (``Definition.SerializeToString()`` on stdin), so both solve the
identical graph.
- cold: every run uses a fresh token in the exec, so the exec and file ops really run.
- cached: the same definition over and over after one warm-up solve.
Columns: ours (one connection reused), ours+connect (a new connection per solve, as a CLI
invocation would do in-process), ours-process (a new Python process per solve: interpreter
start, imports, connect, solve; what an ``envd build`` invocation pays at least), buildctl (a new
process per solve, as a user runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envd_core.buildkit import llb
from envd_core.buildkit.client import BuildkitClient
from envd_core.buildkit.transport import Connection, connect_tcp, connect_unix

DEFAULT_ADDR = "unix:///var/lib/envd-infra/run/buildkitd.sock"


def graph(image: str, token: str) -> llb.State:
    """The benchmark graph; ``token`` makes it unique (cold) or repeats it (cached)."""
    base = llb.image(image)
    ex = base.run(f"echo {token} > /token && echo built {token}", name="exec")
    return (
        ex.root()
        .mkdir("/out/sub")
        .mkfile("/out/sub/f", token)
        .copy(ex.root(), "/token", "/out/token")
    )


def connect(addr: str) -> Connection:
    if addr.startswith("unix://"):
        return connect_unix(addr)
    host, port = addr.removeprefix("tcp://").rsplit(":", 1)
    return connect_tcp(host, int(port))


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_buildctl(buildctl: str, addr: str, data: bytes) -> None:
    proc = subprocess.run(
        [buildctl, "--addr", addr, "build", "--progress", "quiet"],
        input=data,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"buildctl failed: {proc.stderr.decode()[-500:]}")


_CHILD = """
import sys
sys.path.insert(0, {root!r})
from envd_core.buildkit._pb import ops_pb2
from envd_core.buildkit.client import BuildkitClient
from envd_core.buildkit.transport import connect_unix, connect_tcp
addr = sys.argv[1]
if addr.startswith("unix://"):
    conn = connect_unix(addr)
else:
    host, port = addr.removeprefix("tcp://").rsplit(":", 1)
    conn = connect_tcp(host, int(port))
BuildkitClient(conn).solve(ops_pb2.Definition.FromString(sys.stdin.buffer.read()))
conn.close()
"""


def run_ours_process(addr: str, data: bytes) -> None:
    code = _CHILD.format(root=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run(
        [sys.executable, "-c", code, addr], input=data, capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"child solve failed: {proc.stderr.decode()[-500:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default=os.environ.get("BUILDKIT_HOST", DEFAULT_ADDR))
    ap.add_argument("--buildctl", default="/var/lib/envd-infra/bin/buildctl")
    ap.add_argument("--image", default="127.0.0.1:5000/busybox:latest")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print the medians as JSON too")
    args = ap.parse_args()

    conn = connect(args.addr)
    client = BuildkitClient(conn)

    def ours(data: llb.State) -> Callable[[], object]:
        return lambda: client.solve(data.to_definition())

    def ours_connect(data: llb.State) -> Callable[[], object]:
        def go() -> None:
            with connect(args.addr) as c:
                BuildkitClient(c).solve(data.to_definition())

        return go

    def ours_process(data: llb.State) -> Callable[[], object]:
        raw = data.to_definition().SerializeToString()
        return lambda: run_ours_process(args.addr, raw)

    def theirs(data: llb.State) -> Callable[[], object]:
        raw = data.to_definition().SerializeToString()
        return lambda: run_buildctl(args.buildctl, args.addr, raw)

    # Warm the image into the daemon so "cold" measures the build, not the first pull.
    client.solve(graph(args.image, "warmup").to_definition())

    results: dict[str, dict[str, list[float]]] = {"cold": {}, "cached": {}}
    cached_state = graph(args.image, "cached-" + secrets.token_hex(4))
    client.solve(cached_state.to_definition())
    for _ in range(args.runs):
        # Interleave the three so daemon-side drift hits them equally.
        for name, make in (
            ("ours", ours),
            ("ours+connect", ours_connect),
            ("ours-process", ours_process),
            ("buildctl", theirs),
        ):
            cold_state = graph(args.image, secrets.token_hex(8))
            results["cold"].setdefault(name, []).append(timed(make(cold_state)))
            results["cached"].setdefault(name, []).append(timed(make(cached_state)))
    conn.close()

    print(f"buildkitd {args.addr}; {args.runs} runs each; median (min) seconds; ratio vs buildctl")
    heads = " ".join(f"{h:>16}" for h in ("ours", "ours+connect", "ours-process", "buildctl"))
    print(f"{'':8} {heads}   ratios vs buildctl (ours / +connect / process)")
    summary: dict[str, dict[str, float]] = {}
    for kind, per in results.items():
        med = {k: statistics.median(v) for k, v in per.items()}
        low = {k: min(v) for k, v in per.items()}
        summary[kind] = med
        cells = " ".join(f"{med[k]:>8.3f} ({low[k]:.3f})" for k in per)
        ratios = " / ".join(
            f"{med[k] / med['buildctl']:.2f}x" for k in ("ours", "ours+connect", "ours-process")
        )
        print(f"{kind:8} {cells}   {ratios}")
    if args.json:
        print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
