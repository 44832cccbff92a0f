"""Python at build time: which interpreter, and the pip steps, as upstream envd v1.3.4 builds them.

Upstream (``pkg/lang/ir/v1/python.go``) installs ``install.python(version)`` with micromamba into
``/opt/conda/envs/envd`` (``micromamba create -p /opt/conda/envs/envd -c defaults python=<v>``,
the binary copied from ``ghcr.io/mamba-org/micromamba``) and points ``python``/``pip`` at it with
``update-alternatives``. Then every ``install.python_packages(name=[...])`` call is one step,
``python -m pip install <entries joined by spaces>``, split into words like a shell would
(BuildKit's ``llb.Shlex``), in call order; requirements files and local wheels follow.

We do the same, with one shortcut: when the base image is known to ship the requested Python
minor version (``python:3.11-*``, Debian bookworm, Ubuntu 22.04 ...), the image's interpreter is
used in a venv instead of downloading another copy of the same version. The guess comes from the
image reference only, so the venv step re-checks the version and fails with one line if the image
disagrees. Any other case installs the requested version with micromamba, as upstream does; the
installer image and channel are configurable (:class:`PythonInstaller`), upstream's by default.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import attrs

from envd_core.envdfile.errors import UnsupportedBuildError
from envd_core.envdfile.graph import BuildGraph

if TYPE_CHECKING:
    from envd_core.buildkit import llb as llb_mod
    from envd_core.envdfile.compile import _Compiler

#: Upstream's default when install.python() gets no version, "" or "3".
PYTHON_VERSION_DEFAULT = "3.11"
VENV = "/opt/envd/venv"
CONDA_ENV = "/opt/conda/envs/envd"
MICROMAMBA_IMAGE = "ghcr.io/mamba-org/micromamba:2.3.3-debian12-slim"
MICROMAMBA_CHANNEL = "defaults"
MICROMAMBA_BIN_DIR = "/usr/local/bin"
CERT_DIR = "/etc/ssl/certs"
PIP_CACHE = "/root/.cache/pip"
CONTEXT_MOUNT = "/run/envd/context"

#: Python minor version shipped by well-known base images, by repository basename and tag.
_DISTRO_PYTHON = {
    "debian": {"bookworm": "3.11", "12": "3.11", "bullseye": "3.9", "11": "3.9",
               "trixie": "3.13", "13": "3.13", "buster": "3.7", "10": "3.7"},
    "ubuntu": {"22.04": "3.10", "jammy": "3.10", "24.04": "3.12", "noble": "3.12",
               "20.04": "3.8", "focal": "3.8", "18.04": "3.6", "bionic": "3.6"},
}
_PY_TAG_RE = re.compile(r"^(3\.\d+)(\.\d+)?(-|$)")
_CUDA_UBUNTU_RE = re.compile(r"-ubuntu(\d\d\.\d\d)$")


@attrs.define(frozen=True)
class PythonInstaller:
    """Where ``install.python(version)`` gets a Python the base image does not have.

    Defaults are upstream v1.3.4's; ``ENVD_MICROMAMBA_IMAGE`` / ``ENVD_PYTHON_CONDA_CHANNEL``
    override them (a mirror of the image, an offline channel).
    """

    image: str = attrs.field(
        factory=lambda: os.environ.get("ENVD_MICROMAMBA_IMAGE") or MICROMAMBA_IMAGE)
    channel: str = attrs.field(
        factory=lambda: os.environ.get("ENVD_PYTHON_CONDA_CHANNEL") or MICROMAMBA_CHANNEL)


def requested_version(graph: BuildGraph) -> str | None:
    """The Python version upstream would install, or None when install.python() is not called.

    Upstream's rule (``getAppropriatePythonVersion``): no version, ``""`` or ``"3"`` mean 3.11;
    ``3.x`` is taken as given; anything else is refused (install.python checks that already).
    """
    lang = graph.language("python")
    if lang is None:
        return None
    version = lang.version or ""
    if version in ("", "3"):
        return PYTHON_VERSION_DEFAULT
    return version


def image_python(ref: str) -> str | None:
    """The Python minor version a well-known base image ships, guessed from its reference."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    repo, _, tag = last.partition(":")
    tag = tag or "latest"
    if repo == "python":
        match = _PY_TAG_RE.match(tag)
        return match.group(1) if match else None
    if repo == "cuda":
        cuda = _CUDA_UBUNTU_RE.search(tag)
        return _DISTRO_PYTHON["ubuntu"].get(cuda.group(1)) if cuda else None
    for distro, versions in _DISTRO_PYTHON.items():
        if repo == distro:
            return versions.get(tag.split("-", 1)[0])
    return None


def uses_micromamba(graph: BuildGraph, image_ref: str) -> bool:
    """True when the requested Python must be installed (the image's is not that version)."""
    wanted = requested_version(graph)
    return wanted is not None and image_python(image_ref) != wanted


def pip_words(entries: Sequence[str]) -> list[str]:
    """One python_packages call's entries as pip arguments: joined by spaces, then split into
    words with shell quoting rules and ``#`` comments (what upstream's ``llb.Shlex`` does)."""
    try:
        return shlex.split(" ".join(entries), comments=True)
    except ValueError as exc:  # an unclosed quote
        raise UnsupportedBuildError(
            f"install.python_packages(name={list(entries)!r}): cannot split into pip "
            f"arguments ({exc}); close the quote"
        ) from None


def install_python(c: _Compiler, st: llb_mod.State) -> tuple[llb_mod.State, str]:
    """Provide the interpreter; return the new state and the ``python`` that pip steps use."""
    g = c.graph
    llb = c.llb
    wanted = requested_version(g)
    if wanted is not None and not re.fullmatch(r"3\.[0-9]+(\.[0-9]+)?", wanted):
        raise UnsupportedBuildError(
            f"install.python(version={wanted!r}): python version {wanted} is not supported; "
            "give a version such as '3.11'")
    if wanted is not None and g.conda is not None:
        from envd_core.envdfile.condasteps import CONDA_BIN, install_conda

        st = _alternatives(c, install_conda(c, st, wanted))
        c.path_prefix += [f"{CONDA_ENV}/bin", CONDA_BIN]
        st = st.with_env("PATH", f"{CONDA_ENV}/bin:{CONDA_BIN}:" + (st.get_env("PATH") or ""))
        return st, f"{CONDA_ENV}/bin/python"
    if wanted is not None and uses_micromamba(g, c.image_ref):
        inst = c.opts.python_installer
        mamba = llb.image(inst.image, platform=c.platform)
        st = st.mkdir(CERT_DIR)
        st = st.copy(mamba, f"{CERT_DIR}/ca-certificates.crt", CERT_DIR)
        st = st.copy(mamba, "/bin/micromamba", MICROMAMBA_BIN_DIR)
        create = (f"{MICROMAMBA_BIN_DIR}/micromamba create -p {CONDA_ENV} "
                  f"-c {inst.channel} python={wanted}")
        st = c.run(st, "", argv=["bash", "-c", create], network=True,
                   name=f"create envd python={wanted} (micromamba, {inst.channel})")
        st = c.run(st, "", argv=["rm", f"{MICROMAMBA_BIN_DIR}/micromamba"],
                   name="rm micromamba binary")
        st = _alternatives(c, st)
        c.path_prefix.append(f"{CONDA_ENV}/bin")
        st = st.with_env("PATH", f"{CONDA_ENV}/bin:" + (st.get_env("PATH") or ""))
        return st, f"{CONDA_ENV}/bin/python"
    venv = f"python3 -m venv {VENV}"
    name = f"create the Python venv {VENV}"
    if wanted is not None:
        venv = _version_check(wanted) + "\n" + venv
        name += f" (Python {wanted})"
    st = c.run(st, venv, name=name)
    c.path_prefix.append(f"{VENV}/bin")
    st = st.with_env("PATH", f"{VENV}/bin:" + (st.get_env("PATH") or ""))
    st = st.with_env("VIRTUAL_ENV", VENV)
    c.image_env["VIRTUAL_ENV"] = VENV
    return st, f"{VENV}/bin/python"


def _alternatives(c: _Compiler, st: llb_mod.State) -> llb_mod.State:
    """Point python/python3/pip/pip3 at the envd environment (upstream's compileAlternative)."""
    script = " && ".join(
        f"update-alternatives --install /usr/bin/{n} {n} {CONDA_ENV}/bin/{n} 1"
        for n in ("python", "python3", "pip", "pip3"))
    return c.run(st, script, name="update alternative python/python3/pip/pip3 to envd")


def pip_steps(c: _Compiler, st: llb_mod.State, python: str) -> llb_mod.State:
    """One pip step per python_packages call in call order, then requirements files, then each
    local wheel (upstream's order); jupyter and uv come last as their own calls."""
    g = c.graph
    llb = c.llb
    cache = llb.cache(PIP_CACHE, f"envd-pip-cache-{c.platform}")
    env = _pip_env(g)
    calls = [list(call) for call in g.python_packages]
    if g.jupyter is not None:
        calls.append(["jupyter"])  # upstream's compileJupyter appends it as its own call
    if g.uv_python is not None:
        calls.append(["uv"])
    base = [python, "-m", "pip", "install"]
    for call in calls:
        st = c.run(st, "", argv=base + pip_words(call), name="pip install " + " ".join(call),
                   network=True, env=env, mounts=[cache])
    for req in g.requirements_files:
        ctx = llb.bind(CONTEXT_MOUNT, c.context(include=[req]), readonly=True)
        st = c.run(st, "", argv=[*base, "-r", f"{CONTEXT_MOUNT}/{req}"],
                   name=f"pip install -r {req}", network=True, env=env, mounts=[cache, ctx])
    for wheel in g.local_wheels:
        ctx = llb.bind(CONTEXT_MOUNT, c.context(include=[wheel]), readonly=True)
        st = c.run(st, "", argv=[*base, f"{CONTEXT_MOUNT}/{wheel}"],
                   name=f"pip install {wheel}", network=True, env=env, mounts=[cache, ctx])
    return st


def _pip_env(g: BuildGraph) -> dict[str, str]:
    env: dict[str, str] = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if g.pip_index is not None:
        env["PIP_INDEX_URL"] = g.pip_index.url
        if g.pip_index.extra_url:
            env["PIP_EXTRA_INDEX_URL"] = g.pip_index.extra_url
        if g.pip_index.trust:
            hosts = {urlparse(u).hostname for u in (g.pip_index.url, g.pip_index.extra_url)}
            env["PIP_TRUSTED_HOST"] = " ".join(sorted(h for h in hosts if h))
    return env


def _version_check(wanted: str) -> str:
    """Shell that fails the venv step, saying why, when the image's Python is not ``wanted``.

    Only reached when the image reference says it ships ``wanted``; this guards the guess.
    """
    message = (
        f"install.python(version='{wanted}'): this image provides Python $have, not {wanted} "
        "as its name suggests; set ENVD_MICROMAMBA_IMAGE/a base image with that Python"
    )
    return (
        "have=$(python3 -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])') && "
        f'case "$have" in {wanted}|{wanted}.*) ;; *) echo "{message}" >&2; exit 1;; esac'
    )
