"""``envd init`` and ``envd new``: generated files, templates, refusals; every output evaluates
and compiles (the real build of an ``init`` file is in
tests/integration/pipeline/test_envd_init_new.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envd_core.envdfile import load_build
from envd_core.envdfile.compile import CompileOptions, compile_graph
from envd_core.envdfile.starter import BUNDLED, list_templates
from envd_core.testing import EnvdCli, assert_one_error


def compiles(project: Path, function: str = "build") -> None:
    graph = load_build(project, f"build.envd:{function}")
    assert compile_graph(graph, options=CompileOptions(context_dir=project)).dump_llb()


def test_init_python_finds_requirements_and_conda_env(cli: EnvdCli, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "requirements.txt").write_text("six\n")
    (tmp_path / "environment.yml").write_text("name: x\ndependencies: [numpy]\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "requirements.txt").write_text("never\n")
    result = cli("init", "--path", str(tmp_path), "--cuda", "12.3.2", "--jupyter")
    assert result.exit_code == 0, result
    text = (tmp_path / "build.envd").read_text()
    assert text.startswith("# syntax=v1\n")
    body = [ln.strip() for ln in text.split("def build():\n", 1)[1].splitlines()]
    assert body == [
        'base(image="ubuntu:22.04", dev=True)', "install.conda()", "install.python()",
        'install.python_packages(requirements="src/requirements.txt")',
        'install.conda_packages(env_file="environment.yml")',
        'install.cuda(version="12.3.2", cudnn="8")', "config.jupyter()",
    ]
    graph = load_build(tmp_path)
    assert graph.requirements_files == ["src/requirements.txt"] and graph.cuda == "12.3.2"
    compiles(tmp_path)


def test_init_without_a_terminal_asks_nothing(cli: EnvdCli, tmp_path: Path) -> None:
    result = cli("init", "-p", str(tmp_path), "--base", "127.0.0.1:5000/python:3.11-bookworm",
                 "--package", "six", "--package", "rich")
    assert result.exit_code == 0, result
    graph = load_build(tmp_path)
    assert graph.image == "127.0.0.1:5000/python:3.11-bookworm" and graph.dev
    assert graph.conda is None and graph.python_packages == [["six", "rich"]]
    assert graph.jupyter is None and graph.cuda is None
    compiles(tmp_path)


@pytest.mark.parametrize("lang, call", [("R", "install.r_lang()"), ("julia", "install.julia()"),
                                        ("r_lang", "install.r_lang()")])
def test_init_other_languages(cli: EnvdCli, tmp_path: Path, lang: str, call: str) -> None:
    assert cli("init", "-p", str(tmp_path), "-l", lang).exit_code == 0
    assert call in (tmp_path / "build.envd").read_text()
    compiles(tmp_path)


def test_init_prompts_on_a_terminal(cli: EnvdCli, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("envd_core.cli.init_new._interactive", lambda: True)
    # language, packages, jupyter, cuda?, cuda version
    result = cli("init", "-p", str(tmp_path), input="python\nnumpy, pandas\ny\ny\n11.8.0\n")
    assert result.exit_code == 0, result
    graph = load_build(tmp_path)
    assert graph.python_packages == [["numpy", "pandas"]]
    assert graph.jupyter is not None and graph.cuda == "11.8.0"


def test_init_keeps_an_existing_file(cli: EnvdCli, tmp_path: Path) -> None:
    (tmp_path / "build.envd").write_text("# mine\n")
    line = assert_one_error(cli("init", "-p", str(tmp_path)), code=2)
    assert "already exists; use --force" in line
    assert (tmp_path / "build.envd").read_text() == "# mine\n"
    assert cli("init", "-p", str(tmp_path), "-f").exit_code == 0
    assert "install.python()" in (tmp_path / "build.envd").read_text()


def test_init_bad_language_and_missing_dir(cli: EnvdCli, tmp_path: Path) -> None:
    assert "unknown language `cobol`" in assert_one_error(
        cli("init", "-p", str(tmp_path), "-l", "cobol"), code=2)
    assert not (tmp_path / "build.envd").exists()
    assert "is not a directory" in assert_one_error(
        cli("init", "-p", str(tmp_path / "nope")), code=2)


@pytest.mark.parametrize("template", sorted(p.stem for p in BUNDLED.glob("*.envd")))
def test_every_bundled_template_compiles(cli: EnvdCli, tmp_path: Path, template: str) -> None:
    result = cli("new", "-t", template, "-p", str(tmp_path))
    assert result.exit_code == 0, result
    assert (tmp_path / "build.envd").read_bytes() == (BUNDLED / f"{template}.envd").read_bytes()
    compiles(tmp_path)
    if template == "torch":
        compiles(tmp_path, "gpu")


def test_new_list_and_user_templates(cli: EnvdCli, tmp_path: Path,
                                     envd_config_dir: Path) -> None:
    rows = json.loads(cli("new", "--list", "--format", "json").stdout)
    assert [r["name"] for r in rows] == sorted(p.stem for p in BUNDLED.glob("*.envd"))
    assert {r["source"] for r in rows} == {"bundled"}
    user = envd_config_dir / "templates"
    user.mkdir(parents=True)
    (user / "uv.envd").write_text("# my uv\ndef build():\n    install.uv()\n")
    (user / "team.envd").write_text("# the team's\ndef build():\n    install.python()\n")
    rows = {r["name"]: r for r in json.loads(cli("new", "--list", "--format", "json").stdout)}
    assert rows["uv"]["source"] == "user" and rows["uv"]["description"] == "my uv"
    assert rows["team"]["source"] == "user"
    assert "team" in cli("new", "--list").stdout
    assert cli("new", "-t", "uv", "-p", str(tmp_path)).exit_code == 0
    assert (tmp_path / "build.envd").read_text().startswith("# my uv")
    assert len(list_templates()) == len(rows)


def test_new_refusals(cli: EnvdCli, tmp_path: Path) -> None:
    assert "--template NAME" in assert_one_error(cli("new", "-p", str(tmp_path)), code=2)
    line = assert_one_error(cli("new", "-t", "nope", "-p", str(tmp_path)), code=2)
    assert "no template `nope`" in line and "uv" in line
    assert "not valid" in assert_one_error(cli("new", "-t", "../x", "-p", str(tmp_path)), 2)
    (tmp_path / "build.envd").write_text("# mine\n")
    assert "already exists" in assert_one_error(cli("new", "-t", "uv", "-p", str(tmp_path)), 2)
    assert (tmp_path / "build.envd").read_text() == "# mine\n"
