"""After a command that loaded grpc, the console script ends with exit_now: atexit handlers,
non-daemon threads and buffered output are kept, only the interpreter teardown is skipped."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROBE = """
    import atexit, sys, threading, time
    import grpc  # what a build loads; main() then ends through exit_now
    from envd_core.cli.app import main

    out = sys.argv[1]
    atexit.register(lambda: open(out, "a").write("atexit\\n"))

    def late():
        time.sleep(0.3)
        open(out, "a").write("thread\\n")

    threading.Thread(target=late).start()  # non-daemon: joined before the end
    sys.stdout.write("buffered, not flushed")
    main(sys.argv[2:])
"""


def test_exit_now_keeps_what_a_normal_exit_does(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE))
    marks = tmp_path / "marks"
    env = {"ENVD_CONFIG_DIR": str(tmp_path / "cfg"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
           "ENVD_RESIDENT": "0"}  # exit_now of this very process is what is checked
    done = subprocess.run([sys.executable, str(script), str(marks), "context", "use", "nope"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr  # the command's own exit code
    assert 'context "nope" does not exist' in done.stderr
    assert done.stdout.startswith("buffered, not flushed")
    assert marks.read_text().splitlines() == ["thread", "atexit"]


def test_debug_reaches_plugins_for_the_run_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--debug`` sets ENVD_DEBUG while the command runs (plugins see no App), then not."""
    import os

    import click

    from envd_core.cli.app import run

    seen: list[str | None] = []

    @click.group()
    @click.option("--debug", is_flag=True)
    def cli(debug: bool) -> None:
        pass

    @cli.command()
    def probe() -> None:
        seen.append(os.environ.get("ENVD_DEBUG"))

    monkeypatch.delenv("ENVD_DEBUG", raising=False)
    assert run(cli, ["--debug", "probe"]) == 0
    assert run(cli, ["probe"]) == 0
    assert seen == ["1", None]
    assert "ENVD_DEBUG" not in os.environ
