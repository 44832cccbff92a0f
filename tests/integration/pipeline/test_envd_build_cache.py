"""Caching through ``envd build``: a rebuild with nothing changed is fully CACHED, a one-line
change rebuilds only the steps after it, and registry cache export/import carries the cache to
a fresh buildkitd.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_envd_build_support import (
    Envd,
    build_steps,
    marker,
    remove_images,
    write_environment,
)

RUN_STEP = "run: "


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str) -> Envd:
    """The CLI with a private config directory (default context: moby-worker)."""
    return Envd(tmp_path / "config", docker_host, ca_bundle)


def _use(envd: Envd, kind: str, address: str) -> None:
    envd.run("context", "create", "--name", f"{kind}-cache", "--builder", kind,
             "--builder-address", address, "--use")


def _uncached(stderr: str) -> list[str]:
    return [v.name for v in build_steps(stderr) if not v.cached]


@pytest.mark.parametrize("where", ["tcp", "moby-worker"])
def test_rebuild_is_cached_and_one_line_change_rebuilds_only_dependents(
    envd: Envd, tmp_path: Path, registry: str, docker_host: str, buildkit_tcp: str, where: str,
) -> None:
    """Build, rebuild unchanged (all CACHED), change the last line (only that step runs)."""
    mark = marker()
    context = tmp_path / f"e2e-cache-{mark}"
    output: tuple[str, ...] = ()
    if where == "tcp":
        _use(envd, "tcp", buildkit_tcp)
        output = ("--output", f"type=image,name={registry}/e2e-cache-{mark}/x:1,push=false")
    try:
        write_environment(context, mark=mark, registry=registry,
                          run_line=f'run(commands=["echo one-{mark} > /opt/e2e/run.txt"])')
        first = envd.build(context, *output)
        steps = build_steps(first.stderr)
        names = [v.name for v in steps]
        assert any(n.startswith("apt-get install") for n in names), names
        assert any(n.startswith("pip install") for n in names), names
        assert any(n.startswith(RUN_STEP) and f"one-{mark}" in n for n in names), names
        # The unique run step cannot have been cached by anything before this test.
        assert any(n.startswith(RUN_STEP) for n in _uncached(first.stderr)), first.stderr[-3000:]

        second = envd.build(context, *output)
        assert build_steps(second.stderr), second.stderr[-3000:]
        assert _uncached(second.stderr) == [], second.stderr[-3000:]
        plain = envd.build(context, *output, progress="plain")
        step_lines = [line for line in plain.stderr.splitlines() if line.endswith(" CACHED")]
        assert len(step_lines) >= len(build_steps(second.stderr)), plain.stderr[-3000:]

        write_environment(context, mark=mark, registry=registry,
                          run_line=f'run(commands=["echo two-{mark} > /opt/e2e/run.txt"])')
        third = envd.build(context, *output)
        rebuilt = _uncached(third.stderr)
        assert len(rebuilt) == 1 and rebuilt[0].startswith(RUN_STEP), third.stderr[-3000:]
        assert f"two-{mark}" in rebuilt[0]
        cached = [v.name for v in build_steps(third.stderr) if v.cached]
        assert any(n.startswith("apt-get install") for n in cached), cached
        assert any(n.startswith("pip install") for n in cached), cached
        assert any(n.startswith("copy ") for n in cached), cached
    finally:
        if where == "moby-worker":
            remove_images(docker_host, f"e2e-cache-{mark}:dev")


def test_registry_cache_export_then_import_on_fresh_buildkitd(
    envd: Envd, tmp_path: Path, registry: str, buildctl: str, disposable_buildkitd: object,
) -> None:
    """``--export-cache type=registry``, wipe the daemon, ``--import-cache`` restores the cache.

    Export and import both happen on the disposable buildkitd: ``buildctl prune --all`` in
    between leaves it as cold as a new one. (The shared daemons would also do, but a long-lived
    daemon may hold an older resolution of a re-pushed base tag, whose cache a fresh daemon
    could never match.)
    """
    address = disposable_buildkitd.address  # type: ignore[attr-defined]
    mark = marker()
    context = write_environment(tmp_path / "env", mark=mark, registry=registry)
    cache_ref = f"{registry}/cache/e2e-{mark}:1"
    output = ("--output", f"type=image,name={registry}/e2e-{mark}/cached:1,push=false")
    _use(envd, "unix", address)

    exported = envd.build(context, *output, "--export-cache", f"type=registry,ref={cache_ref}")
    assert _uncached(exported.stderr), "a fresh daemon cannot have this build cached"
    pruned = subprocess.run([buildctl, "--addr", address, "prune", "--all"], check=False,
                            capture_output=True, text=True, timeout=120)
    assert pruned.returncode == 0, pruned.stderr

    cold = envd.build(context, *output, "--import-cache", f"type=registry,ref={cache_ref}")
    steps = build_steps(cold.stderr)
    names = [v.name for v in steps]
    assert any(n.startswith("pip install") for n in names), names
    # The copy of this test's unique file can only come from the imported cache.
    assert any(v.cached and v.name.startswith("copy /data/marker.txt") for v in steps), names
    assert _uncached(cold.stderr) == [], cold.stderr[-3000:]
