"""Import contexts written by the real upstream envd v1.3.4 (Go) with ours, side by side in one
HOME, with the real in-repo plugins (envd-tcp, envd-moby, envd-docker-runner) installed.

Needs the upstream binary the infra builds (``upstream_envd`` fixture of the root conftest);
skipped without it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

UPSTREAM_KEYS = ("context", "builder", "builder_addr", "runner", "runner_addr", "current")
HINT = "envd: found upstream envd's contexts in"

#: (name, builder, builder address, runner, runner address): every builder type upstream
#: accepts and both runner types.
CONTEXTS = [
    ("tcp-ctx", "tcp", "127.0.0.1:1234", "docker", None),
    ("unix-ctx", "unix", "/var/lib/envd-infra/run/buildkitd.sock", "docker", None),
    ("dc-ctx", "docker-container", "envd_buildkitd", "docker", None),
    ("kube-ctx", "kube-pod", "buildkitd-0?namespace=ci&context=prod&container=buildkitd",
     "docker", None),
    ("moby-ctx", "moby-worker", "envd_buildkitd", "docker", "unix:///var/run/docker.sock"),
    ("server-ctx", "tcp", "10.0.0.5:8888", "envd-server", "http://envd-server.corp:8080"),
]


class SideBySide:
    """Upstream's binary and ours in one isolated HOME (ours with no ENVD_* overrides, so both
    use ``~/.config/envd``)."""

    def __init__(self, upstream: str, ours: str, home: Path) -> None:
        self.upstream_bin, self.ours_bin, self.home = upstream, ours, home
        self.env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "ENVD_ANALYTICS": "false"}
        self.config = home / ".config" / "envd"

    def upstream(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.upstream_bin, *args], env=self.env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done

    def ours(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.ours_bin, *args], env=self.env, capture_output=True,
                              text=True, timeout=60, check=False)

    def ours_ls(self) -> list[dict[str, Any]]:
        done = self.ours("context", "ls", "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def both(upstream_envd: str, envd_script: str, tmp_path: Path) -> SideBySide:
    home = tmp_path / "home"
    home.mkdir()
    pair = SideBySide(upstream_envd, envd_script, home)
    for name, builder, address, runner, runner_address in CONTEXTS:
        args = ["context", "create", "--name", name, "--builder", builder,
                "--builder-address", address, "--runner", runner]
        if runner_address:
            args += ["--runner-address", runner_address]
        pair.upstream(*args)
    pair.upstream("context", "use", "--name", "kube-ctx")
    return pair


def test_import_from_the_real_upstream(both):
    gob = both.config / "contexts"
    gob_bytes, gob_mtime = gob.read_bytes(), gob.stat().st_mtime_ns
    upstream_rows = json.loads(both.upstream("context", "ls", "--format", "json").stdout)
    assert len(upstream_rows) == 1 + len(CONTEXTS)

    # first run: one hint line, once
    first = both.ours("context", "ls")
    assert first.returncode == 0, first.stderr
    assert [line for line in first.stderr.splitlines() if line.startswith(HINT)] != []
    assert HINT not in both.ours("context", "ls").stderr

    store = both.config / "contexts.json"
    before = store.read_bytes()
    dry = both.ours("context", "import", "--from-upstream", "--dry-run", "--use")
    assert dry.returncode == 0, dry.stderr
    assert "Would import 6 context(s)" in dry.stderr
    assert store.read_bytes() == before

    done = both.ours("context", "import", "--from-upstream", "--use")
    assert done.returncode == 0, done.stderr
    assert "Imported 6 context(s)" in done.stderr and 'Current context is "kube-ctx"' in done.stderr
    ours = both.ours_ls()
    assert [{k: r[k] for k in UPSTREAM_KEYS if k in r} for r in ours] == upstream_rows
    # every builder and runner type upstream writes has its plugin now (kube-pod was the last)
    assert {r["context"]: r["installed"] for r in ours} == {
        r["context"]: True for r in ours}

    # again: nothing doubles, nothing is written
    after = store.read_bytes()
    again = both.ours("context", "import", "--from-upstream", "--use", "--format", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"] == {"imported": 0, "unchanged": 7, "skipped": 0}
    assert store.read_bytes() == after
    assert both.ours_ls() == ours

    # upstream's file was only read, and upstream still sees what it had
    assert (gob.read_bytes(), gob.stat().st_mtime_ns) == (gob_bytes, gob_mtime)
    assert json.loads(both.upstream("context", "ls", "--format", "json").stdout) == upstream_rows


@pytest.mark.parametrize("damage", ["truncated", "empty", "corrupt"])
def test_damaged_real_file_is_one_line_and_changes_nothing(both, damage):
    gob = both.config / "contexts"
    real = gob.read_bytes()
    damaged = {"truncated": real[: len(real) // 2], "empty": b"",
               "corrupt": real[:40] + bytes(8) + real[48:]}[damage]
    gob.write_bytes(damaged)
    assert both.ours("context", "create", "--name", "mine", "--builder", "tcp",
                     "--builder-address", "127.0.0.1:1234").returncode == 0
    store = both.config / "contexts.json"
    before = store.read_bytes()
    done = both.ours("context", "import", "--from-upstream", "--use")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("envd: upstream envd's context file `")
    assert "is not a context store upstream envd writes" in lines[0]
    assert lines[1] == "hint: nothing was imported and both stores are unchanged"
    assert "Traceback" not in done.stderr
    assert store.read_bytes() == before
    assert gob.read_bytes() == damaged
