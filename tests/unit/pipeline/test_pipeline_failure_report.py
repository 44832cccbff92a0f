"""How a failed build reaches the user: the client's facts, the CLI's two lines, the JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from envd_core.buildkit.client import _exit_status, _stage
from envd_core.cli import run
from envd_core.errors import BuildError


@pytest.mark.parametrize(("text", "step", "status", "stage"), [
    ('process "/bin/sh -ec pip install six" did not complete successfully: exit code: 1',
     "pip install six", 1, "step"),
    ("executor failed running [/bin/sh -ec pip install six]: exit code: 2", "x", 2, "step"),
    (("failed to load cache key: unexpected status from HEAD request to "
      "https://r/v2/a/manifests/1: 401 Unauthorized"), "docker-image://r/a:1", None, "pull"),
    ("failed to push r/a:1: unexpected status: 401 Unauthorized", "pushing layers", None, "push"),
    ("failed to export image: write: no space left on device", "exporting to image", None,
     "export"),
    ("no active session for abc: context deadline exceeded", None, None, "session"),
    ("failed to solve: something odd", None, None, "solve"),
])
def test_client_sorts_the_daemons_text(text: str, step: str | None, status: int | None,
                                       stage: str) -> None:
    assert _exit_status(text) == status
    assert _stage(text, step, status) == stage


def _cli_failing_with(exc: BuildError) -> click.Group:
    @click.group()
    def cli() -> None: ...

    @cli.command()
    def go() -> None:
        raise exc

    return cli


def test_cli_prints_one_envd_and_one_hint_line_without_escapes(capsys: Any) -> None:
    exc = BuildError("step `pip install six` failed with exit code 1", hint="first\nsecond",
                     stage="step", step="pip install six", exit_status=1,
                     log_tail=("a", "b"))
    assert run(_cli_failing_with(exc), ["go"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["envd: step `pip install six` failed with exit code 1",
                     "hint: first; second"]


def test_build_format_json_reports_the_failure_on_stdout(monkeypatch: Any, capsys: Any,
                                                         tmp_path: Path) -> None:
    """`envd build --format json` prints {"error": …} with every fact, then the two lines."""
    import envd_core.pipeline.execute as execute
    from envd_core.cli import create_cli
    from envd_core.plugins import Plugins

    failure = BuildError("step `x` failed with exit code 7: the builder ran out of disk space",
                         hint="free the builder's cache with `envd prune`", stage="step",
                         step="x", exit_status=7, log_tail=("l1", "l2"), cause="no-space",
                         detail="process […] did not complete successfully: exit code: 7")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setenv("ENVD_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setattr(execute, "run_build", fail)
    cli = create_cli(lambda: Plugins.create())
    code = run(cli, ["build", "--format", "json", "--output", f"type=tar,dest={tmp_path}/o.tar"])
    out = capsys.readouterr()
    assert code == 1
    error = json.loads(out.out)["error"]
    assert error == {"message": failure.message, "hint": failure.hint, "kind": "build",
                     "stage": "step", "step": "x", "exit_code": 7, "log_tail": ["l1", "l2"],
                     "cause": "no-space", "detail": failure.detail}
    assert out.err.splitlines()[-2:] == [f"envd: {failure.message}", f"hint: {failure.hint}"]
