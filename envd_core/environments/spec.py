"""``envd up``/``envd run`` flags plus the image's labels → an :class:`EnvironmentSpec`.

The choices are upstream envd's Docker runner's (``pkg/envd/docker.go``): the project mounted at
``/home/envd/<project>`` and used as working directory, ``--volume host:ctr`` with exactly one
``:``, shared memory 2048 MB unless told, SSH on container port 2222 published on ``--host``
(127.0.0.1), Jupyter (8888) and RStudio (8787) on 127.0.0.1, ``runtime.expose`` ports as
declared, GPUs when the image was built with ``config.gpu()`` unless ``--no-gpu``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from envd_core.environment import (
    DEFAULT_HOST_IP,
    EnvironmentSpec,
    GPURequest,
    Mount,
    PortMapping,
    Resources,
)
from envd_core.environments.names import (
    LABEL_GENERAL_GRAPH,
    LABEL_GPU,
    LABEL_PORTS,
    LABEL_RUNTIME_GRAPH,
    LABEL_VENDOR,
    VENDOR_ENVD,
    label_json,
    project_dir_in_environment,
)
from envd_core.errors import ValidationError

__all__ = [
    "KEEPALIVE",
    "LaunchOptions",
    "build_spec",
    "parse_gpu_set",
    "parse_memory",
    "parse_volume",
]

SSH_PORT = 2222
JUPYTER_PORT = 8888
RSTUDIO_PORT = 8787
DEFAULT_SHM_MB = 2048
MB = 1024 * 1024
#: PID 1 of an environment whose image has no entrypoint of its own: wait, and end at once on
#: `docker stop` (a plain `sleep` as PID 1 ignores SIGTERM and would be killed after 10 s).
KEEPALIVE = ("/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done")

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


@attrs.frozen
class LaunchOptions:
    """What the user asked ``up``/``run`` for (flags, not yet checked)."""

    name: str
    image: str
    project: Path | None = None
    volumes: tuple[str, ...] = ()
    host: str = DEFAULT_HOST_IP
    shm_size_mb: int = DEFAULT_SHM_MB
    cpus: float | None = None
    cpu_set: str | None = None
    memory: str | None = None
    gpus: int = 0
    gpu_set: str | None = None
    no_gpu: bool = False
    caps: tuple[str, ...] = ()


def parse_volume(text: str) -> Mount:
    """``--volume HOST:CONTAINER``: exactly one ``:``, an existing host path, absolute target."""
    parts = text.split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValidationError(
            f"invalid volume `{text}`: use HOST_PATH:CONTAINER_PATH with exactly one `:`",
            hint="e.g. --volume ~/data:/data",
        )
    source = os.path.abspath(os.path.expanduser(parts[0]))
    if not os.path.exists(source):
        raise ValidationError(
            f"invalid volume `{text}`: the host path `{source}` does not exist",
            hint="create it first, or fix the path",
        )
    if not parts[1].startswith("/"):
        raise ValidationError(
            f"invalid volume `{text}`: the container path `{parts[1]}` must be absolute"
        )
    return Mount(source=source, target=parts[1])


def parse_memory(text: str) -> int:
    """``512M``, ``2Gb``, ``1.5g``, ``1024``: bytes, binary units (docker's ``RAMInBytes``)."""
    match = _MEMORY_RE.match(text)
    if not match:
        raise ValidationError(f"invalid memory `{text}`: use a size such as 512M or 2G")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ValidationError(f"invalid memory `{text}`: must be more than 0")
    return int(value)


def parse_gpu_set(text: str) -> GPURequest:
    """``--gpu-set``: ``all``, ``count=N``, ``device=1,3`` (quoted or not), as ``docker --gpus``."""
    value = text.strip().strip("'\"")
    if value == "all":
        return GPURequest(count="all")
    key, sep, rest = value.partition("=")
    rest = rest.strip().strip("'\"")
    if sep and key == "count":
        if rest == "all":
            return GPURequest(count="all")
        if rest.isdigit():
            return GPURequest(count=int(rest))
    if sep and key == "device" and rest:
        return GPURequest(count=None, device_ids=tuple(d.strip() for d in rest.split(",")))
    if value.isdigit():
        return GPURequest(count=int(value))
    raise ValidationError(
        f"invalid --gpu-set `{text}`: use all, count=N or device=ID[,ID…]"
    )


def _gpus(options: LaunchOptions, labels: Mapping[str, str]) -> GPURequest | None:
    if options.no_gpu:
        return None
    if options.gpu_set:
        return parse_gpu_set(options.gpu_set)
    if options.gpus < 0:
        raise ValidationError(f"invalid --gpus `{options.gpus}`: must be 0 or more")
    if options.gpus:
        return GPURequest(count=options.gpus)
    if labels.get(LABEL_GPU) == "true":
        return GPURequest(count="all")  # built with config.gpu(): upstream passes every GPU
    return None


def _ports(options: LaunchOptions, labels: Mapping[str, str]) -> tuple[PortMapping, ...]:
    """SSH, Jupyter, RStudio from the ports label; ``runtime.expose`` from the runtime graph."""
    declared = label_json(labels, LABEL_PORTS)
    runtime = label_json(labels, LABEL_RUNTIME_GRAPH) or {}
    is_envd = labels.get(LABEL_VENDOR) == VENDOR_ENVD
    names = {str(p.get("name")): int(p.get("port", 0)) for p in declared or ()
             if isinstance(p, dict)}
    out: list[PortMapping] = []
    if is_envd or "ssh" in names:
        out.append(PortMapping(SSH_PORT, None, options.host, service="ssh"))
    if "jupyter" in names:
        out.append(PortMapping(names["jupyter"] or JUPYTER_PORT, None, service="jupyter"))
    if "rstudio-server" in names:
        out.append(PortMapping(RSTUDIO_PORT, None, service="rstudio-server"))
    taken = {p.container_port for p in out}
    for item in (runtime.get("expose") or []) if isinstance(runtime, dict) else []:
        port = int(item.get("EnvdPort") or 0)
        if not port or port in taken:
            continue
        taken.add(port)
        out.append(PortMapping(
            port, int(item.get("HostPort") or 0) or None,
            str(item.get("ListeningAddr") or DEFAULT_HOST_IP),
            service=str(item.get("ServiceName") or "") or None,
        ))
    return tuple(out)


def image_entrypoint(labels: Mapping[str, str]) -> list[str]:
    """The entrypoint the build file set (``config.entrypoint``), from envd's general graph."""
    general = label_json(labels, LABEL_GENERAL_GRAPH)
    if isinstance(general, dict):
        return [str(x) for x in general.get("Entrypoint") or []]
    return []


def runtime_mounts(labels: Mapping[str, str]) -> list[Mount]:
    """``runtime.mount(host_path, envd_path)`` of the build file, from envd's general graph."""
    general = label_json(labels, LABEL_GENERAL_GRAPH)
    out: list[Mount] = []
    for item in (general.get("Mount") or []) if isinstance(general, dict) else []:
        source = os.path.abspath(os.path.expanduser(str(item.get("Source") or "")))
        target = str(item.get("Destination") or "")
        if not os.path.exists(source):
            raise ValidationError(
                f"runtime.mount host path `{source}` does not exist",
                hint="create it, or change runtime.mount in build.envd",
            )
        out.append(Mount(source=source, target=target))
    return out


def start_script(labels: Mapping[str, str]) -> tuple[str, ...]:
    """PID 1 of an environment without an entrypoint of its own.

    Runs ``runtime.init`` commands once, in order, then starts each ``runtime.daemon`` in the
    background (its output goes to the environment's logs), then waits; ``docker stop`` ends it
    and its daemons at once.
    """
    import shlex

    runtime = label_json(labels, LABEL_RUNTIME_GRAPH)
    runtime = runtime if isinstance(runtime, dict) else {}
    lines = ["trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT"]
    for group in runtime.get("init_script") or []:
        for command in group if isinstance(group, list) else [group]:
            lines.append(f"sh -c {shlex.quote(str(command))} || "
                         "echo 'envd: runtime.init command failed: '"
                         f"{shlex.quote(str(command))} >&2")
    for argv in runtime.get("daemon") or []:
        if isinstance(argv, list) and argv:
            lines.append(" ".join(shlex.quote(str(a)) for a in argv) + " &")
    if len(lines) == 1:
        return KEEPALIVE
    lines.append("while :; do sleep 3600 & wait $!; done")
    return ("/bin/sh", "-c", "\n".join(lines))


def build_spec(options: LaunchOptions, image_labels: Mapping[str, str], *,
               mount_project: bool = True) -> EnvironmentSpec:
    """The spec ``up``/``run`` hand to the runner; every flag is checked here, before any call.

    ``mount_project=False`` (a runner without mounts, such as envd-server) keeps the working
    directory but mounts nothing there: the project is synced instead (``--sync``).
    """
    mounts = [parse_volume(v) for v in options.volumes] + runtime_mounts(image_labels)
    working_dir: str | None = None
    if options.project is not None:
        working_dir = project_dir_in_environment(options.project)
        if mount_project:
            mounts.append(Mount(source=str(options.project.resolve()), target=working_dir))
    if options.shm_size_mb <= 0:
        raise ValidationError(f"invalid --shm-size `{options.shm_size_mb}`: must be more than 0")
    resources = Resources(
        cpus=options.cpus,
        cpu_set=options.cpu_set or None,
        memory_bytes=parse_memory(options.memory) if options.memory else None,
        shm_size_bytes=options.shm_size_mb * MB,
        gpus=_gpus(options, image_labels),
    )
    extra: dict[str, Any] = {}
    if not image_entrypoint(image_labels):
        # no server of its own to keep it up (dev images get sshd + a supervisor later)
        extra = {"entrypoint": start_script(image_labels), "command": ()}
    return EnvironmentSpec(
        name=options.name,
        image=options.image,
        working_dir=working_dir,
        mounts=tuple(mounts),
        ports=_ports(options, image_labels),
        labels={LABEL_VENDOR: VENDOR_ENVD},
        resources=resources,
        cap_add=tuple(options.caps),
        **extra,
    )


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


def parse_duration(text: str) -> float:
    """``--timeout``: Go durations (``30s``, ``1m30s``, ``30m0s``) or plain seconds; in seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        for match in _DURATION_RE.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * scale[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise ValidationError(f"invalid duration `{text}`: use e.g. 30s, 5m or 1h30m") from None
    if seconds <= 0:
        raise ValidationError(f"invalid duration `{text}`: must be more than 0")
    return seconds
