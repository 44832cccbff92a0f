"""Benchmark: context upload through our session vs ``buildctl build --local`` (not a test).

Generates a tree of ~10,000 files / ~200 MB under /tmp, starts a private buildkitd (its own
root dir and socket, so pruning its cache never touches anyone else's daemon), and solves the
same LLB, a bare ``local://context`` source, with both clients:

* first upload: build cache pruned before every run, so every file is sent;
* incremental: the cache is warm and one file changed, so one file is sent.

Our client runs in a child process so its peak RSS (``ru_maxrss``) and tracemalloc peak are
its own. Usage::

    .venv/bin/python bench/bench_upload.py [--runs 3] [--files 10000] [--mb 200]
        [--buildkitd PATH] [--buildctl PATH] [--workdir /tmp/envd-bench-upload]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def find_tool(name: str, given: str | None) -> str:
    """A buildkitd/buildctl binary: flag, infra's bin dir, the go-install cache, or PATH."""
    for candidate in (given, f"/var/lib/envd-infra/bin/{name}", f"/tmp/pre/gobin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if not found:
        sys.exit(f"bench_upload: `{name}` not found; pass --{name} PATH")
    return found


def generate_tree(root: Path, files: int, total_mb: int) -> tuple[int, int]:
    """~``files`` files in 100 directories: many small ones plus 1% large ones."""
    marker = root / ".generated"
    spec = f"{files}:{total_mb}"
    if marker.exists() and marker.read_text() == spec:
        return _tree_size(root)
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(42)
    large = max(1, files // 100)
    small = files - large
    small_sizes = [rng.randint(512, 8192) for _ in range(small)]
    large_size = max(1, (total_mb * (1 << 20) - sum(small_sizes)) // large)
    sizes = small_sizes + [large_size] * large
    rng.shuffle(sizes)
    pool = os.urandom(4 << 20)
    for i, size in enumerate(sizes):
        d = root / f"d{i % 100:02d}" / f"s{(i // 100) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"f{i:05d}.bin", "wb") as fh:
            offset = (i * 7919) % (len(pool) - 8192)
            left = size
            while left:
                n = min(left, len(pool) - offset)
                fh.write(pool[offset : offset + n])
                left -= n
                offset = 0
    marker.write_text(spec)
    return _tree_size(root)


def _tree_size(root: Path) -> tuple[int, int]:
    count = total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            count += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return count, total


def definition_bytes() -> bytes:
    """LLB: ``local://context`` as the result (both clients send exactly these bytes)."""
    from envd_core.buildkit._pb import ops_pb2

    op = ops_pb2.Op(
        source=ops_pb2.SourceOp(
            identifier="local://context", attrs={"local.sharedkeyhint": "context"}
        )
    )
    raw = op.SerializeToString(deterministic=True)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    terminal = ops_pb2.Op(inputs=[ops_pb2.Input(digest=digest, index=0)])
    definition = ops_pb2.Definition()
    getattr(definition, "def").extend([raw, terminal.SerializeToString(deterministic=True)])
    return definition.SerializeToString()


def run_ours_child(addr: str, tree: str, shared_key: str) -> None:
    """Child process body: one solve with our session; prints a JSON result line."""
    tracemalloc.start()
    from envd_core.buildkit._pb import ops_pb2
    from envd_core.buildkit.client import BuildkitClient
    from envd_core.buildkit.session import LocalDir, Session
    from envd_core.buildkit.transport import connect_unix

    definition = ops_pb2.Definition.FromString(definition_bytes())
    conn = connect_unix(addr.removeprefix("unix://"))
    client = BuildkitClient(conn)
    session = Session(
        shared_key=shared_key,
        local_dirs={"context": LocalDir(tree, use_dockerignore=False)},
    )
    start = time.perf_counter()
    with session:
        client.solve(definition, session=session)
    elapsed = time.perf_counter() - start
    conn.close()
    sent = sum(t.data_bytes for t in session.transfers)
    files = sum(t.files_requested for t in session.transfers)
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "sent_bytes": sent,
                "sent_files": files,
                "messages_out": session.messages_out,
                "messages_in": session.messages_in,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "tracemalloc_peak_mb": tracemalloc.get_traced_memory()[1] / (1 << 20),
            }
        )
    )


def run_ours(addr: str, tree: Path, shared_key: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", addr, str(tree), shared_key],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"bench_upload: our client failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_buildctl(buildctl: str, addr: str, tree: Path, definition: bytes) -> float:
    start = time.perf_counter()
    subprocess.run(
        [buildctl, "--addr", addr, "build", "--local", f"context={tree}", "--progress", "quiet"],
        input=definition,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def prune(buildctl: str, addr: str) -> None:
    subprocess.run([buildctl, "--addr", addr, "prune", "--all"], check=True, capture_output=True)


def start_daemon(buildkitd: str, buildctl: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    sock = workdir / "buildkitd.sock"
    addr = f"unix://{sock}"
    log = open(workdir / "buildkitd.log", "wb")  # noqa: SIM115 - lives as long as the daemon
    proc = subprocess.Popen(
        [buildkitd, "--root", str(workdir / "root"), "--addr", addr],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ok = subprocess.run(
            [buildctl, "--addr", addr, "debug", "workers"], capture_output=True, check=False
        )
        if ok.returncode == 0:
            return proc, addr
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.kill()
    sys.exit(f"bench_upload: buildkitd did not start; see {workdir / 'buildkitd.log'}")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        run_ours_child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--buildkitd")
    parser.add_argument("--buildctl")
    parser.add_argument("--workdir", default="/tmp/envd-bench-upload")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    buildkitd = find_tool("buildkitd", args.buildkitd)
    buildctl = find_tool("buildctl", args.buildctl)
    tree = workdir / "tree"
    count, total = generate_tree(tree, args.files, args.mb)
    print(f"tree: {count} files, {total / (1 << 20):.1f} MiB at {tree}")
    definition = definition_bytes()
    proc, addr = start_daemon(buildkitd, buildctl, workdir)
    try:
        results: dict[str, list[float]] = {k: [] for k in ("bc1", "us1", "bcI", "usI")}
        mem: list[dict[str, float]] = []
        changed = tree / "d00" / "s0" / "f00000.bin"
        for run in range(args.runs):
            prune(buildctl, addr)
            results["bc1"].append(run_buildctl(buildctl, addr, tree, definition))
            prune(buildctl, addr)
            ours = run_ours(addr, tree, "bench-ours")
            results["us1"].append(ours["seconds"])
            mem.append(ours)
            # Incremental: warm cache, touch one file, upload again.
            changed.write_bytes(os.urandom(4096) + str(run).encode())
            results["bcI"].append(run_buildctl(buildctl, addr, tree, definition))
            changed.write_bytes(os.urandom(4096) + str(run + 100).encode())
            inc = run_ours(addr, tree, "bench-ours")
            results["usI"].append(inc["seconds"])
            mem.append(inc)
            print(
                f"run {run + 1}: first buildctl {results['bc1'][-1]:.2f}s ours "
                f"{results['us1'][-1]:.2f}s | incremental buildctl {results['bcI'][-1]:.2f}s "
                f"ours {results['usI'][-1]:.2f}s (sent {inc['sent_files']} file(s), "
                f"{inc['sent_bytes']} B)"
            )
        med = {k: statistics.median(v) for k, v in results.items()}
        mib = total / (1 << 20)
        print(
            f"first upload (median of {args.runs}): buildctl {med['bc1']:.2f}s "
            f"({mib / med['bc1']:.0f} MiB/s), ours {med['us1']:.2f}s ({mib / med['us1']:.0f} MiB/s)"
            f" -> ours/buildctl throughput {med['bc1'] / med['us1']:.2f}x"
        )
        print(
            f"incremental (median): buildctl {med['bcI']:.2f}s, ours {med['usI']:.2f}s "
            f"-> {med['bcI'] / med['usI']:.2f}x"
        )
        print(
            f"our client peak RSS {max(m['maxrss_mb'] for m in mem):.0f} MiB, "
            f"tracemalloc peak {max(m['tracemalloc_peak_mb'] for m in mem):.1f} MiB"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
