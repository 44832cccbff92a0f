"""``envd init`` (a starter build.envd for the project) and ``envd new`` (from a template).

Flags are upstream v1.3.4's (``--lang/-l``, ``--force/-f``, ``--path/-p``; ``--template/-t``);
ours adds ``--base``, ``--package``, ``--cuda``, ``--jupyter/--no-jupyter`` to ``init`` so it
runs without prompts, and ``--list``/``--format`` to ``new``. Upstream asks its questions in a
full-screen picker; ours asks them with plain prompts, only on a terminal, and only for what no
flag answered. The decisions live in :mod:`envd_core.envdfile.starter`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from envd_core.cli.render import dump_json, table


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


@click.command("init")
@click.option("--lang", "-l", default=None, metavar="LANG",
              help="Language usage. Support Python, R, Julia (asked on a terminal; "
                   "default python).")
@click.option("--force", "-f", is_flag=True, help="Overwrite the build.envd if existed.")
@click.option("--path", "-p", "path", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Path to the directory containing the build.envd.")
@click.option("--base", "base_image", default=None, metavar="IMAGE",
              help="Base image instead of upstream's ubuntu:22.04.")
@click.option("--package", "packages", multiple=True, metavar="NAME",
              help="A package to install (repeatable); Python without a requirements.txt, "
                   "or R.")
@click.option("--cuda", default=None, metavar="VERSION",
              help="Use CUDA VERSION (e.g. 12.3.2); 'no' for none.")
@click.option("--jupyter/--no-jupyter", default=None, help="Add Jupyter (Python).")
def init(lang: str | None, force: bool, path: Path, base_image: str | None,
         packages: tuple[str, ...], cuda: str | None, jupyter: bool | None) -> None:
    """Automatically generate the build.envd.

    Python projects get the first requirements.txt and conda environment file found under
    --path. On a terminal, what no flag answers is asked.
    """
    from envd_core.envdfile import starter

    project = path.absolute()
    target = project / "build.envd"
    if target.exists() and not force:  # before any question, as upstream
        starter.write_build_file(project, "", force=False)
    ask = _interactive()
    answers = starter.InitAnswers()
    if lang is not None:
        answers.language = starter.check_language(lang)
    elif ask:
        answers.language = click.prompt(
            "Choose a programming language", type=click.Choice(starter.LANGUAGES),
            default="python")
    if base_image is not None:
        answers.base_image = base_image
    answers.packages = [p for p in packages if p.strip()]
    if answers.language == "python":
        answers.requirements, answers.conda_env_file = starter.detect_python_files(project)
        if not answers.requirements and not answers.packages and ask:
            answers.packages = _ask_list("Python packages", starter.PYTHON_PACKAGE_CHOICES)
        if jupyter is None and ask:
            jupyter = click.confirm("Include Jupyter?", default=False)
        answers.jupyter = bool(jupyter)
    elif answers.language == "r" and not answers.packages and ask:
        answers.packages = _ask_list("R packages", starter.R_PACKAGE_CHOICES)
    if cuda is None and ask and click.confirm("Include CUDA?", default=False):
        cuda = click.prompt("CUDA version", type=click.Choice(starter.CUDA_CHOICES),
                            default=starter.CUDA_CHOICES[-1])
    answers.cuda = "" if cuda in (None, "", "no", "none") else str(cuda)
    written = starter.write_build_file(project, starter.render_init(answers), force=force)
    click.echo(f"build.envd is created in `{written}`", err=True)


def _ask_list(what: str, choices: tuple[str, ...]) -> list[str]:
    text = click.prompt(f"{what}, comma-separated (e.g. {', '.join(choices)}; empty for none)",
                        default="", show_default=False)
    return [p.strip() for p in str(text).split(",") if p.strip()]


@click.command("new")
@click.option("--template", "-t", default=None, metavar="NAME",
              help="Template name to use (see --list; your own go in "
                   "<config dir>/templates/NAME.envd).")
@click.option("--force", "-f", is_flag=True, help="Overwrite the build.envd if existed.")
@click.option("--path", "-p", "path", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Path to the directory of the build.envd.")
@click.option("--list", "list_", is_flag=True, help="List the templates and exit.")
# no -f short form: upstream's `new` gives -f to --force
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format of --list.")
def new(template: str | None, force: bool, path: Path, list_: bool, fmt: str) -> None:
    """Create a new `build.envd` file from pre-defined templates."""
    from envd_core.envdfile import starter
    from envd_core.errors import UsageError

    if list_:
        rows = starter.list_templates()
        if fmt == "json":
            click.echo(dump_json([t.to_json() for t in rows]))
        else:
            click.echo(table(["NAME", "SOURCE", "DESCRIPTION"],
                             [[t.name, t.source, t.description] for t in rows]))
        return
    if not template:
        raise UsageError("envd new needs --template NAME; see the choices with "
                         "`envd new --list`")
    found = starter.find_template(template)
    text = found.path.read_text(encoding="utf-8")
    written = starter.write_build_file(path.absolute(), text, force=force)
    click.echo(f"Template `{found.name}` is created in `{written}`", err=True)

