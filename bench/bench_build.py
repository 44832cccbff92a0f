"""``envd build`` of the example environment vs ``buildctl build`` of its LLB vs upstream envd.

Not a test. Needs ``scripts/infra up`` (buildkitd/buildctl binaries, the registry, the CA
bundle; upstream envd v1.3.4 when it could be built)::

    .venv/bin/python bench/bench_build.py [--example examples/python-basic] [--cold 2]
        [--cached 5] [--skip-upstream] [--eval-cache on|off|both]

Everything runs on one private buildkitd this script starts (unix socket + a 127.0.0.1 TCP
port, its own root under the infra scratch dir) and stops at the end, so the shared daemons'
caches neither help nor suffer.

- cold: ``buildctl prune --all`` right before each run (cache mounts included: apt and pip
  download again), so every step runs; the base image layers are pulled again as well.
- cached: the same build repeated with nothing changed (one warm-up first).

Contenders, each a fresh process per build with an image pushed to the local registry:
- ``envd``: ``envd build --output type=image,name=…,push=true --ca-bundle …`` (tcp context);
- ``buildctl``: the definition from ``envd build --dump-llb`` built by ``buildctl build`` with the
  same local dir and CA secret. It gets no image config, so it measures the solve alone;
- ``upstream``: upstream envd v1.3.4 on the same daemon, building the same environment with the
  changes it needs here: base ``python-hostca`` (it cannot mount a CA into steps), ``load``
  inlined, no ``install.python()`` (upstream fetches micromamba from ghcr.io for it; the base
  image's Python serves instead). Skipped with the reason when not installed or when it fails.
- ``envd-nodc`` (``--eval-cache both``): ``envd`` with its definition cache off
  (``ENVD_EVAL_CACHE=0``), in the same rounds, to show what the cache saves under the same load.
- ``envd-direct``: ``envd`` with its resident process off (``ENVD_RESIDENT=0``: a process that
  imports everything per build), in the same rounds; ``envd`` itself runs as users get it, with
  the resident on (a server of the bench's own, warmed before timing: bench/_resident.py).
  ``--resident off`` drops the resident run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _resident

ROOT = Path(__file__).resolve().parent.parent
ENVD = str(Path(sys.executable).with_name("envd"))


def infra_env() -> dict[str, str]:
    """``scripts/infra env --json`` (endpoints and binary paths)."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "infra"), "env", "--json"],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_buildkitd(infra: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Start a buildkitd of our own; yields (unix address, tcp address); stops it after."""
    scratch = Path(infra["INFRA_DIR"]) / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-", dir=scratch))
    sock, port = root / "bk.sock", free_port()
    (root / "buildkitd.toml").write_text(
        f'[registry."{infra["REGISTRY"]}"]\n  http = true\n  insecure = true\n')
    argv = [infra["BUILDKITD"], "--root", str(root / "state"), "--addr", f"unix://{sock}",
            "--addr", f"tcp://127.0.0.1:{port}", "--config", str(root / "buildkitd.toml"),
            "--otel-socket-path", str(root / "otel.sock"), "--oci-worker=true",
            "--containerd-worker=false", "--oci-worker-net=host"]
    with (root / "buildkitd.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while subprocess.run([infra["BUILDCTL"], "--addr", f"unix://{sock}", "debug",
                                  "workers"], capture_output=True, check=False).returncode:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("buildkitd did not start: "
                                     + (root / "buildkitd.log").read_text()[-600:])
                time.sleep(0.2)
            yield f"unix://{sock}", f"127.0.0.1:{port}"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
            for target in sorted((m for m in mounts if m.startswith(f"{root}/")), key=len,
                                 reverse=True):
                subprocess.run(["umount", "-l", target], capture_output=True, check=False)
            shutil.rmtree(root, ignore_errors=True)


def timed(argv: list[str], *, cwd: Path, env: dict[str, str], stdin_path: Path | None = None,
          ) -> float:
    """Wall time of one process; raises with its stderr tail when it fails."""
    stdin = stdin_path.open("rb") if stdin_path else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=env, stdin=stdin, capture_output=True,
                              check=False, timeout=1800)
        elapsed = time.perf_counter() - t0
    finally:
        if stdin_path:
            stdin.close()  # type: ignore[union-attr]
    if proc.returncode:
        raise RuntimeError(f"`{' '.join(argv[:3])} …` exited {proc.returncode}: "
                           + proc.stderr.decode(errors="replace").strip()[-600:])
    return elapsed


def upstream_copy(example: Path, dest: Path, hostca_image: str) -> Path:
    """The example rewritten for upstream envd: CA-carrying base image, ``load`` inlined,
    no ``install.python()``."""
    shutil.copytree(example, dest)
    text = (dest / "build.envd").read_text()
    for match in re.finditer(r'load\("//([^"]+)",[^)]*\)\n', text):
        text = text.replace(match.group(0), (dest / match.group(1)).read_text())
    text = re.sub(r'base\(image="[^"]+"', f'base(image="{hostca_image}"', text)
    # Upstream's install.python() pulls micromamba from ghcr.io (unreachable here); the base
    # image already has Python, which upstream then uses for pip as it is.
    text = re.sub(r"\n\s*install\.python\(\)", "", text)
    (dest / "build.envd").write_text(text)
    return dest


def measure(contenders: dict[str, Callable[[], float]], prune: Callable[[], None], cold: int,
            cached: int) -> dict[str, dict[str, list[float]]]:
    """Cold rounds (prune before each run), then a warm-up and ``cached`` rounds.

    Contenders alternate inside every round, so load from anything else on the machine hits
    them alike instead of whichever happened to run first.
    """
    result = {name: {"cold": [], "cached": []} for name in contenders}
    for i in range(cold):
        for name, run in contenders.items():
            prune()
            result[name]["cold"].append(run())
            print(f"  cold #{i + 1} {name:9} {result[name]['cold'][-1]:7.2f} s", flush=True)
    for run in contenders.values():
        run()
    for _ in range(cached):
        for name, run in contenders.items():
            result[name]["cached"].append(run())
    for name in contenders:
        print(f"  cached {name:9} " + " ".join(f"{t:.2f}" for t in result[name]["cached"]),
              flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default=str(ROOT / "examples" / "python-basic"))
    parser.add_argument("--cold", type=int, default=2)
    parser.add_argument("--cached", type=int, default=5)
    parser.add_argument("--skip-upstream", action="store_true")
    parser.add_argument("--eval-cache", choices=["on", "off", "both"], default="on",
                        help="envd's definition cache (ENVD_EVAL_CACHE; default on, as users "
                             "get it; both: also time `envd-nodc`, envd with it off, in the "
                             "same rounds)")
    parser.add_argument("--resident", choices=["on", "off"], default="on",
                        help="on (default): time envd with its resident process (as users get "
                             "it) and envd-direct (ENVD_RESIDENT=0) side by side; off: only "
                             "envd, direct")
    args = parser.parse_args()
    infra = infra_env()
    registry, buildctl, ca = infra["REGISTRY"], infra["BUILDCTL"], infra["CA_BUNDLE"]
    work = Path(tempfile.mkdtemp(prefix="envd-bench-build-"))
    example = Path(shutil.copytree(args.example, work / Path(args.example).name))
    # PYTHONDONTWRITEBYTECODE (set in some CI and agent shells) would make every envd run
    # compile its modules from source, a cost no installed envd pays
    env = {k: v for k, v in os.environ.items()
           if k not in ("BUILDKIT_PROGRESS", "ENVD_CONTEXT", "PYTHONDONTWRITEBYTECODE")}
    env.update(ENVD_CONFIG_DIR=str(work / "config"), DOCKER_HOST=infra["DOCKER_HOST"],
               ENVD_CACHE_DIR=str(work / "cache"),  # definition cache and plugin index
               ENVD_EVAL_CACHE="0" if args.eval_cache == "off" else "1")
    direct = _resident.direct_env(env)
    env = _resident.resident_env(env) if args.resident == "on" else direct
    skipped: dict[str, str] = {}
    with private_buildkitd(infra) as (unix_addr, tcp_addr):
        print(f"private buildkitd: {unix_addr} and tcp://{tcp_addr}; example {args.example}")
        subprocess.run([ENVD, "context", "create", "--name", "bench", "--builder", "tcp",
                        "--builder-address", tcp_addr, "--use"], env=env, check=True,
                       capture_output=True)
        if args.resident == "on":
            print(f"resident server pid {_resident.warm(env)} (warmed, not timed)")

        def prune() -> None:
            subprocess.run([buildctl, "--addr", unix_addr, "prune", "--all"], check=True,
                           capture_output=True)

        timings_file = work / "timings.json"
        breakdowns: list[dict[str, float]] = []

        def envd_build() -> float:
            spawned = time.time()
            elapsed = timed([ENVD, "build", "--progress", "plain", "--ca-bundle", ca, "--output",
                             f"type=image,name={registry}/bench/envd:latest,push=true"],
                            cwd=example, env={**env, "ENVD_TIMINGS": str(timings_file)})
            if timings_file.exists():  # an envd without ENVD_TIMINGS support writes none
                breakdowns.append(breakdown(timings_file, spawned, elapsed))
                timings_file.unlink()
            return elapsed

        llb_file = work / "example.llb"
        subprocess.run([ENVD, "build", "--ca-bundle", ca, "--dump-llb", str(llb_file)],
                       cwd=example, env=env, check=True, capture_output=True)

        def buildctl_build() -> float:
            return timed([buildctl, "--addr", f"tcp://{tcp_addr}", "build", "--progress",
                          "plain", "--local", f"build-context={example}", "--secret",
                          f"id=envd-ca-bundle,src={ca}", "--output",
                          f"type=image,name={registry}/bench/buildctl:latest,push=true"],
                         cwd=example, env=env, stdin_path=llb_file)

        contenders: dict[str, Callable[[], float]] = {"envd": envd_build,
                                                      "buildctl": buildctl_build}
        if args.resident == "on":
            def envd_direct() -> float:
                out = f"type=image,name={registry}/bench/envd:latest,push=true"
                return timed([ENVD, "build", "--progress", "plain", "--ca-bundle", ca,
                              "--output", out], cwd=example, env=direct)

            contenders["envd-direct"] = envd_direct  # resident off, same rounds
        if args.eval_cache == "both":
            def envd_uncached() -> float:
                out = f"type=image,name={registry}/bench/envd:latest,push=true"
                return timed([ENVD, "build", "--progress", "plain", "--ca-bundle", ca,
                              "--output", out], cwd=example, env={**env, "ENVD_EVAL_CACHE": "0"})

            contenders["envd-nodc"] = envd_uncached  # no definition cache, same round
        upstream = infra.get("UPSTREAM_ENVD", "")
        if args.skip_upstream:
            skipped["upstream"] = "--skip-upstream"
        elif not upstream:
            skipped["upstream"] = "UPSTREAM_ENVD is empty (scripts/infra could not build it)"
        else:
            try:
                contenders["upstream"] = upstream_build(infra, upstream, example, work, tcp_addr)
                prune()
                contenders["upstream"]()  # proves it can build here before it is timed
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                contenders.pop("upstream", None)
                skipped["upstream"] = f"failed here: {exc}"
        try:
            results = measure(contenders, prune, args.cold, args.cached)
        finally:
            if args.resident == "on":
                _resident.stop(env)
    report(results, skipped)
    # the last `cached` envd runs are the cached rebuilds (the warm-up and cold ones come first)
    report_breakdown(breakdowns[-args.cached:] if args.cached else [],
                     statistics.median(results["buildctl"]["cached"])
                     if results["buildctl"]["cached"] else None)
    cached = {name: statistics.median(res["cached"]) for name, res in results.items()
              if res["cached"]}
    if "buildctl" in cached:
        for name in ("envd", "envd-direct", "envd-nodc"):
            if name in cached:
                label = {"envd": "envd (resident on)" if args.resident == "on" else "envd",
                         "envd-direct": "envd (ENVD_RESIDENT=0)"}.get(name, name)
                print(f"cached rebuild wall medians: {label} / buildctl = "
                      f"{cached[name] / cached['buildctl']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


def upstream_build(infra: dict[str, str], upstream: str, example: Path, work: Path,
                   tcp_addr: str) -> Callable[[], float]:
    """Upstream envd v1.3.4 with a scratch HOME (docs/infra.md, "Upstream envd as a peer")."""
    home = work / "upstream-home"
    (home / ".config" / "containers").mkdir(parents=True)
    shutil.copy(infra["UPSTREAM_ENVD_REGISTRIES_CONF"],
                home / ".config" / "containers" / "registries.conf")
    env = {**os.environ, "HOME": str(home), "ENVD_ANALYTICS": "false"}
    proj = upstream_copy(example, work / "upstream-example", infra["IMAGE_PYTHON_HOSTCA"]
                         if "IMAGE_PYTHON_HOSTCA" in infra
                         else f"{infra['REGISTRY']}/python-hostca:3.11-bookworm")
    timed([upstream, "context", "create", "--name", "bench", "--builder", "tcp",
           "--builder-address", tcp_addr, "--use"], cwd=proj, env=env)

    def build() -> float:
        return timed([upstream, "build", "--output",
                      f"type=image,name={infra['REGISTRY']}/bench/upstream:latest,push=true"],
                     cwd=proj, env=env)

    return build


def breakdown(path: Path, spawned: float, elapsed: float) -> dict[str, float]:
    """One envd run's phases (``ENVD_TIMINGS``): what the process did before the build started
    (interpreter, imports, plugins, context) and after it ended (exit) are what is left of the
    wall time around the phases envd recorded."""
    doc = json.loads(path.read_text())
    phases: dict[str, float] = {"interpreter+imports+cli": doc["started_epoch"] - spawned}
    phases.update(doc["phases"])
    phases["exit"] = max(0.0, elapsed - sum(phases.values()))
    return phases


def report_breakdown(runs: list[dict[str, float]], buildctl_cached: float | None) -> None:
    """Median seconds of each phase of envd's cached rebuilds."""
    if not runs:
        return
    names = list(dict.fromkeys(name for run in runs for name in run))
    total = statistics.median(sum(run.values()) for run in runs)
    print(f"\nenvd cached rebuild, median per phase over {len(runs)} runs (s)")
    for name in names:
        print(f"  {name:26}{statistics.median(run.get(name, 0.0) for run in runs):8.3f}")
    print(f"  {'total':26}{total:8.3f}")
    if buildctl_cached:
        print(f"cached rebuild: envd / buildctl = {total / buildctl_cached:.2f}x")


def report(results: dict[str, dict[str, list[float]]], skipped: dict[str, str]) -> None:
    """Medians side by side, each as a ratio to ``envd``."""
    print("\nmedian wall time per build (s); ratio = contender / envd")
    print(f"{'':10}{'cold':>10}{'ratio':>8}{'cached':>10}{'ratio':>8}   runs (cold/cached)")
    base = {k: statistics.median(v) for k, v in results["envd"].items() if v}
    for name, res in results.items():
        med = {k: statistics.median(v) for k, v in res.items() if v}
        cells = []
        for kind in ("cold", "cached"):
            value = med.get(kind)
            ratio = value / base[kind] if value is not None and base.get(kind) else None
            cells += [f"{value:10.2f}" if value is not None else f"{'-':>10}",
                      f"{ratio:8.2f}" if ratio is not None else f"{'-':>8}"]
        print(f"{name:10}{''.join(cells)}   {len(res['cold'])}/{len(res['cached'])}")
    for name, why in skipped.items():
        print(f"{name:10}not available: {why}")


if __name__ == "__main__":
    main()
