"""Starter build files: ``envd init`` (generated for a project) and ``envd new`` (templates).

``envd init`` follows upstream v1.3.4 (``pkg/app/init.go``, ``interactive.go``): a ``build()``
with ``base(image="ubuntu:22.04", dev=True)``, the language (``python``, ``r`` or ``julia``),
for Python the first ``requirements.txt`` under the project (else chosen packages) and the first
conda environment file (``environment.yml``/``.yaml``, ``env.yml``/``.yaml``), an optional CUDA
version and Jupyter. Where ours differs, on purpose (docs/build-language.md lists it):

- Python gets ``install.conda()`` only when a conda environment file needs it; otherwise the
  image's Python (or micromamba for another version) serves, with fewer downloads. Upstream
  always adds conda for Python.
- CUDA is written ``install.cuda(version=..., cudnn="8")``; upstream writes
  ``cuda(version=..., cudann="8")``, a function that does not exist, so its file fails.
- ``base_image`` (``envd init --base``) replaces ``ubuntu:22.04``.

``envd new`` copies a template: the user's ``<config dir>/templates/<name>.envd`` first (as
upstream reads ``~/.config/envd/templates``), else the one bundled in
``envd_core/envdfile/templates``. Templates are read as text and never evaluated here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import attrs

from envd_core.errors import ValidationError

LANGUAGES = ("python", "r", "julia")
DEFAULT_IMAGE = "ubuntu:22.04"
#: upstream's conda environment file names (``isCondaEnvFile``)
CONDA_ENV_FILES = ("environment.yml", "environment.yaml", "env.yml", "env.yaml")
#: upstream's multiple-choice lists, offered by the interactive prompts
PYTHON_PACKAGE_CHOICES = ("ipython", "numpy", "pandas", "torch")
R_PACKAGE_CHOICES = ("remotes", "rlang")
CUDA_CHOICES = ("11.2.2", "11.8.0", "12.3.2")
BUNDLED = Path(__file__).with_name("templates")
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache"}


@attrs.define
class InitAnswers:
    """Everything ``envd init`` decides, by flag, by prompt or by looking at the project."""

    language: str = "python"
    packages: list[str] = attrs.field(factory=list)
    requirements: str = ""
    conda_env_file: str = ""
    cuda: str = ""
    jupyter: bool = False
    base_image: str = DEFAULT_IMAGE


def check_language(lang: str) -> str:
    """``lang`` lower-cased, or a one-line error naming the choices."""
    lowered = lang.strip().lower()
    if lowered == "r_lang":  # upstream's prompt spells R this way
        lowered = "r"
    if lowered not in LANGUAGES:
        raise ValidationError(
            f"unknown language `{lang}`; use one of: {', '.join(LANGUAGES)}")
    return lowered


def detect_python_files(project: Path) -> tuple[str, str]:
    """The first ``requirements.txt`` and conda environment file under ``project``.

    Walked in sorted order (upstream walks lexically too), skipping virtualenvs and VCS folders;
    paths are relative to ``project`` with ``/`` separators.
    """
    requirements = conda = ""
    for root, dirs, files in os.walk(project):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            rel = (Path(root) / name).relative_to(project).as_posix()
            if name == "requirements.txt" and not requirements:
                requirements = rel
            elif name in CONDA_ENV_FILES and not conda:
                conda = rel
        if requirements and conda:
            break
    return requirements, conda


def render_init(answers: InitAnswers) -> str:
    """The text of the generated ``build.envd``."""
    lines = ["# syntax=v1", "# Written by `envd init`; see `envd new --list` for templates.",
             "", "", "def build():",
             f"    base(image={_q(answers.base_image)}, dev=True)"]
    if answers.language == "python":
        if answers.conda_env_file:
            lines.append("    install.conda()")
        lines.append("    install.python()")
        lines += _packages("python", answers.packages)
        if answers.requirements:
            lines.append(f"    install.python_packages(requirements={_q(answers.requirements)})")
        if answers.conda_env_file:
            lines.append(f"    install.conda_packages(env_file={_q(answers.conda_env_file)})")
    elif answers.language == "r":
        lines.append("    install.r_lang()")
        lines += _packages("r", answers.packages)
    else:
        lines.append("    install.julia()")
        lines += _packages("julia", answers.packages)
    if answers.cuda:
        lines.append(f'    install.cuda(version={_q(answers.cuda)}, cudnn="8")')
    if answers.jupyter:
        lines.append("    config.jupyter()")
    return "\n".join(lines) + "\n"


def _packages(kind: str, packages: Sequence[str]) -> list[str]:
    if not packages:
        return []
    return [f"    install.{kind}_packages(name=[",
            *[f"        {_q(p)}," for p in packages], "    ])"]


def _q(text: str) -> str:
    """A Starlark string literal (double quotes, escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------ templates
@attrs.frozen
class Template:
    """A ``build.envd`` template: its name, where it comes from and its first comment line."""

    name: str
    path: Path
    source: str  # "user" or "bundled"
    description: str

    def to_json(self) -> dict[str, str]:
        """The ``envd new --list --format json`` row."""
        return {"name": self.name, "source": self.source, "path": str(self.path),
                "description": self.description}


def user_template_dir() -> Path:
    """``<envd config dir>/templates`` (upstream: ``~/.config/envd/templates``)."""
    from envd_core.contexts.store import config_dir

    return config_dir() / "templates"


def list_templates() -> list[Template]:
    """Every template, the user's hiding a bundled one of the same name, sorted by name."""
    found: dict[str, Template] = {}
    for source, folder in (("bundled", BUNDLED), ("user", user_template_dir())):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.envd")):
            if path.is_file():
                found[path.stem] = Template(path.stem, path, source, _description(path))
    return [found[name] for name in sorted(found)]


def find_template(name: str) -> Template:
    """The template called ``name``, or a one-line error listing the ones there are."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValidationError(f"template name `{name}` is not valid; give a name such as `uv`")
    templates = list_templates()
    for template in templates:
        if template.name == name:
            return template
    have = ", ".join(t.name for t in templates) or "none"
    raise ValidationError(
        f"no template `{name}` (available: {have}); add your own as "
        f"`{user_template_dir() / (name + '.envd')}`")


def _description(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                text = line.strip()
                if not text.startswith("#"):
                    break
                body = text.lstrip("#").strip()
                if body and not body.startswith("syntax="):
                    return body
    except (OSError, UnicodeDecodeError):
        return ""
    return ""


def write_build_file(directory: Path, text: str, *, force: bool) -> Path:
    """Write ``directory/build.envd`` atomically; refuse to replace one unless ``force``."""
    from envd_core.atomic import write_atomic

    if not directory.is_dir():
        raise ValidationError(
            f"`{directory}` is not a directory; create it or point --path at the project")
    target = directory / "build.envd"
    if target.exists() and not force:
        raise ValidationError(
            f"`{target}` already exists; use --force to overwrite it, or run `envd up` to "
            "start the environment it describes")
    write_atomic(target, text.encode(), mode=0o644)
    return target
