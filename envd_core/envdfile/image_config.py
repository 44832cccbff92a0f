"""The OCI image config (and upstream's ``ai.tensorchord.envd.*`` labels) for a build graph.

BuildKit attaches this JSON to the result as ``containerimage.config``; the Docker runner and
envd-server read the labels back (ports, container name, runtime graph), so names and JSON
shapes follow upstream envd exactly where upstream defines them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from envd_core.envdfile.graph import JUPYTER_PORT, RSTUDIO_PORT, SSH_PORT, BuildGraph
from envd_core.environments.names import LABEL_APT as LABEL_APT
from envd_core.environments.names import LABEL_CONTEXT as LABEL_CONTEXT
from envd_core.environments.names import LABEL_CUDA as LABEL_CUDA
from envd_core.environments.names import LABEL_CUDNN as LABEL_CUDNN
from envd_core.environments.names import LABEL_GENERAL_GRAPH as LABEL_GENERAL_GRAPH
from envd_core.environments.names import LABEL_GPU as LABEL_GPU
from envd_core.environments.names import LABEL_PORTS as LABEL_PORTS
from envd_core.environments.names import LABEL_PREFIX as LABEL_PREFIX
from envd_core.environments.names import LABEL_PYPI as LABEL_PYPI
from envd_core.environments.names import LABEL_RUNTIME_GRAPH as LABEL_RUNTIME_GRAPH
from envd_core.environments.names import LABEL_VENDOR as LABEL_VENDOR
from envd_core.environments.names import VENDOR_ENVD as VENDOR_ENVD

DEFAULT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
SYNTAX_VERSION = "v1"

# The labels envd reads back from images and containers are defined once: the ones `envs ls`
# reads in envd_core.listing, the others in envd_core.environments.names (which re-exports the
# former). Only the labels nothing reads are defined here.
LABEL_CONTAINER_NAME = LABEL_PREFIX + "container.name"
LABEL_REPO = LABEL_PREFIX + "repo"
LABEL_R = LABEL_PREFIX + "r.packages"
LABEL_DIGEST = LABEL_PREFIX + "build.digest"
LABEL_SYNTAX = LABEL_PREFIX + "syntax.version"


def go_json(value: Any) -> str:
    """JSON as Go's ``encoding/json`` writes it: compact, with ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def env_paths(graph: BuildGraph, path_prefix: Sequence[str] = ()) -> list[str]:
    """The image's PATH entries in order, without duplicates.

    Upstream starts from the standard system PATH and appends ``runtime.environ(extra_path=)``
    after it. ``path_prefix`` (tool directories our compiler adds, e.g. the venv) goes first:
    the venv's ``python3`` must shadow the base image's ``/usr/local/bin/python3``.
    """
    # dict keys: first occurrence kept, linear in the number of entries
    return [e for e in dict.fromkeys([*path_prefix, *DEFAULT_PATH, *graph.runtime.env_paths]) if e]


def runtime_graph_dict(graph: BuildGraph, path_prefix: Sequence[str] = ()) -> dict[str, Any]:
    """The runtime part of the graph with upstream's JSON keys (``RuntimeGraph`` in Go).

    ``env_paths`` is the full PATH (upstream's runner rebuilds PATH from it when it starts an
    environment). ``environ`` holds the user's variables only: upstream also copies the base
    image's Env (fetched from the registry) into it, which our compiler does not fetch.
    """
    rt = graph.runtime
    data: dict[str, Any] = {}
    if rt.commands:
        data["commands"] = dict(rt.commands)
    if rt.daemon:
        data["daemon"] = rt.daemon
    if rt.init:
        data["init_script"] = rt.init
    environ = {k: v for k, v in rt.environ.items() if k != "PATH"}
    if environ:
        data["environ"] = environ
    data["env_paths"] = env_paths(graph, path_prefix)
    if rt.expose:
        # Upstream's ExposeItem has no json tags: Go field names are the keys.
        data["expose"] = [
            {"EnvdPort": e.envd_port, "HostPort": e.host_port, "ServiceName": e.service,
             "ListeningAddr": e.listen_addr}
            for e in rt.expose
        ]
    return data


def runtime_graph_json(graph: BuildGraph, path_prefix: Sequence[str] = ()) -> str:
    """:func:`runtime_graph_dict` as Go would write it."""
    return go_json(runtime_graph_dict(graph, path_prefix))


def _lists_or_empty(items: Sequence[str]) -> list[list[str]]:
    # Upstream keeps one list per call; ours keeps one flat list (one call's worth).
    return [list(items)] if items else []


def general_graph_json(
    graph: BuildGraph,
    *,
    environment_name: str,
    context_dir: str,
    platform: str,
    path_prefix: Sequence[str] = (),
) -> str:
    """The whole graph in upstream's shape (``json.Marshal`` of Go's ``generalGraph``).

    Keys are Go field names in declaration order; embedded config structs are flattened the
    way Go flattens them (only when set). ``PublicKeyPath`` is empty: our builds do not bake
    a key path into the graph.
    """
    g = graph
    data: dict[str, Any] = {
        "Languages": [{"Name": lang.name, "Version": lang.version} for lang in g.languages]
        or None,
        "CodeAgents": None,
        "EnvdSyntaxVersion": SYNTAX_VERSION,
        "Image": g.image,
        "User": g.user,
        "Shell": g.shell,
        "Dev": g.dev,
        "CUDA": g.cuda,
        "CUDNN": g.cudnn or "8",
        "NumGPUs": g.gpu_count,
        "ShmSize": g.shm_size,
        "UbuntuAPTSource": "\n".join(g.apt_sources) or None,
        "CRANMirrorURL": g.cran_mirror or None,
        "JuliaPackageServer": g.julia_pkg_server or None,
        "PyPIIndexURL": g.pip_index.url if g.pip_index else None,
        "PyPIExtraIndexURL": (g.pip_index.extra_url or None) if g.pip_index else None,
        "PyPITrust": bool(g.pip_index and g.pip_index.trust),
        "PublicKeyPath": "",
        "PyPIPackages": [list(call) for call in g.python_packages],
        "RequirementsFile": g.requirements_files[0] if g.requirements_files else None,
        "PythonWheels": list(g.local_wheels) or None,
        "RPackages": _lists_or_empty(g.r_packages),
        "JuliaPackages": [list(call) for call in g.julia_packages],
        "SystemPackages": list(g.apt_packages),
        "VSCodePlugins": [_vscode_plugin(ext) for ext in g.vscode_extensions] or None,
        "UserDirectories": [],
        "Exec": [{"Commands": list(s.commands), "MountHost": s.mount_host}
                 for s in g.run_steps],
        "Copy": [{"Source": c.source, "Destination": c.target, "Image": c.image}
                 for c in g.copies] or None,
        "Mount": [{"Source": m.source, "Destination": m.destination}
                  for m in g.runtime.mounts] or None,
        "HTTP": [{"URL": h.url, "Checksum": h.checksum, "Filename": h.filename}
                 for h in g.downloads] or None,
        "Entrypoint": list(g.entrypoint) or None,
        "Repo": _repo(g),
    }
    if g.jupyter is not None:
        data.update({"Token": g.jupyter.token, "Port": g.jupyter.port})
    if g.git is not None:
        data.update({"Name": g.git.name, "Email": g.git.email, "Editor": g.git.editor})
    if g.conda is not None:
        data.update({"CondaPackages": list(g.conda.packages) or None,
                     "AdditionalChannels": list(g.conda.channels) or None,
                     "CondaChannel": g.conda.channel_config,
                     "CondaEnvFileName": g.conda.env_file,
                     "UseMicroMamba": g.conda.use_mamba})
    if g.uv_python is not None:
        data["PythonVersion"] = g.uv_python
    data.update({
        "EnvironmentName": environment_name,
        "EnvironmentPath": context_dir,
        "WorkingDir": g.working_dir,
        "DisableMergeOp": False,
        **runtime_graph_dict(g, path_prefix),
        "Platform": _platform(platform),
    })
    return go_json(data)


def _vscode_plugin(ext: str) -> dict[str, Any]:
    """``publisher.extension[-version]`` as upstream's ``vscode.Plugin``."""
    publisher, _, rest = ext.partition(".")
    extension, sep, version = rest.rpartition("-")
    if not sep or not version[:1].isdigit():
        extension, version = rest, ""
    return {"Publisher": publisher, "Extension": extension, "Platform": "",
            "Version": version or None}


def _repo(graph: BuildGraph) -> dict[str, str]:
    return {k: v for k, v in (("url", graph.repo.url), ("description", graph.repo.description))
            if v}


def _platform(platform: str) -> dict[str, str]:
    os_, arch, *rest = platform.split("/")
    out = {"architecture": arch, "os": os_}
    if rest:
        out["variant"] = rest[0]
    return out


def ports(graph: BuildGraph) -> list[dict[str, Any]]:
    """Upstream's ports label: ssh always, jupyter/rstudio when enabled, then exposed ports."""
    out: list[dict[str, Any]] = [{"name": "ssh", "port": SSH_PORT}]
    if graph.jupyter is not None:
        out.append({"name": "jupyter", "port": JUPYTER_PORT})
    if graph.rstudio_server:
        out.append({"name": "rstudio-server", "port": RSTUDIO_PORT})
    out.extend({"name": e.service, "port": e.envd_port} for e in graph.runtime.expose)
    return out


def labels(
    graph: BuildGraph,
    *,
    environment_name: str,
    context_dir: str = "",
    platform: str = "linux/amd64",
    path_prefix: Sequence[str] = (),
) -> dict[str, str]:
    """All image labels: upstream's ``ai.tensorchord.envd.*`` set plus the user's own.

    ``build.digest`` is ours (sha256 of the graph); upstream's is an md5 of a Go ``gob`` of its
    IR, which cannot be reproduced outside Go. Only its presence is shared.
    """
    out: dict[str, str] = {
        LABEL_SYNTAX: SYNTAX_VERSION,
        LABEL_APT: go_json(graph.apt_packages),
        LABEL_PYPI: go_json(graph.python_commands()),
        LABEL_R: go_json(_lists_or_empty(graph.r_packages)),
        LABEL_VENDOR: VENDOR_ENVD,
        LABEL_RUNTIME_GRAPH: runtime_graph_json(graph, path_prefix),
        LABEL_GENERAL_GRAPH: general_graph_json(
            graph, environment_name=environment_name, context_dir=context_dir,
            platform=platform, path_prefix=path_prefix),
        LABEL_PORTS: go_json(ports(graph)),
        LABEL_REPO: go_json(_repo(graph)),
        LABEL_CONTAINER_NAME: environment_name,
        LABEL_DIGEST: graph.digest(),
        LABEL_CONTEXT: context_dir,
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


#: Set like upstream (after the user's variables); a user's own value is kept.
LOCALE_ENV = (("LC_ALL", "C.UTF-8"), ("LANG", "C.UTF-8"))


def env_list(
    graph: BuildGraph, path_prefix: Sequence[str] = (), extra_env: Mapping[str, str] | None = None
) -> list[str]:
    """``Env``: the variables (sorted, PATH excluded), PATH, then upstream's locale variables.

    PATH is :func:`env_paths`. ``extra_env`` (the compiler's variables, e.g. ``VIRTUAL_ENV``)
    is overridden by the user's ``runtime.environ``.
    """
    merged = {**(extra_env or {}), **graph.runtime.environ}
    env = [f"{k}={v}" for k, v in sorted(merged.items()) if k != "PATH"]
    env.append("PATH=" + ":".join(env_paths(graph, path_prefix)))
    env += [f"{k}={v}" for k, v in LOCALE_ENV if k not in merged]
    return env


def image_config(
    graph: BuildGraph,
    *,
    platform: str = "linux/amd64",
    environment_name: str = "",
    path_prefix: Sequence[str] = (),
    working_dir: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    context_dir: str = "",
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
    cfg["Labels"] = labels(graph, environment_name=environment_name, context_dir=context_dir,
                           platform=platform, path_prefix=path_prefix)
    out: dict[str, Any] = {"architecture": arch, "os": os_}
    if rest:
        out["variant"] = rest[0]
    out["config"] = cfg
    out["rootfs"] = {"type": "layers", "diff_ids": []}
    return out
