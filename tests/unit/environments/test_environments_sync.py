"""``envd_core.environments.sync``: the tar-over-ssh copy, with ``ssh`` replaced by a local shell.

The stand-in ``ssh`` drops its options and host and runs the remote command with ``sh -c`` on
this machine, so the real ``tar`` on both ends, the pipes and the error paths are exercised.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from envd_core.environments.sync import push_project, snapshot, watch_project
from envd_core.errors import RunnerError

FAKE_SSH = """#!/bin/sh
# envd's sync calls: ssh [-F cfg] -o BatchMode=yes HOST COMMAND
while [ "$#" -gt 2 ]; do shift; done
[ "$1" = "broken.envd" ] && { echo "ssh: connect to host: Connection refused" >&2; exit 255; }
exec sh -c "$2"
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def _project(root: Path) -> Path:
    project = root / "proj"
    (project / "sub").mkdir(parents=True)
    (project / ".git").mkdir()
    (project / "a.txt").write_text("a1")
    (project / "sub" / "b.txt").write_text("b1")
    (project / ".git" / "HEAD").write_text("ref")
    return project


def test_push_then_watch_sends_changes(tmp_path: Path, fake_ssh: None) -> None:
    project = _project(tmp_path)
    remote = tmp_path / "remote" / "proj"
    state = push_project(project, host="env.envd", remote_dir=str(remote))
    assert sorted(state) == ["a.txt", "sub/b.txt"]  # .git is not sent
    assert (remote / "a.txt").read_text() == "a1" and (remote / "sub/b.txt").read_text() == "b1"
    assert not (remote / ".git").exists()
    (project / "a.txt").write_text("a2")
    os.utime(project / "a.txt", (1, 1))  # a changed mtime, whatever the clock's resolution
    (project / "c.txt").write_text("c1")
    (remote / "sub" / "b.txt").write_text("made remotely")
    sent: list[int] = []
    watch_project(project, state, host="env.envd", remote_dir=str(remote), interval=0,
                  report=sent.append, rounds=1)
    assert sent == [2]  # a.txt and c.txt; b.txt did not change locally, so it is left alone
    assert (remote / "a.txt").read_text() == "a2" and (remote / "c.txt").read_text() == "c1"
    assert (remote / "sub" / "b.txt").read_text() == "made remotely"
    assert set(snapshot(project)) == {"a.txt", "c.txt", "sub/b.txt"}


def test_an_unreachable_environment_is_one_line(tmp_path: Path, fake_ssh: None) -> None:
    project = _project(tmp_path)
    with pytest.raises(RunnerError) as info:
        push_project(project, host="broken.envd", remote_dir="/x")
    assert str(info.value.message).endswith(
        "ssh exited 255: ssh: connect to host: Connection refused")
    assert "`broken.envd:/x`" in info.value.message
