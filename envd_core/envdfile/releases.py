"""Tools upstream envd v1.3.4 downloads from their releases: codex, pixi, Julia.

- ``install.codex`` (``ir/v1/agent.go``): the release tarball for the build machine's
  architecture is unpacked inside upstream's curl container
  (``ghcr.io/curl/curl-container/curl-multi:8.17.0``) and the binary copied to
  ``/usr/bin/codex``. Without a version upstream asks GitHub for the latest release while
  compiling and falls back to ``rust-v0.98.0`` when it cannot; evaluation here has no network
  access, so that fallback is what we use.
- ``install.pixi`` (``pixi.go``): pixi 0.62.2 the same way to ``/usr/bin/pixi``, plus
  ``/etc/pixi/config.toml`` for ``use_pixi_mirror`` / ``pypi_index``.
- ``install.julia`` (``julia.go``): Julia 1.10.10 (checksum-pinned) unpacked into
  ``/opt/julia``; upstream downloads it in the curl container, we let BuildKit download the same
  file. ``install.julia_packages``: one ``julia -e 'using Pkg; Pkg.add([...])'`` per call with
  ``JULIA_DEPOT_PATH=/opt/julia/user_packages``.

None of these hosts is reachable from this project's build machines: the steps are compared with
upstream's LLB (the side-by-side harness), not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envd_core.buildkit import llb as llb_mod
    from envd_core.envdfile.compile import _Compiler

CURL_IMAGE = "ghcr.io/curl/curl-container/curl-multi:8.17.0"
CODEX_DEFAULT_VERSION = "rust-v0.98.0"
PIXI_VERSION = "0.62.2"
PIXI_MIRROR = (
    '[mirrors]\n"https://conda.anaconda.org" = ["https://prefix.dev/"]\n'
    "# prefix.dev doesn't mirror conda-forge's label channels\n"
    "# pixi uses the longest matching prefix for the mirror\n"
    '"https://conda.anaconda.org/conda-forge/label" = [\n'
    '  "https://conda.anaconda.org/conda-forge/label",\n]'
)
JULIA_ROOT = "/opt/julia"
JULIA_BIN = "/opt/julia/bin"
JULIA_DEPOT = "/opt/julia/user_packages"
JULIA_URL = "https://julialang-s3.julialang.org/bin/linux/"
#: Upstream's pinned Julia 1.10.10 downloads, by BuildKit architecture.
JULIA_DOWNLOADS = {
    "amd64": (JULIA_URL + "x64/1.10/julia-1.10.10-linux-x86_64.tar.gz",
              "6a78a03a71c7ab792e8673dc5cedb918e037f081ceb58b50971dfb7c64c5bf81"),
    "arm64": (JULIA_URL + "aarch64/1.10/julia-1.10.10-linux-aarch64.tar.gz",
              "a4b157ed68da10471ea86acc05a0ab61c1a6931ee592a9b236be227d72da50ff"),
}


def _release_binary(c: _Compiler, st: llb_mod.State, download: str, prepare: str | None,
                    src: str, dest: str, label: str) -> llb_mod.State:
    """Download and unpack in upstream's curl container, then copy one file into ``st``."""
    builder = c.llb.image(CURL_IMAGE, platform=c.platform)
    builder = c.run(builder, "", argv=["sh", "-c", download], network=True,
                    name=f"download {label}")
    if prepare:
        builder = c.run(builder, "", argv=["sh", "-c", prepare], name=f"prepare {label}")
    return st.copy(builder, src, dest)


def install_pixi(c: _Compiler, st: llb_mod.State) -> llb_mod.State:
    """``install.pixi``: the binary, then its config file when a mirror or index is asked for."""
    pixi = c.graph.extensions.get("pixi")
    if pixi is None:
        return st
    download = ("wget -qO- https://github.com/prefix-dev/pixi/releases/download/"
                f"v{PIXI_VERSION}/pixi-$(uname -m)-unknown-linux-musl.tar.gz "
                "| tar -xz -C /tmp || exit 1")
    st = _release_binary(c, st, download, None, "/tmp/pixi", "/usr/bin/pixi",
                         f"pixi {PIXI_VERSION}")
    config = ""
    if pixi.get("use_pixi_mirror"):
        config += PIXI_MIRROR
    if pixi.get("pypi_index"):
        # upstream's template runs the two sections together; a newline keeps it valid TOML
        config += ("\n" if config else "") + f'[pypi-config]\nindex-url = "{pixi["pypi_index"]}"'
    if config:
        st = st.mkdir("/etc/pixi", mode=0o777)
        st = st.mkfile("/etc/pixi/config.toml", config, mode=0o755)
    return st


def install_julia(c: _Compiler, st: llb_mod.State) -> llb_mod.State:
    """``install.julia``: the pinned release unpacked into /opt/julia, on PATH."""
    if c.graph.language("julia") is None:
        return st
    arch = c.platform.split("/")[1] if "/" in c.platform else "amd64"
    url, sha = JULIA_DOWNLOADS.get(arch, JULIA_DOWNLOADS["amd64"])
    archive = c.llb.http(url, filename="julia.tar.gz", checksum="sha256:" + sha)
    st = st.copy(archive, "/julia.tar.gz", "/tmp/julia.tar.gz")
    st = st.mkdir(JULIA_ROOT)
    unpack = f"tar zxvf /tmp/julia.tar.gz --strip 1 -C {JULIA_ROOT} && rm /tmp/julia.tar.gz"
    st = c.run(st, "", argv=["bash", "-c", unpack],
               name=f"unpack julia archive under {JULIA_ROOT}")
    c.path_prefix.append(JULIA_BIN)
    return st.with_env("PATH", f"{JULIA_BIN}:" + (st.get_env("PATH") or ""))


def julia_packages(c: _Compiler, st: llb_mod.State) -> llb_mod.State:
    """``install.julia_packages``: one Pkg.add per call (only with install.julia, as upstream)."""
    g = c.graph
    if g.language("julia") is None or not g.julia_packages:
        return st
    st = st.mkdir(JULIA_DEPOT).with_env("JULIA_DEPOT_PATH", JULIA_DEPOT)
    c.image_env["JULIA_DEPOT_PATH"] = JULIA_DEPOT
    for call in g.julia_packages:
        quoted = '","'.join(call)
        st = c.run(st, "", argv=["julia", "-e", f'using Pkg; Pkg.add(["{quoted}"])'],
                   network=True, name="installing Julia packages: " + " ".join(call))
    return st


def install_agents(c: _Compiler, st: llb_mod.State) -> llb_mod.State:
    """Each ``install.codex`` call: the binary copied to ``/usr/bin/codex``."""
    agents: list[dict[str, Any]] = c.graph.extensions.get("code_agents", [])
    for agent in agents:
        if agent.get("name") != "codex":
            continue
        version = agent.get("version") or CODEX_DEFAULT_VERSION
        download = (
            "wget -qO- https://github.com/openai/codex/releases/download/"
            f"{version}/codex-$(uname -m)-unknown-linux-musl.tar.gz | tar -xz -C /tmp || exit 1")
        prepare = "mv /tmp/codex-$(uname -m)-unknown-linux-musl /tmp/codex"
        st = _release_binary(c, st, download, prepare, "/tmp/codex", "/usr/bin/codex",
                             f"codex {version}")
    return st
