"""Each member of the builder contract has a caller: a throwaway builder records the calls.

``envd bootstrap`` → bootstrap (+ connect, status); ``envd build`` → needs_bootstrap, bootstrap
before the first solve; ``envd builder rm`` → remove; ``envd context ls --status`` → status; a
``moby`` export with push=true → can_push, push. No daemon is needed: the recording builder's
connect hands back a stand-in connection, or fails when the test says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bootstrap_doubles import RecordingBuilder

from envd_core.builder import Builder
from envd_core.errors import BuilderError, ErrorKind
from envd_core.testing import (
    BuilderContract,
    StubRunner,
    builder_capability_problems,
    make_plugin,
)


class TestRecordingBuilder(BuilderContract):
    builder_cls = RecordingBuilder
    valid_address = "pretend"


def names(calls: list[tuple[Any, ...]]) -> list[str]:
    return [call[0] for call in calls]


# -- envd bootstrap ------------------------------------------------------------------------------
def test_bootstrap_command_bootstraps_then_waits_and_reports(cli: Any, recording: Any) -> None:
    done = cli("bootstrap", env={"BUILDKIT_CONNECTING_TIMEOUT": "2s"})
    assert done.exit_code == 0, done
    # the bootstrap waited for the daemon already: one status call, no second connection
    assert names(recording.calls) == ["bootstrap", "status"]
    assert recording.calls == [("bootstrap", False), ("status", 2.0)]
    assert "creating container recording-daemon" in done.stderr  # the plugin's progress
    assert done.stderr_lines[-1] == "The buildkit is running at recording://pretend"
    assert done.stdout == ""


def test_bootstrap_json_reports_what_it_did(cli: Any, recording: Any) -> None:
    first = json.loads(cli("bootstrap", "--format", "json").stdout)
    again = cli("bootstrap", "--format", "json", "--force", "--timeout", "750ms")
    assert again.exit_code == 0, again
    second = json.loads(again.stdout)
    assert (first["action"], second["action"]) == ("created", "reused")
    assert first["managed"] is True and first["running"] is True and first["version"] == "v9.9.9"
    assert first["context"] == "rec" and first["url"] == "recording://pretend"
    assert ("bootstrap", True) in recording.calls and ("status", 0.75) in recording.calls


def test_bootstrap_that_never_comes_up_is_one_line(cli: Any, recording: Any) -> None:
    recording.connect_fails = True
    done = cli("bootstrap")
    assert done.exit_code == 1
    assert [line for line in done.stderr_lines if line.startswith("envd:")] == [
        ("envd: the buildkitd of `recording://pretend` was started but does not answer: "
         "no buildkitd at `recording://pretend`")]
    assert "Traceback" not in done.stderr


# -- the build path ------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    (path / "build.envd").write_text(
        'def build():\n    base(image="127.0.0.1:5000/debian:bookworm")\n'
    )
    return path


def test_build_bootstraps_a_missing_daemon_before_connecting(
    cli: Any, recording: Any, project: Path, tmp_path: Path
) -> None:
    recording.connect_fails = True  # stop right after: the solve needs a real daemon
    done = cli("build", "--path", str(project), "--output", f"type=tar,dest={tmp_path / 'o.tar'}")
    assert done.exit_code == 1, done
    assert names(recording.calls) == ["needs_bootstrap", "bootstrap", "connect"]
    assert "is not running: bootstrapping it" in done.stderr
    assert "creating container recording-daemon" in done.stderr


def test_build_leaves_a_running_daemon_alone(
    cli: Any, recording: Any, project: Path, tmp_path: Path
) -> None:
    recording.daemon = "running"
    recording.connect_fails = True
    done = cli("build", "--path", str(project), "--output", f"type=tar,dest={tmp_path / 'o.tar'}")
    assert names(recording.calls) == ["needs_bootstrap", "connect"], done
    assert "bootstrapping" not in done.stderr


def test_build_with_no_bootstrap_fails_in_one_line(
    cli: Any, recording: Any, project: Path, tmp_path: Path
) -> None:
    done = cli("build", "--no-bootstrap", "--path", str(project),
               "--output", f"type=tar,dest={tmp_path / 'o.tar'}")
    assert done.exit_code == 1
    assert names(recording.calls) == ["needs_bootstrap"]
    assert done.stderr_lines[-2:] == [
        "envd: the buildkitd of `recording://pretend` is not running",
        "hint: start it with `envd bootstrap`, or build without --no-bootstrap",
    ]


def test_dump_llb_never_touches_the_daemon(cli: Any, recording: Any, project: Path,
                                          tmp_path: Path) -> None:
    done = cli("build", "--path", str(project), "--dump-llb", str(tmp_path / "x.llb"))
    assert done.exit_code == 0, done
    assert recording.calls == []


# -- envd builder rm ---------------------------------------------------------------------------
def test_builder_rm_removes_through_the_contract(cli: Any, recording: Any) -> None:
    assert cli("bootstrap").exit_code == 0
    recording.calls.clear()
    done = cli("builder", "rm", "rec", "--keep-state", "--format", "json")
    assert done.exit_code == 0, done
    assert recording.calls == [("remove", True)]
    assert json.loads(done.stdout) == {
        "context": "rec", "builder": "recording", "url": "recording://pretend",
        "keep_state": True, "action": "removed", "detail": ""}
    again = cli("builder", "rm")  # the context in force; nothing left to remove
    assert again.exit_code == 0 and "No buildkitd to remove" in again.stderr
    assert recording.calls[-1] == ("remove", False)


def test_builder_rm_refuses_a_daemon_envd_does_not_manage(cli: Any, recording: Any) -> None:
    done = cli("builder", "rm", "default")  # moby-worker: not even installed here
    assert done.exit_code == 1 and done.stderr.startswith("envd: ")
    assert ("remove", False) not in recording.calls


# -- envd context ls --status --------------------------------------------------------------------
def test_context_ls_status_calls_status(cli: Any, recording: Any) -> None:
    done = cli("context", "ls", "--status", "--format", "json")
    rows = {row["context"]: row for row in json.loads(done.stdout)}
    assert rows["rec"]["status"]["error_kind"] == "refused"
    assert names(recording.calls) == ["status"]


class _BrokenConnect(Builder):
    name = "broken-connect"

    def connect(self, *, timeout: float) -> Any:
        raise RuntimeError("plugin bug")


def test_default_status_never_raises() -> None:
    status = _BrokenConnect("x").status(timeout=0.1)
    assert status.reachable is False and status.error_kind is ErrorKind.ERROR
    assert status.error == "RuntimeError: plugin bug"
    assert status.to_json()["error_kind"] == "error"


# -- capabilities --------------------------------------------------------------------------------
def test_capability_flags_must_come_with_their_methods() -> None:
    class Liar(Builder):
        name = "liar"
        can_push = True
        can_bootstrap = True
        exporter_applies_config = False

        def connect(self, *, timeout: float) -> Any:
            raise AssertionError

    problems = builder_capability_problems(Liar)
    assert problems == [
        "`can_push = True` but `push` is not overridden",
        "`can_bootstrap = True` but `needs_bootstrap` is not overridden",
        "`can_bootstrap = True` but `bootstrap` is not overridden",
        "`can_bootstrap = True` but `remove` is not overridden",
        "`exporter_applies_config = False` but `apply_image_config` is not overridden",
    ]
    assert builder_capability_problems(RecordingBuilder) == []


class _MobyLike(Builder):
    """Exports into its daemon's store and cannot push: push=true must fail before building."""

    name = "moby-like"
    exporters = frozenset({"moby", "tar"})
    calls: ClassVar[list[str]] = []

    def connect(self, *, timeout: float) -> Any:
        self.calls.append("connect")
        raise BuilderError("unreachable")


def test_push_without_can_push_fails_before_building(
    cli: Any, register_plugin: Any, project: Path
) -> None:
    register_plugin(make_plugin(builders=[_MobyLike], runners=[StubRunner]))
    assert cli("context", "create", "--name", "m", "--builder", "moby-like", "--builder-address",
               "x", "--runner", StubRunner.name, "--use").exit_code == 0
    done = cli("build", "--path", str(project), "--output", "type=image,name=r/x:1,push=true")
    assert done.exit_code == 2, done
    assert "cannot push" in done.stderr and _MobyLike.calls == []
