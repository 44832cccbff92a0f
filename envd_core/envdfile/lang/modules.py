"""The ``config.*``, ``io.*``, ``runtime.*`` and ``data.*`` modules of `build.envd`."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

from envd_core.envdfile.errors import BuildArgumentError
from envd_core.envdfile.graph import (
    BuildGraph,
    CopyInfo,
    ExposeItem,
    HttpInfo,
    JupyterConfig,
    MountInfo,
    PipIndex,
    RepoInfo,
)

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?)?\s*$", re.IGNORECASE)
_CHECKSUM_RE = re.compile(r"^(sha256:)?[0-9a-f]{64}$")


# ---------------------------------------------------------------- config.*
def apt_source(graph: BuildGraph, source: str = "") -> None:
    """Replace the image's apt sources list with ``source`` (one-line format)."""
    if source:
        graph.apt_sources.append(source)


def pip_index(graph: BuildGraph, url: str, extra_url: str = "", trust: bool = False) -> None:
    """Use ``url`` as pip's index (``PIP_INDEX_URL``) while building; ``trust`` its host."""
    if not url.startswith(("http://", "https://", "file://")):
        raise BuildArgumentError(
            f"`config.pip_index` url `{url}` must start with http://, https:// or file://"
        )
    graph.pip_index = PipIndex(url=url, extra_url=extra_url, trust=trust)


def conda_channel(graph: BuildGraph, channel: str = "") -> None:
    """Write ``channel`` (a .condarc YAML text) as conda's channel configuration."""
    if graph.conda is None:
        raise BuildArgumentError(
            "`config.conda_channel` cannot configure conda when conda is not installed; call "
            "install.conda() first"
        )
    graph.conda.channel_config = channel


def cran_mirror(graph: BuildGraph, url: str = "") -> None:
    """Use ``url`` as the CRAN mirror."""
    graph.cran_mirror = url


def julia_pkg_server(graph: BuildGraph, url: str = "") -> None:
    """Use ``url`` as the Julia package server."""
    graph.julia_pkg_server = url


def jupyter(graph: BuildGraph, token: str = "", port: int = 8888) -> None:
    """Run Jupyter in the environment (needs Python; adds the jupyter port)."""
    _check_port("config.jupyter", "port", port)
    graph.jupyter = JupyterConfig(token=token, port=port)


def rstudio_server(graph: BuildGraph) -> None:
    """Run RStudio Server in the environment."""
    graph.rstudio_server = True


def gpu(graph: BuildGraph, count: int = 0) -> None:
    """Ask for ``count`` GPUs at run time (-1 for all)."""
    if count < -1:
        raise BuildArgumentError(f"`config.gpu` count must be -1 (all) or more, got `{count}`")
    graph.gpu_count = count


def shm_size(graph: BuildGraph, size: int | str) -> None:
    """Shared memory size at run time, in MB (an int) or with a unit (``"2g"``)."""
    if isinstance(size, int):
        if size < 0:
            raise BuildArgumentError(f"`config.shm_size` size must be positive, got `{size}`")
        graph.shm_size = size
        return
    match = _SIZE_RE.match(size)
    if not match:
        raise BuildArgumentError(
            f"`config.shm_size` size `{size}` is not a size; use MB as an int or e.g. `\"2g\"`"
        )
    factor = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    unit = (match.group(2) or "m")[0].lower()
    graph.shm_size = int(int(match.group(1)) * factor[unit])


def entrypoint(graph: BuildGraph, args: list[str]) -> None:
    """Add to the image entrypoint (non-dev images).

    Like upstream v1.3.4, a second call appends its arguments to the first call's.
    """
    graph.entrypoint.extend(args)


def repo(graph: BuildGraph, url: str, description: str = "") -> None:
    """Record the project repository in the image labels."""
    graph.repo = RepoInfo(url=url, description=description)


def owner(graph: BuildGraph, uid: int, gid: int) -> None:
    """Run the environment as ``uid:gid``."""
    for name, value in (("uid", uid), ("gid", gid)):
        if value < 0:
            raise BuildArgumentError(f"`config.owner` {name} must be 0 or more, got `{value}`")
    graph.owner_uid, graph.owner_gid = uid, gid


CONFIG: dict[str, Callable[..., Any]] = {
    "apt_source": apt_source, "pip_index": pip_index, "conda_channel": conda_channel,
    "cran_mirror": cran_mirror, "julia_pkg_server": julia_pkg_server, "jupyter": jupyter,
    "rstudio_server": rstudio_server, "gpu": gpu, "shm_size": shm_size,
    "entrypoint": entrypoint, "repo": repo, "owner": owner,
}


# ---------------------------------------------------------------- io.*
def copy(graph: BuildGraph, source: str, target: str, image: str = "") -> None:
    """Copy ``source`` (build context path, or a path inside ``image``) to ``target``."""
    if not source or not target:
        raise BuildArgumentError("`io.copy` needs a non-empty `source` and `target`")
    if not image:
        norm = posixpath.normpath(source.replace("\\", "/"))
        if norm.startswith("../") or norm == ".." or posixpath.isabs(norm):
            raise BuildArgumentError(
                f"`io.copy` source `{source}` is outside the build context; "
                "use a path relative to the build context"
            )
    graph.copies.append(CopyInfo(source=source, target=target, image=image))


def http(graph: BuildGraph, url: str, checksum: str = "", filename: str = "") -> None:
    """Download ``url`` into the image (``filename`` defaults to the URL's last part)."""
    if not url.startswith(("http://", "https://")):
        raise BuildArgumentError(f"`io.http` url `{url}` must start with http:// or https://")
    if checksum and not _CHECKSUM_RE.match(checksum):
        raise BuildArgumentError(
            f"`io.http` checksum `{checksum}` must be a sha256 hex digest (64 hex characters)"
        )
    if checksum and not checksum.startswith("sha256:"):
        checksum = "sha256:" + checksum
    name = filename or url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    graph.downloads.append(HttpInfo(url=url, checksum=checksum, filename=name))


IO: dict[str, Callable[..., Any]] = {"copy": copy, "http": http}


# ---------------------------------------------------------------- runtime.*
def command(graph: BuildGraph, commands: dict[str, str] | None = None) -> None:
    """Named commands runnable in the environment (``envd run --command NAME``)."""
    graph.runtime.commands.update(commands or {})


def daemon(graph: BuildGraph, commands: list[list[str]]) -> None:
    """Long-running processes started with the environment."""
    graph.runtime.daemon.extend([list(c) for c in commands])


def expose(
    graph: BuildGraph,
    envd_port: int,
    host_port: int = 0,
    service: str = "",
    listen_addr: str = "127.0.0.1",
) -> None:
    """Publish ``envd_port`` of the environment (on ``host_port``, 0 = random).

    ``listen_addr`` defaults to loopback, as upstream's does.
    """
    import ipaddress  # only build files that expose ports pay for it

    _check_port("runtime.expose", "envd_port", envd_port)
    try:
        ipaddress.ip_address(listen_addr)
    except ValueError:
        raise BuildArgumentError(
            f"`runtime.expose` listen_addr `{listen_addr}` is not an IP address; "
            "give one such as `127.0.0.1` or `0.0.0.0`") from None
    if host_port:
        _check_port("runtime.expose", "host_port", host_port)
    graph.runtime.expose.append(ExposeItem(envd_port, host_port, service, listen_addr))


def environ(
    graph: BuildGraph, env: dict[str, str] | None = None, extra_path: list[str] | None = None
) -> None:
    """Environment variables and extra PATH entries of the image."""
    for key in env or {}:
        if not key or "=" in key:
            raise BuildArgumentError(f"`runtime.environ` variable name `{key}` is not valid")
    graph.runtime.environ.update(env or {})
    graph.runtime.env_paths.extend(extra_path or [])


def mount(graph: BuildGraph, host_path: str = "", envd_path: str = "") -> None:
    """Bind-mount ``host_path`` at ``envd_path`` when the environment runs."""
    if not host_path or not envd_path:
        raise BuildArgumentError("`runtime.mount` needs both `host_path` and `envd_path`")
    graph.runtime.mounts.append(MountInfo(source=host_path, destination=envd_path))


def init(graph: BuildGraph, commands: list[str] | None = None) -> None:
    """Commands run once when the environment starts, before daemons."""
    if commands:
        graph.runtime.init.append(list(commands))


RUNTIME: dict[str, Callable[..., Any]] = {
    "command": command, "daemon": daemon, "expose": expose, "environ": environ,
    "mount": mount, "init": init,
}


# ---------------------------------------------------------------- data.*
def envd_data(graph: BuildGraph, name: str = "") -> str:
    """An envd-managed data source; returns the host path to use with `runtime.mount`."""
    if not name or "/" in name:
        raise BuildArgumentError(f"`data.envd` name `{name}` must be a non-empty simple name")
    graph.extensions.setdefault("data_sources", []).append(name)  # deduplicated at the end
    return f"~/.envd/data/{name}"


DATA: dict[str, Callable[..., Any]] = {"envd": envd_data}
DATA_PATHS = {"huggingface": "~/.cache/huggingface", "dgl": "~/.dgl"}


def _check_port(func: str, name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise BuildArgumentError(f"`{func}` {name} must be a port (1-65535), got `{port}`")
