"""Benchmark: context upload through our session vs ``buildctl build --local`` (not a test).

Generates a tree of ~10,000 files / ~200 MB under /tmp, starts a private buildkitd (its own
root dir and socket, so pruning its cache never touches anyone else's daemon), and solves the
same LLB, a bare ``local://context`` source, with both clients:

* first upload: build cache pruned before every run, so every file is sent;
* incremental: the cache is warm and one file changed, so one file is sent.

Both clients run as fresh processes timed from outside the same way: wall time, CPU (user+sys)
and peak RSS from ``wait4``, plus the daemon's CPU during each run. Our client is not traced
while timed (tracemalloc costs about as much CPU as the upload itself); one extra, untimed run
reports the tracemalloc peak. Usage::

    .venv/bin/python bench/bench_upload.py [--runs 3] [--files 10000] [--mb 200]
        [--buildkitd PATH] [--buildctl PATH] [--workdir /tmp/envd-bench-upload] [--no-tracemalloc]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

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


def run_ours_child(addr: str, tree: str, shared_key: str, trace: str = "") -> None:
    """Child process body: one solve with our session; prints a JSON result line.

    ``trace`` = "tracemalloc" traces Python allocations (a separate, untimed run: tracing every
    allocation roughly doubles the client's CPU, so timed runs never trace).
    """
    if trace == "tracemalloc":
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
    pauses = sum(t.listing_waits for t in session.transfers)
    timeouts = sum(t.listing_timeouts for t in session.transfers)
    print(
        json.dumps(
            {
                "solve_seconds": elapsed,
                "sent_bytes": sent,
                "sent_files": files,
                "listing_pauses": pauses,
                "listing_timeouts": timeouts,
                "messages_out": session.messages_out,
                "messages_in": session.messages_in,
                "flow": session.flow_stats(),
                "tracemalloc_peak_mb": tracemalloc.get_traced_memory()[1] / (1 << 20),
            }
        )
    )


def _daemon_cpu(pid: int) -> float:
    """CPU seconds (user+sys) the daemon has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_timed(argv: list[str], stdin: bytes | None, daemon_pid: int) -> dict[str, Any]:
    """Run ``argv`` to completion: wall time, its CPU (user+sys) and peak RSS, via wait4."""
    cpu0 = _daemon_cpu(daemon_pid)
    with tempfile.TemporaryFile() as errfile:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errfile,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        assert proc.stdout is not None
        out = proc.stdout.read()  # small: a JSON line, or nothing (buildctl --progress quiet)
        proc.stdout.close()
        # wait4 instead of Popen.wait: it returns the child's own rusage (CPU, peak RSS).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errfile.seek(0)
            err = errfile.read().decode(errors="replace")
            sys.exit(f"bench_upload: `{argv[0]}` failed ({proc.returncode}):\n{err[-3000:]}")
    return {
        "seconds": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "maxrss_mb": usage.ru_maxrss / 1024,
        "daemon_cpu": _daemon_cpu(daemon_pid) - cpu0,
        "stdout": out.decode(),
    }


def run_ours(
    addr: str, tree: Path, shared_key: str, daemon_pid: int, trace: str = ""
) -> dict[str, Any]:
    """One fresh process of our client, timed from outside like buildctl."""
    argv = [sys.executable, __file__, "--child", addr, str(tree), shared_key, trace]
    result = _run_timed(argv, None, daemon_pid)
    result.update(json.loads(result.pop("stdout").strip().splitlines()[-1]))
    return result


def run_buildctl(
    buildctl: str, addr: str, tree: Path, definition: bytes, daemon_pid: int
) -> dict[str, Any]:
    """One ``buildctl build --local`` process solving the same definition."""
    argv = [buildctl, "--addr", addr, "build", "--local", f"context={tree}", "--progress", "quiet"]
    result = _run_timed(argv, definition, daemon_pid)
    result.pop("stdout")
    return result


def prune(buildctl: str, addr: str) -> None:
    subprocess.run([buildctl, "--addr", addr, "prune", "--all"], check=True, capture_output=True)


def start_daemon(
    buildkitd: str, buildctl: str, workdir: Path, root: Path
) -> tuple[subprocess.Popen[bytes], str]:
    sock = workdir / "buildkitd.sock"
    addr = f"unix://{sock}"
    log = open(workdir / "buildkitd.log", "wb")  # noqa: SIM115 - lives as long as the daemon
    proc = subprocess.Popen(
        [buildkitd, "--root", str(root), "--addr", addr],
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


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def main() -> None:
    if len(sys.argv) in (5, 6) and sys.argv[1] == "--child":
        run_ours_child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--buildkitd")
    parser.add_argument("--buildctl")
    parser.add_argument("--workdir", default="/tmp/envd-bench-upload")
    parser.add_argument(
        "--daemon-root",
        help="the private buildkitd's root (default WORKDIR/root); a tmpfs such as "
        "/dev/shm/envd-bench-upload takes the disk's file-creation cost out of the comparison",
    )
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="skip the extra, untimed traced run"
    )
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    buildkitd = find_tool("buildkitd", args.buildkitd)
    buildctl = find_tool("buildctl", args.buildctl)
    tree = workdir / "tree"
    count, total = generate_tree(tree, args.files, args.mb)
    print(f"tree: {count} files, {total / (1 << 20):.1f} MiB at {tree}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    definition = definition_bytes()
    root = Path(args.daemon_root) if args.daemon_root else workdir / "root"
    print(f"daemon root: {root}")
    proc, addr = start_daemon(buildkitd, buildctl, workdir, root)
    pid = proc.pid
    try:
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ("bc1", "us1", "bcI", "usI")}
        changed = tree / "d00" / "s0" / "f00000.bin"
        for run in range(args.runs):
            # Which client goes first alternates: each first upload follows a prune of the
            # other's 200 MiB, and the file system's state after it is part of the cost.
            for first in ("bc1", "us1") if run % 2 == 0 else ("us1", "bc1"):
                prune(buildctl, addr)
                if first == "bc1":
                    rows["bc1"].append(run_buildctl(buildctl, addr, tree, definition, pid))
                else:
                    rows["us1"].append(run_ours(addr, tree, "bench-ours", pid))
            bc1, us1 = rows["bc1"][-1], rows["us1"][-1]
            incremental = ""
            if run % 2 == 0:
                # Incremental (only when ours went last, so the cache holds our upload): touch
                # one file, upload again.
                changed.write_bytes(os.urandom(4096) + str(run).encode())
                rows["bcI"].append(run_buildctl(buildctl, addr, tree, definition, pid))
                changed.write_bytes(os.urandom(4096) + str(run + 100).encode())
                rows["usI"].append(run_ours(addr, tree, "bench-ours", pid))
                bcI, usI = rows["bcI"][-1], rows["usI"][-1]
                incremental = (
                    f" | incremental buildctl {bcI['seconds']:.2f}s ours {usI['seconds']:.2f}s "
                    f"(sent {usI['sent_files']} file(s), {usI['sent_bytes']} B)"
                )
            flow = us1["flow"]
            print(
                f"run {run + 1} ({'buildctl' if run % 2 == 0 else 'ours'} first): "
                f"first buildctl {bc1['seconds']:.2f}s cpu {bc1['cpu']:.2f}s, "
                f"ours {us1['seconds']:.2f}s cpu {us1['cpu']:.2f}s "
                f"(daemon cpu {bc1['daemon_cpu']:.1f}s / {us1['daemon_cpu']:.1f}s; "
                f"window waits {flow['window_waits']} = {flow['window_wait_seconds']:.2f}s, "
                f"{us1['messages_out']} msgs out, {us1['messages_in']} in, listing paused "
                f"{us1['listing_pauses']}x, {us1['listing_timeouts']} timeouts){incremental}"
            )
        mib = total / (1 << 20)
        for label, bc, us in (("first upload", "bc1", "us1"), ("incremental", "bcI", "usI")):
            n = len(rows[bc])
            b_s, u_s = _median(rows[bc], "seconds"), _median(rows[us], "seconds")
            b_c, u_c = _median(rows[bc], "cpu"), _median(rows[us], "cpu")
            b_r = max(r["maxrss_mb"] for r in rows[bc])
            u_r = max(r["maxrss_mb"] for r in rows[us])
            print(
                f"{label} (median of {n}): buildctl {b_s:.2f}s ({mib / b_s:.0f} MiB/s), "
                f"ours {u_s:.2f}s ({mib / u_s:.0f} MiB/s) -> ours/buildctl throughput "
                f"{b_s / u_s:.2f}x; client CPU buildctl {b_c:.2f}s ours {u_c:.2f}s "
                f"({u_c / b_c:.2f}x); peak RSS buildctl {b_r:.0f} MiB ours {u_r:.0f} MiB"
            )
        if not args.no_tracemalloc:
            prune(buildctl, addr)
            traced = run_ours(addr, tree, "bench-ours", pid, trace="tracemalloc")
            print(
                f"untimed traced first upload: tracemalloc peak "
                f"{traced['tracemalloc_peak_mb']:.1f} MiB, peak RSS {traced['maxrss_mb']:.0f} MiB"
            )
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
