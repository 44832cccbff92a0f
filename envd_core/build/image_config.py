"""The OCI image config (and upstream's ``ai.tensorchord.envd.*`` labels) for a build graph.

BuildKit attaches this JSON to the result as ``containerimage.config``; the Docker runner and
envd-server read the labels back (ports, container name, runtime graph), so names and JSON
shapes follow upstream envd exactly where upstream defines them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from envd_core.build.graph import JUPYTER_PORT, RSTUDIO_PORT, SSH_PORT, BuildGraph

DEFAULT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
SYNTAX_VERSION = "v1"

LABEL_PREFIX = "ai.tensorchord.envd."
LABEL_VENDOR = LABEL_PREFIX + "vendor"
LABEL_CONTAINER_NAME = LABEL_PREFIX + "container.name"
LABEL_GPU = LABEL_PREFIX + "gpu"
LABEL_CUDA = LABEL_PREFIX + "gpu.cuda"
LABEL_CUDNN = LABEL_PREFIX + "gpu.cudnn"
LABEL_REPO = LABEL_PREFIX + "repo"
LABEL_PORTS = LABEL_PREFIX + "ports"
LABEL_APT = LABEL_PREFIX + "apt.packages"
LABEL_PYPI = LABEL_PREFIX + "pypi.commands"
LABEL_R = LABEL_PREFIX + "r.packages"
LABEL_CONTEXT = LABEL_PREFIX + "build.context"
LABEL_DIGEST = LABEL_PREFIX + "build.digest"
LABEL_SYNTAX = LABEL_PREFIX + "syntax.version"
LABEL_RUNTIME_GRAPH = LABEL_PREFIX + "graph.runtime"
LABEL_GENERAL_GRAPH = LABEL_PREFIX + "graph.general"
VENDOR_ENVD = "envd"


def go_json(value: Any) -> str:
    """JSON as Go's ``encoding/json`` writes it: compact, with ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def runtime_graph_json(graph: BuildGraph) -> str:
    """The runtime part of the graph with upstream's JSON keys (``RuntimeGraph`` in Go)."""
    rt = graph.runtime
    data: dict[str, Any] = {}
    if rt.commands:
        data["commands"] = dict(rt.commands)
    if rt.daemon:
        data["daemon"] = rt.daemon
    if rt.init:
        data["init_script"] = rt.init
    if rt.environ:
        data["environ"] = dict(rt.environ)
    if rt.env_paths:
        data["env_paths"] = rt.env_paths
    if rt.expose:
        # Upstream's ExposeItem has no json tags: Go field names are the keys.
        data["expose"] = [
            {"EnvdPort": e.envd_port, "HostPort": e.host_port, "ServiceName": e.service,
             "ListeningAddr": e.listen_addr}
            for e in rt.expose
        ]
    return go_json(data)


def ports(graph: BuildGraph) -> list[dict[str, Any]]:
    """Upstream's ports label: ssh always, jupyter/rstudio when enabled, then exposed ports."""
    out: list[dict[str, Any]] = [{"name": "ssh", "port": SSH_PORT}]
    if graph.jupyter is not None:
        out.append({"name": "jupyter", "port": JUPYTER_PORT})
    if graph.rstudio_server:
        out.append({"name": "rstudio-server", "port": RSTUDIO_PORT})
    out.extend({"name": e.service, "port": e.envd_port} for e in graph.runtime.expose)
    return out


def labels(graph: BuildGraph, *, environment_name: str) -> dict[str, str]:
    """All image labels: upstream's ``ai.tensorchord.envd.*`` set plus the user's own."""
    out: dict[str, str] = {
        LABEL_SYNTAX: SYNTAX_VERSION,
        LABEL_APT: go_json(graph.apt_packages),
        LABEL_PYPI: go_json(graph.python_commands()),
        LABEL_R: go_json([graph.r_packages] if graph.r_packages else []),
        LABEL_VENDOR: VENDOR_ENVD,
        LABEL_RUNTIME_GRAPH: runtime_graph_json(graph),
        LABEL_GENERAL_GRAPH: graph.to_json(),
        LABEL_PORTS: go_json(ports(graph)),
        LABEL_REPO: go_json({k: v for k, v in (("url", graph.repo.url),
                                               ("description", graph.repo.description)) if v}),
        LABEL_CONTAINER_NAME: environment_name,
        LABEL_DIGEST: graph.digest(),
    }
    if graph.cuda is not None:
        out[LABEL_GPU] = "true"
        out[LABEL_CUDA] = graph.cuda
        out[LABEL_CUDNN] = graph.cudnn
    out.update(graph.labels)
    return out


def exposed_ports(graph: BuildGraph) -> dict[str, dict[str, Any]]:
    """``ExposedPorts``: like upstream, only dev images expose ports."""
    if not graph.dev:
        return {}
    return {f"{p['port']}/tcp": {} for p in ports(graph)}


def env_list(
    graph: BuildGraph, path_prefix: Sequence[str] = (), extra_env: Mapping[str, str] | None = None
) -> list[str]:
    """``Env``: the user's variables (sorted, PATH excluded) and one PATH entry last.

    PATH = ``extra_path`` entries, then ``path_prefix`` (tool directories the compiler added,
    e.g. the venv), then the standard system PATH. ``extra_env`` (the compiler's variables, e.g.
    ``VIRTUAL_ENV``) is overridden by the user's ``runtime.environ``.
    """
    merged = {**(extra_env or {}), **graph.runtime.environ}
    env = [f"{k}={v}" for k, v in sorted(merged.items()) if k != "PATH"]
    parts: list[str] = []
    for entry in [*graph.runtime.env_paths, *path_prefix, *DEFAULT_PATH]:
        if entry and entry not in parts:
            parts.append(entry)
    env.append("PATH=" + ":".join(parts))
    return env


def image_config(
    graph: BuildGraph,
    *,
    platform: str = "linux/amd64",
    environment_name: str = "",
    path_prefix: Sequence[str] = (),
    working_dir: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The OCI image config as a dict (serialise with :func:`go_json`)."""
    os_, arch, *rest = platform.split("/")
    cfg: dict[str, Any] = {"Env": env_list(graph, path_prefix, extra_env)}
    user = graph.user
    if graph.owner_uid is not None:
        user = f"{graph.owner_uid}:{graph.owner_gid}"
    if user:
        cfg["User"] = user
    exposed = exposed_ports(graph)
    if exposed:
        cfg["ExposedPorts"] = exposed
    if graph.entrypoint:
        cfg["Entrypoint"] = list(graph.entrypoint)
    wd = working_dir if working_dir is not None else graph.working_dir
    if wd:
        cfg["WorkingDir"] = wd
    cfg["Labels"] = labels(graph, environment_name=environment_name)
    out: dict[str, Any] = {"architecture": arch, "os": os_}
    if rest:
        out["variant"] = rest[0]
    out["config"] = cfg
    out["rootfs"] = {"type": "layers", "diff_ids": []}
    return out
