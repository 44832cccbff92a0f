"""EnvironmentSpec → Docker container config, and Docker's inspect output → Environment.

Pure functions (no daemon), so the mapping is unit-tested on its own. The choices follow
upstream envd's Docker runner (``pkg/envd/docker.go``) where it has one: restart policy
``always``, ports on 127.0.0.1, GPUs as an ``nvidia`` device request with its default
capabilities, the ``ai.tensorchord.envd.*`` labels. One difference: ``cpus`` becomes
``NanoCpus`` (what ``docker run --cpus`` sends), where upstream sets ``CPUQuota = cpus*1e6``
against the default 100 ms period, which grants ten times the CPUs asked for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from envd_core.environment import (
    Endpoint,
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    PublishedPort,
)

__all__ = [
    "LABEL_NAME",
    "LABEL_SSH_PORT",
    "SSH_PORT",
    "container_config",
    "host_config",
    "to_environment",
]

#: Every container envd creates carries it; listing filters on it (upstream sets it too).
LABEL_NAME = "ai.tensorchord.envd.name"
#: The host port of the SSH server, as upstream writes it for `envd` clients.
LABEL_SSH_PORT = "ai.tensorchord.envd.ssh.port"
#: Where Jupyter and RStudio Server answer on the host (upstream's label names).
LABEL_JUPYTER_ADDRESS = "ai.tensorchord.envd.jupyter.address"
LABEL_RSTUDIO_ADDRESS = "ai.tensorchord.envd.rstudio.server.address"
ADDRESS_LABELS = {"jupyter": LABEL_JUPYTER_ADDRESS, "rstudio-server": LABEL_RSTUDIO_ADDRESS}
#: ``ai.tensorchord.envd.service.<service>=<port>/<proto>``: the service behind a port.
LABEL_SERVICE_PREFIX = "ai.tensorchord.envd.service."
#: The port envd's SSH server listens on inside an environment.
SSH_PORT = 2222
#: Where ``create`` puts the environment's host key (``EnvironmentSpec.host_key``) before the
#: start; ``/var/envd`` exists in every dev image. envd-sshd reads ``ENVD_HOST_KEY``.
HOST_KEY_PATH = "/var/envd/hostkey"
HOST_KEY_ENV = "ENVD_HOST_KEY"
RESTART_POLICY = {"Name": "always"}
GPU_DRIVER = "nvidia"


def labels_for(spec: EnvironmentSpec) -> dict[str, str]:
    """The spec's labels plus envd's own (name, services, the SSH port when it is fixed)."""
    labels = dict(spec.labels)
    labels[LABEL_NAME] = spec.name
    for port in spec.ports:
        if port.service:
            labels[LABEL_SERVICE_PREFIX + port.service] = f"{port.container_port}/{port.protocol}"
        if (port.service == "ssh" or port.container_port == SSH_PORT) and port.host_port:
            labels[LABEL_SSH_PORT] = str(port.host_port)
        if port.service in ADDRESS_LABELS and port.host_port:
            host = "127.0.0.1" if port.host_ip in ("", "0.0.0.0") else port.host_ip
            labels[ADDRESS_LABELS[port.service]] = f"http://{host}:{port.host_port}"
    return labels


def with_free_ports(spec: EnvironmentSpec) -> EnvironmentSpec:
    """``spec`` with a free host port for every port that asks for one (``host_port=None``).

    Chosen here rather than by Docker so the SSH port and the service addresses can be written
    into the container's labels, which are fixed at creation (upstream picks them the same way).
    Only meaningful when the daemon shares this host's ports: the caller checks that.
    """
    import socket

    import attrs

    ports = []
    for port in spec.ports:
        if port.host_port is None:
            kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
            try:
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind((port.host_ip or "0.0.0.0", 0))
                    port = attrs.evolve(port, host_port=sock.getsockname()[1])
            except OSError:
                pass  # an address this host lacks: Docker reports it clearly at start
        ports.append(port)
    return attrs.evolve(spec, ports=tuple(ports))


def container_config(spec: EnvironmentSpec) -> dict[str, Any]:
    """Keyword arguments of ``APIClient.create_container`` (the host config comes separately)."""
    config: dict[str, Any] = {
        "image": spec.image,
        "name": spec.name,
        "detach": True,
        "labels": labels_for(spec),
        "environment": {**spec.env, **({HOST_KEY_ENV: HOST_KEY_PATH} if spec.host_key else {})},
        "ports": [(p.container_port, p.protocol) for p in spec.ports],
    }
    if spec.command is not None:
        config["command"] = list(spec.command)
    if spec.entrypoint is not None:
        # an empty list clears the image's entrypoint (leaving the key out would keep it)
        config["entrypoint"] = list(spec.entrypoint)
    if spec.working_dir:
        config["working_dir"] = spec.working_dir
    if spec.user:
        config["user"] = spec.user
    return config


def host_config(spec: EnvironmentSpec) -> dict[str, Any]:
    """Keyword arguments of ``APIClient.create_host_config`` for ``spec``."""
    from docker.types import DeviceRequest, Mount

    res = spec.resources
    config: dict[str, Any] = {
        "restart_policy": dict(RESTART_POLICY),
        "port_bindings": {
            f"{p.container_port}/{p.protocol}": (p.host_ip, p.host_port) for p in spec.ports
        },
    }
    if spec.mounts:
        config["mounts"] = [
            Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ]
    if res.cpus is not None:
        config["nano_cpus"] = int(res.cpus * 1e9)
    if res.cpu_set is not None:
        config["cpuset_cpus"] = res.cpu_set
    if res.memory_bytes is not None:
        config["mem_limit"] = res.memory_bytes
    if res.shm_size_bytes is not None:
        config["shm_size"] = res.shm_size_bytes
    if res.gpus is not None:
        gpus = res.gpus
        count = -1 if gpus.count == "all" else (gpus.count or 0)
        request: dict[str, Any] = {
            "driver": GPU_DRIVER,
            "capabilities": [list(gpus.capabilities)],
        }
        if gpus.device_ids:
            request["device_ids"] = list(gpus.device_ids)
        else:
            request["count"] = count
        config["device_requests"] = [DeviceRequest(**request)]
    if spec.cap_add:
        config["cap_add"] = list(spec.cap_add)
    return config


def _parse_time(text: str | None) -> dt.datetime | None:
    """Docker's RFC 3339 time with nanoseconds (``2026-12-01T01:02:03.123456789Z``)."""
    if not text or text.startswith("0001-"):
        return None
    head, _, rest = text.partition(".")
    zone = ""
    if rest:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        head += "." + digits[:6]
    else:
        head, zone = text[:19], text[19:]
    zone = "+00:00" if zone in ("Z", "") else zone
    try:
        return dt.datetime.fromisoformat(head + zone)
    except ValueError:
        return None


def _services(labels: Mapping[str, str]) -> dict[str, str]:
    """``"8080/tcp" -> "web"`` from the service labels."""
    return {
        value: key[len(LABEL_SERVICE_PREFIX):]
        for key, value in labels.items() if key.startswith(LABEL_SERVICE_PREFIX)
    }


def to_environment(attrs: Mapping[str, Any], runner: str) -> Environment:
    """The :class:`Environment` of a container, from ``docker inspect``'s JSON."""
    config = attrs.get("Config") or {}
    labels = dict(config.get("Labels") or {})
    services = _services(labels)
    ports: list[PublishedPort] = []
    bound = ((attrs.get("NetworkSettings") or {}).get("Ports")) or {}
    for key, bindings in sorted(bound.items()):
        number, _, proto = key.partition("/")
        for binding in bindings or ():
            host_port = str(binding.get("HostPort") or "")
            if not host_port.isdigit():
                continue
            host_ip = binding.get("HostIp") or "0.0.0.0"
            if host_ip == "::":
                continue  # the IPv6 twin of a 0.0.0.0 binding: one entry per port is enough
            ports.append(PublishedPort(int(number), int(host_port), host_ip, proto or "tcp",
                                       services.get(key)))
    ssh = next((Endpoint(p.host_ip, p.host_port) for p in ports
                if p.service == "ssh" or (p.container_port == SSH_PORT and p.protocol == "tcp")),
               None)
    state = attrs.get("State") or {}
    return Environment(
        name=str(attrs.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        status=EnvironmentStatus.parse(state.get("Status")),
        runner=runner,
        id=str(attrs.get("Id", "")),
        created=_parse_time(attrs.get("Created")),
        ports=tuple(ports),
        labels=labels,
        ssh=ssh,
    )


def running_status(attrs: Mapping[str, Any]) -> EnvironmentStatus:
    """The status of a container from its inspect JSON."""
    return EnvironmentStatus.parse((attrs.get("State") or {}).get("Status"))
