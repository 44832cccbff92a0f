"""The environment commands against a recording runner (no daemon)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _environments_support import RecordingRunner

from envd_core.testing import EnvdCli

USER_CONFIG = b"Host mine\n  HostName example.org\n  Port 2200"


def ssh_config(home: Path) -> bytes:
    return (home / ".ssh" / "config").read_bytes()


def one_line(result: object, code: int) -> str:
    assert result.exit_code == code, result  # type: ignore[attr-defined]
    lines = [ln for ln in result.stderr_lines if not ln.startswith("hint:")]  # type: ignore[attr-defined]
    assert len(lines) == 1, result
    return lines[0]


def test_run_detach_creates_writes_ssh_entry_and_lists(envs_cli: EnvdCli, home: Path,
                                                       tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    result = envs_cli("run", "--image", "proj:dev", "--path", str(project), "--detach")
    assert result.exit_code == 0, result
    spec = RecordingRunner.specs[-1]
    assert spec.name == "proj" and spec.working_dir == "/home/envd/proj"
    ssh_port = RecordingRunner.environments["proj"].ssh.port  # type: ignore[union-attr]
    data = ssh_config(home)
    assert data.startswith(USER_CONFIG + b"\n")
    assert f"Host proj.envd\n  HostName 127.0.0.1\n  Port {ssh_port}\n".encode() in data
    rows = json.loads(envs_cli("envs", "ls", "--format", "json").stdout)
    assert [(r["name"], r["ssh_target"], r["status"], r["image"]) for r in rows] == [
        ("proj", "proj.envd", "running", "proj:dev")]
    assert "jupyter: http://127.0.0.1:" in rows[0]["endpoint"]
    table = envs_cli("envs", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "ENDPOINT", "SSH"]
    assert table[1].startswith("proj ")


def test_down_removes_environment_and_only_its_entry(envs_cli: EnvdCli, home: Path,
                                                     tmp_path: Path) -> None:
    assert envs_cli("run", "--image", "proj:dev", "--name", "one", "--detach").exit_code == 0
    assert envs_cli("run", "--image", "proj:dev", "--name", "two", "--detach").exit_code == 0
    result = envs_cli("down", "--name", "one")
    assert result.exit_code == 0, result
    assert "one" not in RecordingRunner.environments
    data = ssh_config(home)
    assert b"Host one.envd" not in data and b"Host two.envd" in data
    assert envs_cli("destroy", "two").exit_code == 0
    assert ssh_config(home) == USER_CONFIG + b"\n"
    missing = envs_cli("down", "--name", "two")
    assert "not found" in one_line(missing, 1)


def test_running_environment_needs_force(envs_cli: EnvdCli, home: Path) -> None:
    assert envs_cli("run", "--image", "proj:dev", "--name", "x", "--detach").exit_code == 0
    again = envs_cli("run", "--image", "proj:dev", "--name", "x", "--detach")
    assert "already running" in one_line(again, 1)
    forced = envs_cli("run", "--image", "proj:dev", "--name", "x", "--detach", "--force")
    assert forced.exit_code == 0, forced
    assert ("create", "x", True) in RecordingRunner.calls
    assert ssh_config(home).count(b"Host x.envd") == 1


@pytest.mark.parametrize(("args", "fragment"), [
    (("--volume", "/tmp"), "exactly one `:`"),
    (("--volume", "/definitely/missing:/data"), "does not exist"),
    (("--name", "bad name"), "invalid environment name"),
    (("--memory", "lots"), "invalid memory"),
    (("--gpu-set", "many"), "invalid --gpu-set"),
    (("--timeout", "soon"), "invalid duration"),
    (("--image", "nothere:dev"), "not in runner"),
])
def test_bad_input_is_one_line_and_touches_nothing(envs_cli: EnvdCli, home: Path,
                                                   args: tuple[str, ...], fragment: str) -> None:
    argv = ["run", "--detach", "--name", "ok", "--image", "proj:dev", *args]
    result = envs_cli(*argv)
    assert result.exit_code != 0
    assert fragment in one_line(result, result.exit_code)
    assert "Traceback" not in result.stderr
    assert not RecordingRunner.specs
    assert ssh_config(home) == USER_CONFIG


def test_exec_forms(envs_cli: EnvdCli) -> None:
    assert envs_cli("run", "--image", "proj:dev", "--name", "e", "--detach").exit_code == 0
    assert envs_cli("exec", "--name", "e", "--raw", "echo $HOME").exit_code == 0
    assert envs_cli("exec", "--name", "e", "--command", "hello").exit_code == 0
    assert envs_cli("exec", "--name", "e", "--", "python3", "-V").exit_code == 0
    execs = [c[2] for c in RecordingRunner.calls if c[0] == "exec"]
    assert execs == [["/bin/sh", "-c", "echo $HOME"], ["/bin/sh", "-c", "echo hi"],
                     ["python3", "-V"]]
    unknown = envs_cli("exec", "--name", "e", "--command", "nope")
    assert "no command `nope` (defined: hello)" in one_line(unknown, 2)
    both = envs_cli("exec", "--name", "e", "--raw", "x", "--", "y")
    assert "exactly one" in one_line(both, 2)
    # the command's exit code becomes envd's (SystemExit, as the console script exits)
    with pytest.raises(SystemExit) as exited:
        envs_cli("exec", "--name", "e", "--", "fail")
    assert exited.value.code == 3


def test_pause_resume_top(envs_cli: EnvdCli) -> None:
    assert envs_cli("run", "--image", "proj:dev", "--name", "p", "--detach").exit_code == 0
    assert envs_cli("pause", "--env", "p").exit_code == 0
    assert RecordingRunner.environments["p"].status.value == "paused"
    paused_exec = envs_cli("exec", "--name", "p", "--", "ls")
    assert "paused, not running" in one_line(paused_exec, 1)
    assert envs_cli("resume", "p").exit_code == 0
    assert RecordingRunner.environments["p"].status.value == "running"
    top = json.loads(envs_cli("top", "--format", "json").stdout)
    assert top == [{"name": "p", "titles": ["PID", "CMD"], "processes": [["1", "sleep"]]}]


def test_describe(envs_cli: EnvdCli) -> None:
    assert envs_cli("run", "--image", "proj:dev", "--name", "d", "--detach").exit_code == 0
    data = json.loads(envs_cli("envs", "describe", "--env", "d", "-f", "json").stdout)
    assert {"name": "six", "type": "Python"} in data["dependencies"]
    assert {"name": "jq", "type": "APT"} in data["dependencies"]
    assert {p["name"] for p in data["ports"]} == {"ssh", "jupyter", "web"}


def test_images_ls_lists_only_envd_images(envs_cli: EnvdCli) -> None:
    rows = json.loads(envs_cli("images", "ls", "-f", "json").stdout)
    assert [r["name"] for r in rows] == ["proj:dev", "<none>:<none>"]
    assert rows[0]["created"] == "Less than a second" or rows[0]["created"].endswith("seconds")
    assert rows[0]["endpoint"] == "/src/proj" and rows[0]["size"] == "123MB"
    assert rows[0]["image_id"] == "a" * 12


def test_images_remove_refuses_an_image_in_use(envs_cli: EnvdCli) -> None:
    assert envs_cli("run", "--image", "proj:dev", "--name", "u", "--detach").exit_code == 0
    refused = envs_cli("images", "remove", "--image", "proj")  # tag defaults to dev
    assert "used by environment `u`" in one_line(refused, 1)
    assert envs_cli("down", "u").exit_code == 0
    assert envs_cli("images", "remove", "-i", "proj", "-t", "dev").exit_code == 0
    assert ("remove_image", "proj:dev", False) in RecordingRunner.calls


def test_images_prune_removes_untagged_unused(envs_cli: EnvdCli) -> None:
    result = envs_cli("images", "prune")
    assert result.exit_code == 0, result
    removed = [c[1] for c in RecordingRunner.calls if c[0] == "remove_image"]
    assert removed == ["sha256:" + "c" * 64]  # the untagged envd image, not busybox


def test_unreachable_runner_is_one_line(envs_cli: EnvdCli) -> None:
    RecordingRunner.reachable = False
    assert "is down" in one_line(envs_cli("envs", "ls"), 1)


def test_version_json_lists_plugins(envs_cli: EnvdCli) -> None:
    data = json.loads(envs_cli("version", "--format", "json").stdout)
    assert data["envd"] and data["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(data["plugins"], list)
    assert data["distribution"] is None  # stock envd
    short = json.loads(envs_cli("version", "--short", "-f", "json").stdout)
    assert set(short) == {"envd", "distribution"}
    detail = json.loads(envs_cli("version", "--detail", "-f", "json").stdout)
    assert detail["runner"] == "recording" and detail["context"] == "rec"


def test_up_refuses_before_building_when_runner_is_down(envs_cli: EnvdCli,
                                                        tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "build.envd").write_text("def build():\n    base(image='x', dev=False)\n")
    RecordingRunner.reachable = False
    result = envs_cli("up", "--path", str(project), "--detach")
    assert "runner `recording` is not reachable" in one_line(result, 1)


@pytest.mark.parametrize(("seconds", "words"), [
    (0.2, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (90, "About a minute"),
    (600, "10 minutes"), (3600, "About an hour"), (7200, "2 hours"), (3 * 86400, "3 days"),
    (20 * 86400, "2 weeks"), (90 * 86400, "3 months"), (800 * 86400, "2 years"),
])
def test_human_duration_as_docker(seconds: float, words: str) -> None:
    from envd_core.environments.operations import human_duration

    assert human_duration(seconds) == words


def test_up_refuses_before_building_when_the_runner_cannot_take_the_image(
        envs_cli: EnvdCli, tmp_path: Path) -> None:
    """The stub builder exports tarballs; the recording runner cannot load them."""
    project = tmp_path / "p"
    project.mkdir()
    (project / "build.envd").write_text("def build():\n    base(image='x', dev=False)\n")
    result = envs_cli("up", "--path", str(project), "--detach")
    assert "cannot load images built by builder" in one_line(result, 2)
    assert "Building" not in result.stderr


def test_up_checks_flags_before_anything_else(envs_cli: EnvdCli, tmp_path: Path,
                                              home: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    RecordingRunner.reachable = False  # would fail second: the flag is checked first
    result = envs_cli("up", "--path", str(project), "--volume", "nocolon")
    assert "exactly one `:`" in one_line(result, 2)
    assert ssh_config(home) == USER_CONFIG


def test_find_image_by_tag_spelling_and_id_prefix() -> None:
    from _environments_support import RecordingRunner as R

    from envd_core.environments.operations import find_image

    R.reset()
    runner = R(None)
    assert find_image(runner, "busybox") is R.image_store[1]  # means busybox:latest
    assert find_image(runner, "docker.io/library/busybox:latest") is R.image_store[1]
    assert find_image(runner, "a" * 12) is R.image_store[0]
    assert find_image(runner, "sha256:" + "c" * 16) is R.image_store[2]
    # a tag that looks like hex is a tag, never an id prefix
    assert find_image(runner, "proj:aaaaaaaaaaaa") is None
    assert find_image(runner, "nothere:dev") is None
