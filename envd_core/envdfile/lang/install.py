"""The ``install.*`` module of `build.envd` (upstream names, arguments and defaults)."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from typing import Any

from envd_core.envdfile.errors import BuildArgumentError
from envd_core.envdfile.graph import BuildGraph, CondaConfig

PYTHON_VERSION_DEFAULT = "3.11"


def python(graph: BuildGraph, version: str = PYTHON_VERSION_DEFAULT) -> None:
    """Install CPython ``version``: ``""``/``"3"`` mean 3.11, else ``3.x[.y]`` (as upstream)."""
    if version.startswith("2"):
        raise BuildArgumentError(
            f"`install.python` does not support Python 2 (got `{version}`); use 3.x"
        )
    if version not in ("", "3") and not re.fullmatch(r"3\.[0-9]+(\.[0-9]+)?", version):
        # upstream refuses these when compiling; here the call's position is known
        raise BuildArgumentError(
            f"`install.python` python version `{version}` is not supported; give one such "
            "as `3.11`"
        )
    graph.set_language("python", version)


def conda(graph: BuildGraph, use_mamba: bool = False) -> None:
    """Install conda (micromamba when ``use_mamba``)."""
    if graph.conda is None:
        graph.conda = CondaConfig()
    graph.conda.use_mamba = use_mamba


def uv(graph: BuildGraph, python_version: str = PYTHON_VERSION_DEFAULT) -> None:
    """Install uv and a uv-managed Python."""
    graph.uv_python = python_version


def pixi(graph: BuildGraph, use_pixi_mirror: bool = False, pypi_index: str | None = None) -> None:
    """Install pixi."""
    graph.extensions["pixi"] = {"use_pixi_mirror": use_pixi_mirror, "pypi_index": pypi_index}


def r_lang(graph: BuildGraph) -> None:
    """Install R."""
    graph.set_language("r", None)


def julia(graph: BuildGraph) -> None:
    """Install Julia."""
    graph.set_language("julia", None)


def rust(graph: BuildGraph, version: str | None = None) -> None:
    """Install Rust (``version`` empty: latest stable)."""
    graph.set_language("rust", version)


def go(graph: BuildGraph, version: str | None = None) -> None:
    """Install Go."""
    graph.set_language("go", version)


def nodejs(graph: BuildGraph, version: str | None = None) -> None:
    """Install Node.js."""
    graph.set_language("nodejs", version)


def codex(graph: BuildGraph, version: str | None = None) -> None:
    """Install the Codex coding agent (upstream's `install.codex`)."""
    graph.extensions.setdefault("code_agents", []).append({"name": "codex", "version": version})


def apt_packages(graph: BuildGraph, name: list[str] | None = None) -> None:
    """Install Debian/Ubuntu packages with apt (order kept; duplicates are dropped once the
    evaluation ends, in linear time, see ``dedupe_graph``)."""
    for pkg in name or []:
        pkg = pkg.strip()
        if not pkg:
            raise BuildArgumentError("`install.apt_packages` got an empty package name")
        graph.apt_packages.append(pkg)


def python_packages(
    graph: BuildGraph,
    name: list[str] | None = None,
    requirements: str = "",
    local_wheels: list[str] | None = None,
) -> None:
    """Install PyPI packages, a requirements file of the build context, and local wheels."""
    if name:
        entries = [n.strip() for n in name]
        try:  # pip gets the entries split into words (upstream's llb.Shlex); check that now
            shlex.split(" ".join(entries), comments=True)
        except ValueError as exc:
            raise BuildArgumentError(
                f"`install.python_packages` name {entries} cannot be split into pip arguments "
                f"({exc}); close the quote"
            ) from None
        graph.python_packages.append(entries)
    if local_wheels:
        for wheel in local_wheels:
            if not wheel.endswith(".whl"):
                raise BuildArgumentError(
                    f"`install.python_packages` local wheel `{wheel}` is not a .whl file"
                )
            graph.local_wheels.append(_in_context("local_wheels", wheel))
    if requirements:
        graph.requirements_files.append(_in_context("requirements", requirements))


def _in_context(argument: str, path: str) -> str:
    """``path`` as a file of the build context: pip reads it from the context mount, so an
    absolute path or one climbing out with ``..`` could never be found there."""
    normal = posixpath.normpath(path.strip())
    if path.strip().startswith("/") or normal == ".." or normal.startswith("../"):
        raise BuildArgumentError(
            f"`install.python_packages` {argument} `{path}` is outside the build context; "
            "give a path relative to the build context (copy the file into it first)"
        )
    return normal


def conda_packages(
    graph: BuildGraph,
    name: list[str] | None = None,
    channel: list[str] | None = None,
    env_file: str = "",
) -> None:
    """Install conda packages into the envd environment (after `install.conda()`, as upstream)."""
    if graph.conda is None:
        raise BuildArgumentError(
            "`install.conda_packages` cannot install conda packages when conda is not "
            "installed; call install.conda() (and install.python()) first"
        )
    graph.conda.packages.extend(name or [])
    graph.conda.channels.extend(channel or [])
    if env_file:
        graph.conda.env_file = env_file


def r_packages(graph: BuildGraph, name: list[str]) -> None:
    """Install CRAN packages."""
    if not name:
        raise BuildArgumentError("`install.r_packages` needs at least one package in `name`")
    graph.r_packages.extend(name)


def julia_packages(graph: BuildGraph, name: list[str]) -> None:
    """Install Julia packages."""
    if not name:
        raise BuildArgumentError("`install.julia_packages` needs at least one package in `name`")
    graph.julia_packages.append(list(name))


def cuda(graph: BuildGraph, version: str, cudnn: str = "8") -> None:
    """Use a CUDA base (``nvidia/cuda:<version>-cudnn<cudnn>-devel-...``)."""
    graph.cuda = version
    graph.cudnn = cudnn


def vscode_extensions(graph: BuildGraph, name: list[str]) -> None:
    """Install VS Code extensions (``publisher.extension[-version]``)."""
    for ext in name:
        if "." not in ext:
            raise BuildArgumentError(
                f"`install.vscode_extensions` name `{ext}` must look like `publisher.extension`"
            )
    graph.vscode_extensions.extend(name)


INSTALL: dict[str, Callable[..., Any]] = {
    "python": python,
    "conda": conda,
    "uv": uv,
    "pixi": pixi,
    "r_lang": r_lang,
    "julia": julia,
    "rust": rust,
    "go": go,
    "nodejs": nodejs,
    "codex": codex,
    "apt_packages": apt_packages,
    "python_packages": python_packages,
    "conda_packages": conda_packages,
    "r_packages": r_packages,
    "julia_packages": julia_packages,
    "cuda": cuda,
    "vscode_extensions": vscode_extensions,
}
