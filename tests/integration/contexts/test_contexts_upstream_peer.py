"""Side by side with the real upstream envd (Go) in one HOME: its gob store is never touched,
and the surface scripts depend on (ls keys, headers, messages) matches.

Needs the upstream binary the infra installs (``upstream_envd`` fixture of the root conftest);
skipped without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PLUGIN = """
    from envd_core import hookimpl
    from envd_core.testing import StubBuilder, StubRunner

    @hookimpl
    def envd_builder_types():
        return [StubBuilder]

    @hookimpl
    def envd_runner_types():
        return [StubRunner]
"""


def test_side_by_side_with_upstream(upstream_envd, envd_script, entry_point_site, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    site = entry_point_site("stubs", PLUGIN)
    base = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ENVD_ANALYTICS": "false"}
    # ours: no ENVD_CONFIG_DIR, no XDG: the same ~/.config/envd upstream uses
    ours_env = {**base, "PYTHONPATH": os.pathsep.join([str(site), *sys.path]),
                "ENVD_PLUGINS": "stubs"}

    def upstream(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([upstream_envd, *args], env=base, capture_output=True, text=True,
                              timeout=60, check=False)

    def ours(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([envd_script, *args], env=ours_env, capture_output=True,
                              text=True, timeout=60, check=False)

    assert upstream("context", "create", "--name", "up", "--builder", "tcp",
                    "--builder-address", "127.0.0.1:1234").returncode == 0
    config = home / ".config" / "envd"
    gob = config / "contexts"
    gob_bytes, gob_stat = gob.read_bytes(), gob.stat()
    upstream_rows = json.loads(upstream("context", "ls", "--format", "json").stdout)

    created = ours("context", "create", "--name", "ours", "--builder", "envd-testing-builder",
                   "--builder-address", "x", "--runner", "envd-testing-runner", "--use")
    assert created.returncode == 0, created.stderr
    for args in (["context", "ls"], ["context", "use", "--name", "default"],
                 ["context", "rm", "--name", "ours"]):
        done = ours(*args)
        assert done.returncode == 0, done.stderr

    assert (config / "contexts.json").exists()
    assert gob.read_bytes() == gob_bytes
    assert gob.stat().st_mtime_ns == gob_stat.st_mtime_ns
    assert json.loads(upstream("context", "ls", "--format", "json").stdout) == upstream_rows

    # the same default context, the same JSON keys in the same order (ours adds `installed`
    # and `origin`, which says whether a context is the user's or a read-only team context)
    ours_rows = json.loads(ours("context", "ls", "--format", "json").stdout)
    upstream_default = next(r for r in upstream_rows if r["context"] == "default")
    ours_default = {k: v for k, v in ours_rows[0].items() if k not in ("installed", "origin")}
    assert list(ours_default.items()) == list(upstream_default.items())

    # the same table headers
    def header(stdout: str) -> list[str]:
        return stdout.splitlines()[0].split()

    assert header(ours("context", "ls").stdout) == header(upstream("context", "ls").stdout)

    # the same messages for the same mistakes
    duplicate = ["context", "create", "--name", "default", "--builder-address", "h:1"]
    for theirs_args, ours_args in (
        (
            [*duplicate, "--builder", "tcp"],
            [*duplicate, "--builder", "envd-testing-builder", "--runner", "envd-testing-runner"],
        ),
        (["context", "rm", "--name", "default"],) * 2,
    ):
        theirs, mine = upstream(*theirs_args), ours(*ours_args)
        assert theirs.returncode != 0 and mine.returncode != 0
        message = mine.stderr.splitlines()[0].removeprefix("envd: ")
        assert message.replace('"', '\\"') in theirs.stderr, (message, theirs.stderr)


def test_upstream_doubles_the_scheme_and_we_do_not(upstream_envd, tmp_path):
    """Why we normalise: upstream stores `tcp://h` as typed and prints `tcp://tcp://h`."""
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "ENVD_ANALYTICS": "false"}
    subprocess.run([upstream_envd, "context", "create", "--name", "u", "--builder", "tcp",
                    "--builder-address", "tcp://127.0.0.1:1234"], env=env, check=True,
                   capture_output=True, timeout=60)
    listed = subprocess.run([upstream_envd, "context", "ls", "--format", "json"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    rows = json.loads(listed.stdout)
    (row,) = [r for r in rows if r["context"] == "u"]
    assert row["builder_addr"] == "tcp://tcp://127.0.0.1:1234"
    assert Path(tmp_path / ".config" / "envd" / "contexts").exists()
