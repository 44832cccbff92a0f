"""``envd up --detach`` of an already-built dev environment until SSH answers, vs the floor.

Not a test. Needs ``scripts/infra up`` (dockerd, the registry's python base, the envd-sshd
image)::

    .venv/bin/python bench/bench_up.py [--runs 5] [--json]

One dev project (``base(image=<registry>/python:3.11-bookworm, dev=True)`` plus an env var) is
built once with ``envd up --detach`` and removed again. Then, interleaved, each run times:

- ``envd up``: a fresh ``envd up --detach`` process (the build is cached: the build file is
  evaluated and solved again, nothing runs), from its start until the environment's SSH server
  greets on its published port (``up`` itself waits for that);
- ``envd run``: ``envd run --detach`` of the built image (no build), same end point;
- ``floor``: ``docker run -d -p 127.0.0.1::2222`` of the same image with the same mount and, as
  envd now gives every environment, a host key for its SSH server (a read-only bind mount named
  by ``ENVD_HOST_KEY``), then the same wait for the SSH greeting. This is what any tool must
  pay at least; the ratios are against it.
- ``floor keygen``: the same without the host key, so envd-sshd generates one as it starts (the
  floor of the earlier measurements, kept for comparison).

Between runs the environment is removed (not timed). HOME and ``ENVD_CONFIG_DIR`` are temp
dirs: the user's ``~/.ssh/config`` is never touched.

Besides the wall times it prints, per command, the CPU time of the envd process (user+sys from
``os.wait4``, which load distorts far less than wall time), the number of Docker Engine API
requests it made and the median of each phase ``ENVD_TIMINGS`` records (interpreter and imports
before the command starts, the build's phases, image lookup, create and start, SSH wait, SSH
entry, exit), so the table says where the time over the floor goes.

``envd up``/``envd run`` run as users get them, with the resident process on (a server of the
bench's own, warmed first: bench/_resident.py; their CPU adds the server's forked child);
``envd up direct``/``envd run direct`` are the same with ``ENVD_RESIDENT=0``, interleaved.
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
    """``scripts/infra env --json`` (endpoints and image names)."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "infra"), "env", "--json"],
                         capture_output=True, text=True, check=True).stdout
    return {k: str(v) for k, v in json.loads(out).items()}


def greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.settimeout(1)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_ssh(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not greets(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: no SSH greeting on 127.0.0.1:{port}")
        time.sleep(0.02)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    infra = infra_env()
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="envd-bench-up-"))
    home = work / "home"
    (home / ".ssh").mkdir(parents=True)
    name = f"envd-bench-up-{uuid.uuid4().hex[:6]}"
    project = work / name
    project.mkdir()
    (project / "build.envd").write_text(
        "# syntax=v1\ndef build():\n"
        f'    base(image="{infra["REGISTRY"]}/python:3.11-bookworm", dev=True)\n'
        '    runtime.environ(env={"BENCH": "1"})\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVD_")}
    env.update(HOME=str(home), ENVD_CONFIG_DIR=str(home / "envd-config"),
               ENVD_SSHD_IMAGE=infra["SSHD_IMAGE"], DOCKER_HOST=infra["DOCKER_HOST"])
    # "envd up"/"envd run" as users get them (resident on, warmed); "… direct": ENVD_RESIDENT=0
    direct = _resident.direct_env(env)
    env = _resident.resident_env(env)
    modes = {"": env, " direct": direct}

    def envd(*argv: str) -> None:
        subprocess.run([ENVD, *argv], cwd=project, env=env, check=True,
                       capture_output=True, text=True)

    timings_file = work / "timings.json"
    keys = [f"envd {c}{m}" for m in modes for c in ("up", "run")]
    phases: dict[str, list[dict[str, float]]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    requests: dict[str, list[int]] = {k: [] for k in keys}

    def timed_envd(key: str, *argv: str) -> None:
        """Run envd with ENVD_TIMINGS; keep its phases, CPU time and Docker request count."""
        timings_file.unlink(missing_ok=True)
        run_env = modes[key.removeprefix("envd up").removeprefix("envd run")]
        spawned = time.time()
        proc = subprocess.Popen([ENVD, *argv], cwd=project,
                                env={**run_env, "ENVD_TIMINGS": str(timings_file)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        ended = time.time()
        if proc.returncode != 0:
            raise SystemExit(f"bench: envd {' '.join(argv)} failed: {err.decode()[-2000:]}")
        cpu[key].append(usage.ru_utime + usage.ru_stime)  # + the server's child: see timed()
        if timings_file.exists():  # an envd without ENVD_TIMINGS support writes none
            doc = json.loads(timings_file.read_text())
            row = {"interpreter+imports+cli": doc["started_epoch"] - spawned,
                   **doc["phases"], "exit": ended - doc["ended_epoch"]}
            phases[key].append(row)
            requests[key].append(int(doc.get("counts", {}).get("docker requests", 0)))

    def timed(key: str, *argv: str) -> None:
        """One timed command until its SSH greets. The server's child CPU is read from
        ``envd resident status`` before and after, outside the timed span: that is two more
        ``envd`` processes, which timed would have charged to the resident (~0.3 s)."""
        served = _resident.children_cpu(env) if not key.endswith(" direct") else None
        t = time.monotonic()
        timed_envd(key, *argv)
        wait_ssh(ssh_port())
        times[key].append(time.monotonic() - t)
        if served is not None:  # the command ran in the server's child: count its CPU too
            cpu[key][-1] += _resident.children_cpu(env) - served

    def ssh_port() -> int:
        return int(docker("port", name, "2222/tcp").rsplit(":", 1)[1])

    image = f"{name}:dev"
    times: dict[str, list[float]] = {**{k: [] for k in keys}, "floor": [], "floor keygen": []}
    host_key = work / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                   check=True, capture_output=True)
    try:
        envd("up", "--detach", "--progress", "plain")  # the one real build
        envd("down", "--name", name)
        _resident.warm(env)
        for _ in range(args.runs):
            for mode in modes:
                timed(f"envd up{mode}", "up", "--detach", "--progress", "plain")
                envd("down", "--name", name)
                timed(f"envd run{mode}", "run", "--image", image, "--detach")
                envd("down", "--name", name)

            for key, extra in (("floor", ["-v", f"{host_key}:/var/envd/hostkey:ro",
                                          "-e", "ENVD_HOST_KEY=/var/envd/hostkey"]),
                               ("floor keygen", [])):
                t = time.monotonic()
                docker("run", "-d", "--name", name, "-p", "127.0.0.1::2222",
                       "-v", f"{project}:/home/envd/{name}", *extra, image)
                wait_ssh(ssh_port())
                times[key].append(time.monotonic() - t)
                docker("rm", "-f", name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
        _resident.stop(env)
    med = {k: statistics.median(v) for k, v in times.items()}
    breakdown = {k: {p: statistics.median(r.get(p, 0.0) for r in rows)
                     for p in dict.fromkeys(p for r in rows for p in r)}
                 for k, rows in phases.items() if rows}
    result = {"runs": args.runs, "load": (load_start + os.getloadavg()[0]) / 2, "median_s": med,
              "min_s": {k: min(v) for k, v in times.items()},
              "cpu_median_s": {k: statistics.median(v) for k, v in cpu.items()},
              "docker_requests": {k: max(v) for k, v in requests.items() if v},
              "phases_median_s": breakdown,
              "ratio_up": med["envd up"] / med["floor"],
              "ratio_run": med["envd run"] / med["floor"],
              "ratio_up_direct": med["envd up direct"] / med["floor"],
              "ratio_run_direct": med["envd run direct"] / med["floor"]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'':16} {'median':>8} {'min':>8} {'cpu':>8} {'requests':>8}   "
              f"({args.runs} runs, interleaved, load {result['load']:.1f})")
        for k in times:
            c = result["cpu_median_s"].get(k)  # type: ignore[attr-defined]
            n = result["docker_requests"].get(k)  # type: ignore[attr-defined]
            print(f"{k:16} {med[k]:8.3f} {result['min_s'][k]:8.3f} "  # type: ignore[index]
                  f"{'' if c is None else f'{c:8.3f}':>8} {'' if n is None else n:>8}")
        for k, rows in breakdown.items():
            print(f"\n{k} phases (median s):")
            for phase, seconds in rows.items():
                print(f"  {phase:32} {seconds:7.3f}")
        print(f"\nenvd up / floor: {result['ratio_up']:.2f}x; "
              f"envd run / floor: {result['ratio_run']:.2f}x "
              f"(against floor keygen: {med['envd up'] / med['floor keygen']:.2f}x, "
              f"{med['envd run'] / med['floor keygen']:.2f}x); resident on")
        print(f"envd up direct / floor: {result['ratio_up_direct']:.2f}x; "
              f"envd run direct / floor: {result['ratio_run_direct']:.2f}x (ENVD_RESIDENT=0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
