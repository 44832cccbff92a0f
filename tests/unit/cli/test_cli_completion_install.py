"""``envd completion``: the script printed (ours and upstream's ``--no-install`` form) and
installed where each shell's loader reads it (upstream's ``--shell`` form)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from envd_core.cli import create_cli, run


@pytest.fixture
def cli() -> click.Group:
    return create_cli()


def _env(tmp_path: Path, shell: str | None) -> dict[str, str | None]:
    return {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"), "SHELL": shell}


def test_both_forms_print_the_same_script(cli: click.Group, tmp_path: Path) -> None:
    runner = CliRunner()
    ours = runner.invoke(cli, ["completion", "zsh"], env=_env(tmp_path, None))
    theirs = runner.invoke(cli, ["completion", "-s", "zsh", "--no-install"],
                           env=_env(tmp_path, None))
    assert ours.exit_code == theirs.exit_code == 0
    assert ours.output == theirs.output and "_ENVD_COMPLETE" in ours.output
    assert not (tmp_path / "data").exists()  # printing never writes


@pytest.mark.parametrize(("args", "shell_env", "written"), [
    (["--shell", "fish"], None, "config/fish/completions/envd.fish"),
    ([], "/usr/bin/zsh", "data/zsh/site-functions/_envd"),
    (["-s", "bash", "-s", "zsh"], "/bin/sh", "data/bash-completion/completions/envd"),
])
def test_upstream_form_installs(cli: click.Group, tmp_path: Path, args: list[str],
                                shell_env: str | None, written: str) -> None:
    done = CliRunner().invoke(cli, ["completion", *args], env=_env(tmp_path, shell_env))
    assert done.exit_code == 0, done.output
    path = tmp_path / written
    shell = "fish" if "fish" in written else "zsh" if "zsh" in written else "bash"
    printed = CliRunner().invoke(cli, ["completion", shell]).output
    assert path.read_text() + "\n" == printed  # the same script (echo adds the newline)
    assert f"{shell} completion written to {path}" in done.output
    if args[-1:] == ["zsh"]:  # every --shell given is installed
        assert (tmp_path / "data/zsh/site-functions/_envd").is_file()


def test_no_shell_known_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHELL", "/bin/tcsh")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert run(create_cli(), ["completion"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "envd: cannot tell which shell to complete for (SHELL is `tcsh`)"
    assert err[1:] == ["hint: name it: `envd completion --shell bash|zsh|fish`"]


def test_shell_given_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert run(create_cli(), ["completion", "bash", "--shell", "zsh"]) == 2
    assert capsys.readouterr().err.startswith("envd: give the shell once: ")
    assert not tmp_path.joinpath(".local").exists()
