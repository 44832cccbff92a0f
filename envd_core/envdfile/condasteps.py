"""Conda at build time, as upstream envd v1.3.4 builds it (``pkg/lang/ir/v1/conda.go``).

Upstream installs conda only on the way to Python: ``install.conda()`` changes how
``install.python()`` gets its interpreter, and does nothing without it.

- ``install.conda(use_mamba=True)``: micromamba, copied from its image to ``/opt/conda/bin``
  with a ``.mambarc`` (conda-forge), activate scripts, ``update-alternatives`` for ``conda`` and
  ``micromamba shell init``; ``MAMBA_ROOT_PREFIX``/``MAMBA_TARGET_PREFIX`` are set.
- ``install.conda()``: Miniconda (``py311_25.9.1-1``, checksum-pinned) installed with
  ``-b -u -p /opt/conda``, channel ``defaults``. Upstream downloads it in a curl container; we
  let BuildKit download it (an ``https://`` source with the same checksum): same file, no extra
  image.
- Then ``<conda> create -n envd python=<version>``, ``update-alternatives`` for
  python/python3/pip/pip3, pip steps, ``config.conda_channel`` written to
  ``/opt/conda/envs/envd/.condarc``, and one ``<conda> install -n envd [-c CH] PKGS`` (or
  ``update -n envd --file ENV_FILE``) with the build context mounted at the working directory
  and a cache on ``/opt/conda/pkgs``.

No conda channel, micromamba image or Miniconda download is reachable from this project's build
machines, so these steps are compared with upstream's LLB (the side-by-side harness), not built.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from envd_core.envdfile.graph import BuildGraph

if TYPE_CHECKING:
    from envd_core.buildkit import llb as llb_mod
    from envd_core.envdfile.compile import _Compiler

CONDA_ROOT = "/opt/conda"
CONDA_BIN = "/opt/conda/bin"
CONDA_ENV = "/opt/conda/envs/envd"
CERT_DIR = "/etc/ssl/certs"
MINICONDA_VERSION = "py311_25.9.1-1"
#: Upstream's pinned Miniconda checksums, by `uname -m`.
MINICONDA_SHA256 = {
    "x86_64": "238abad23f8d4d8ba89dd05df0b0079e278909a36e06955f12bbef4aa94e6131",
    "aarch64": "4e0723b9d76aa491cf22511dac36f4fdec373e41d2a243ff875e19b8df39bf94",
}
_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}

MAMBA_RC = "\nchannels:\n    - conda-forge\n"
MAMBA_ACTIVATE = ('\n#!/bin/sh\neval "$(/opt/conda/bin/micromamba shell hook --shell=bash)" '
                  '|| return $?\nmicromamba activate "$@"\n')
MAMBA_ACTIVATE_FISH = ("\n#!/usr/bin/fish\n/opt/conda/bin/micromamba shell hook --shell=fish "
                       "| source\nmicromamba activate $argv\n")
CONDA_ACTIVATE_FISH = "\n#!/usr/bin/fish\nconda activate $argv\n"
CONDA_RC = ("\ndefault_channels:\n  - https://conda.anaconda.org/conda-forge/\n\n"
            "channels:\n  - conda-forge\n")


def conda_command(graph: BuildGraph) -> str:
    """``/opt/conda/bin/micromamba`` or ``/opt/conda/bin/conda``."""
    assert graph.conda is not None
    return f"{CONDA_BIN}/micromamba" if graph.conda.use_mamba else f"{CONDA_BIN}/conda"


def miniconda_url(platform: str) -> tuple[str, str | None]:
    """The Miniconda installer URL and checksum for ``platform`` (``ENVD_MINICONDA_URL``
    overrides the URL, a mirror or a local server; its checksum is then not pinned)."""
    arch = _ARCH.get(platform.split("/")[1] if "/" in platform else platform, "x86_64")
    override = os.environ.get("ENVD_MINICONDA_URL")
    if override:
        return override, None
    url = f"https://repo.anaconda.com/miniconda/Miniconda3-{MINICONDA_VERSION}-Linux-{arch}.sh"
    return url, "sha256:" + MINICONDA_SHA256[arch]


def install_conda(c: _Compiler, st: llb_mod.State, version: str) -> llb_mod.State:
    """Conda (micromamba or Miniconda), then the ``envd`` environment with ``python=version``."""
    g = c.graph
    assert g.conda is not None
    llb = c.llb
    if g.conda.use_mamba:
        c.image_env.update({"MAMBA_ROOT_PREFIX": CONDA_ROOT, "MAMBA_TARGET_PREFIX": CONDA_ROOT})
        st = st.with_env("MAMBA_ROOT_PREFIX", CONDA_ROOT).with_env(
            "MAMBA_TARGET_PREFIX", CONDA_ROOT)
        mamba = llb.image(c.opts.python_installer.image, platform=c.platform)
        st = st.mkdir(CERT_DIR)
        st = st.copy(mamba, f"{CERT_DIR}/ca-certificates.crt", CERT_DIR)
        st = st.mkdir(CONDA_BIN)
        st = st.copy(mamba, "/bin/micromamba", CONDA_BIN)
        st = st.mkfile(f"{CONDA_ROOT}/.mambarc", MAMBA_RC)
        st = st.mkfile(f"{CONDA_BIN}/activate", MAMBA_ACTIVATE, mode=0o755)
        st = st.mkfile(f"{CONDA_BIN}/activate.fish", MAMBA_ACTIVATE_FISH, mode=0o755)
        st = c.run(st, "", argv=["update-alternatives", "--install", "/usr/bin/conda", "conda",
                                 f"{CONDA_BIN}/micromamba", "1"],
                   name="update alternative micromamba to conda")
        st = c.run(st, "", argv=["bash", "-c", f"{CONDA_BIN}/micromamba shell init --shell bash"],
                   name="init micromamba for bash")
        init = f"{CONDA_BIN}/micromamba shell init -s bash {CONDA_ROOT}"
    else:
        url, checksum = miniconda_url(c.platform)
        installer = llb.http(url, filename="miniconda.sh", checksum=checksum)
        st = st.copy(installer, "/miniconda.sh", "/tmp/miniconda.sh")
        st = st.mkdir(CONDA_ROOT)
        script = " && ".join([
            "set -euo pipefail",
            f"sh /tmp/miniconda.sh -b -u -p {CONDA_ROOT}",
            "touch ~/.bashrc",
            f'echo ". {CONDA_ROOT}/etc/profile.d/conda.sh" >> ~/.bashrc',
            'echo "conda activate base" >> ~/.bashrc',
            f'printf "channels:\\n  - defaults\\n" > {CONDA_ROOT}/.condarc',
            f"find {CONDA_ROOT}/ -follow -type f -name '*.a' -delete",
            f"find {CONDA_ROOT}/ -follow -type f -name '*.js.map' -delete",
            f"{CONDA_BIN}/conda clean -afy",
        ])
        st = c.run(st, "", argv=["bash", "-c", script], name="install conda", network=True)
        st = st.mkfile(f"{CONDA_BIN}/activate.fish", CONDA_ACTIVATE_FISH, mode=0o755)
        st = st.rm("/tmp/miniconda.sh")
        st = st.mkfile(f"{CONDA_ROOT}/.condarc", CONDA_RC)
        init = f"{CONDA_BIN}/conda init bash"
    st = c.run(st, "", argv=["bash", "-c", init], name="initialize conda bash environment")
    create = f"{conda_command(g)} create -n envd python={version}"
    return c.run(st, "", argv=["bash", "-c", create], network=True,
                 name=f"create conda environment: {create}")


def conda_packages(c: _Compiler, st: llb_mod.State, workdir: str) -> llb_mod.State:
    """``config.conda_channel`` then the conda packages or env file, after the pip steps."""
    g = c.graph
    assert g.conda is not None
    if g.conda.channel_config is not None:
        st = st.mkfile(f"{CONDA_ENV}/.condarc", g.conda.channel_config)
    if not g.conda.packages and not g.conda.env_file:
        return st
    conda = conda_command(g)
    if g.conda.env_file:
        argv = [conda, "update", "-n", "envd", "--file", g.conda.env_file]
        if not g.conda.use_mamba:
            argv.insert(1, "env")
    else:
        argv = [conda, "install", "-n", "envd"]
        for channel in g.conda.channels:
            argv += ["-c", channel]
        argv += g.conda.packages
    mounts = [c.llb.bind(workdir, c.context(), readonly=False),
              c.llb.cache(f"{CONDA_ROOT}/pkgs", f"envd-conda-pkgs-{c.platform}",
                          sharing="shared")]
    return c.run(st.with_env("MAMBA_ROOT_PREFIX", CONDA_ROOT), "", argv=argv,
                 name=" ".join(argv), network=True, mounts=mounts, cwd=workdir)
