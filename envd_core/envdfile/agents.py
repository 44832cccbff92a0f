"""Code agents (``install.codex``), as upstream envd v1.3.4 installs them (``ir/v1/agent.go``).

Upstream downloads the codex release tarball for the build machine's architecture inside a curl
container (``ghcr.io/curl/curl-container/curl-multi:8.17.0``), unpacks it and copies the binary
to ``/usr/bin/codex``. Without a version it asks GitHub for the latest release while compiling
and falls back to ``rust-v0.98.0`` when it cannot; evaluation here has no network access, so
that fallback is what we use. Neither the curl image nor GitHub is reachable from this project's
build machines: this is compared with upstream's LLB, not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envd_core.buildkit import llb as llb_mod
    from envd_core.envdfile.compile import _Compiler

CURL_IMAGE = "ghcr.io/curl/curl-container/curl-multi:8.17.0"
CODEX_DEFAULT_VERSION = "rust-v0.98.0"


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
        builder = c.llb.image(CURL_IMAGE, platform=c.platform)
        builder = c.run(builder, "", argv=["sh", "-c", download], network=True,
                        name=f"download codex {version}")
        builder = c.run(builder, "", argv=[
            "sh", "-c", "mv /tmp/codex-$(uname -m)-unknown-linux-musl /tmp/codex"],
            name=f"prepare codex {version}")
        st = st.copy(builder, "/tmp/codex", "/usr/bin/codex")
    return st
