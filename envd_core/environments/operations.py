"""What ``envd up/run/down/envs/exec/top/images`` do, through the runner contract only.

The CLI parses flags and renders; everything it decides lives here, so any runner type
(Docker, envd-server, a vendor's) gets the same behaviour.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from envd_core import timings
from envd_core.builder import Builder
from envd_core.environment import Environment, EnvironmentStatus, ImageInfo
from envd_core.environments.hostkeys import HostKey, HostKeys
from envd_core.environments.names import (
    LABEL_APT,
    LABEL_CONTEXT,
    LABEL_CUDA,
    LABEL_CUDNN,
    LABEL_GENERAL_GRAPH,
    LABEL_GPU,
    LABEL_PYPI,
    LABEL_RUNTIME_GRAPH,
    LABEL_VENDOR,
    VENDOR_ENVD,
    label_json,
    ssh_host,
)
from envd_core.environments.spec import LaunchOptions, build_spec, is_dev_image
from envd_core.environments.sshconfig import SSHConfig
from envd_core.environments.waiting import Background, ssh_answers, wait_running, wait_ssh
from envd_core.errors import RunnerError, ValidationError
from envd_core.runner import EnvironmentExistsError, EnvironmentNotFoundError, Runner

__all__ = [
    "Background",
    "check_pair",
    "check_replaceable",
    "default_host_keys",
    "describe_rows",
    "find_image",
    "image_row",
    "launch",
    "remove_environment",
    "shell_argv",
    "ssh_answers",
    "wait_running",
    "wait_ssh",
]


# -- before a build -------------------------------------------------------------------------
def check_pair(builder: Builder, runner: Runner, *, timeout: float = 5.0) -> None:
    """Fail in one line, before building, when this builder's output cannot reach this runner.

    The runner must answer; and the image must land where the runner runs it: a builder that
    exports into dockerd (``moby``) pairs with the Docker runner, any other builder needs a
    runner that can load a docker-format tarball.
    """
    status = runner.status(timeout=timeout)
    if not status.reachable:
        raise RunnerError(
            f"runner `{runner.name}` is not reachable: {status.error or 'no answer'}",
            hint="start it, or use a context whose runner is up (`envd context ls --status`)",
        )
    if runner.pulls_images:
        # `up` pushes the build to a registry the runner pulls from (upstream's envd-server)
        if "image" not in builder.exporters and not builder.can_push:
            raise ValidationError(
                f"runner `{runner.name}` pulls images from a registry, and builder "
                f"`{builder.name}` cannot push",
                hint="use a builder that can push (e.g. `tcp`)",
            )
        return
    if "moby" in builder.exporters:
        if runner.name != "docker":
            raise ValidationError(
                f"builder `{builder.name}` puts images into dockerd, which runner "
                f"`{runner.name}` does not run from",
                hint="use a builder that can export a tarball or push (e.g. `tcp`)",
            )
        return
    if not runner.can_load_images:
        raise ValidationError(
            f"runner `{runner.name}` cannot load images built by builder `{builder.name}`",
            hint="use a context whose runner can load images (e.g. `docker`)",
        )


# -- images ---------------------------------------------------------------------------------
def _candidates(ref: str) -> set[str]:
    """The spellings Docker may list a reference under (``name`` means ``name:latest``)."""
    last = ref.rsplit("/", 1)[-1]
    full = ref if (":" in last or "@" in last) else f"{ref}:latest"
    out = {ref, full}
    for prefix in ("docker.io/library/", "docker.io/"):
        if full.startswith(prefix):
            out.add(full[len(prefix):])
    return out


def match_image(images: list[ImageInfo], ref: str) -> ImageInfo | None:
    """The image of ``images`` that ``ref`` names (a tag in any spelling, or an id prefix)."""
    wanted = _candidates(ref)
    hex_id = ref.removeprefix("sha256:").lower()
    by_id = len(hex_id) >= 12 and all(c in "0123456789abcdef" for c in hex_id)
    for image in images:
        if wanted.intersection(image.tags) or image.id == ref or (
            by_id and image.id.removeprefix("sha256:").startswith(hex_id)
        ):
            return image
    return None


def find_image(runner: Runner, ref: str) -> ImageInfo | None:
    """The image ``ref`` in the runner's store, or ``None`` (also when the runner cannot list)."""
    if not runner.can_manage_images:
        return None
    return runner.find_image(ref)


def envd_images(runner: Runner) -> list[ImageInfo]:
    """The images envd built (upstream lists those with ``vendor=envd``)."""
    return [i for i in runner.images() if i.labels.get(LABEL_VENDOR) == VENDOR_ENVD]


def _human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}TB"


def human_duration(seconds: float) -> str:
    """How long ago, in the words of docker's ``HumanDuration`` (upstream's ``created``)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _ago(when: dt.datetime | None) -> str:
    if when is None:
        return "-"
    return human_duration((dt.datetime.now(dt.timezone.utc) - when).total_seconds())


def image_row(image: ImageInfo) -> dict[str, Any]:
    """Upstream's ``images ls`` JSON keys (``endpoint`` holds the build context)."""
    labels = image.labels
    row: dict[str, Any] = {
        "name": image.tags[0] if image.tags else "<none>:<none>",
        "endpoint": labels.get(LABEL_CONTEXT) or None,
        "gpu": labels.get(LABEL_GPU) == "true",
        "cuda": labels.get(LABEL_CUDA) or None,
        "cudnn": labels.get(LABEL_CUDNN) or None,
        "image_id": image.id.split(":")[-1][:12],
        "created": _ago(image.created),
        "size": _human_size(image.size_bytes),
    }
    return {k: v for k, v in row.items() if v is not None}


def dependencies(labels: Mapping[str, str]) -> list[dict[str, str]]:
    """Python and APT packages from the image labels (``describe``)."""
    out: list[dict[str, str]] = []
    for command in label_json(labels, LABEL_PYPI) or []:
        for name in str(command).split():
            out.append({"name": name, "type": "Python"})
    for name in label_json(labels, LABEL_APT) or []:
        out.append({"name": str(name), "type": "APT"})
    return out


# -- environments ---------------------------------------------------------------------------
def describe_rows(environment: Environment) -> dict[str, Any]:
    """``envs describe``: the published ports and the dependencies, upstream's JSON shape."""
    ports = [{
        "name": p.service or "",
        "container_port": str(p.container_port),
        "protocol": p.protocol,
        "host_ip": p.host_ip,
        "host_port": str(p.host_port),
    } for p in environment.ports]
    return {"ports": ports, "dependencies": dependencies(environment.labels)}


def runtime_commands(environment: Environment) -> dict[str, str]:
    """``runtime.command(commands={...})`` of the image the environment runs."""
    graph = label_json(environment.labels, LABEL_RUNTIME_GRAPH)
    commands = graph.get("commands") if isinstance(graph, dict) else None
    return {str(k): str(v) for k, v in (commands or {}).items()}


def shell_argv(environment: Environment) -> list[str]:
    """The shell to attach with: the build file's ``shell()`` if any, else bash, else sh."""
    general = label_json(environment.labels, LABEL_GENERAL_GRAPH)
    wanted = str(general.get("Shell") or "") if isinstance(general, dict) else ""
    first = wanted if wanted and wanted.isidentifier() else "bash"
    script = (f"if command -v {first} >/dev/null 2>&1; then exec {first}; "
              "elif command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi")
    return ["/bin/sh", "-c", script]


def check_replaceable(runner: Runner, name: str, *, force: bool) -> bool:
    """Whether ``name`` exists and may be replaced; a live one without ``force`` is an error.

    As upstream: an existing environment is removed first, a running one only with ``--force``.
    ``up`` calls this before building, so a refusal costs no build.
    """
    try:
        existing = runner.inspect(name)
    except EnvironmentNotFoundError:
        return False
    if existing.status in (EnvironmentStatus.RUNNING, EnvironmentStatus.PAUSED,
                           EnvironmentStatus.RESTARTING) and not force:
        raise EnvironmentExistsError(
            f"environment `{name}` is already {existing.status.value}",
            hint=f"replace it with --force, or remove it first (envd down --name {name})",
        )
    return True


def launch(
    runner: Runner,
    options: LaunchOptions,
    *,
    force: bool,
    timeout: float,
    ssh_config: SSHConfig | None,
    identity_file: Path | None,
    ssh_alias: str | None = None,
    image_labels: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    host_keys: HostKeys | None = None,
) -> Environment:
    """Create the environment of ``options`` and wait for it; write its SSH entry.

    A dev image (``base(dev=True)``) is waited for until its SSH server greets, within the same
    ``timeout``; ``progress`` receives a line now and then while that takes.

    As upstream: an existing environment of that name is replaced when it is not running, and a
    running one only with ``force``. The name is tried first (one request when it is free) and
    an existing environment looked at only when the runner refuses it. The SSH entry (``<ssh_alias
    or name>.envd``) is written once the environment runs, while its SSH server starts, so a
    failed start never touches ``~/.ssh/config``. With ``host_keys`` and a runner that
    :attr:`~envd_core.runner.Runner.accepts_host_key`, a dev environment gets its own host key
    (kept across re-creations, new with ``force``), recorded in envd's known_hosts file, and the
    entry checks it strictly. ``image_labels`` are the labels of an image just built (``up``):
    the image is then not looked up (it was just exported into, loaded into or confirmed in the
    runner's store, and a runner that pulls from a registry cannot be asked); the project
    directory is mounted only where the runner supports mounts (envd-server syncs it instead,
    ``up --sync``).
    """
    import attrs

    labels: Mapping[str, str] = image_labels or {}
    # labels from the build (``up``) are the image's: the image was just built into, loaded
    # into or confirmed in the runner's store, so looking it up again would only repeat that
    if image_labels is None:
        image = find_image(runner, options.image) if not runner.pulls_images else None
        if image is None and runner.can_manage_images and not runner.pulls_images:
            raise RunnerError(
                f"image `{options.image}` is not in runner `{runner.name}`'s image store",
                hint="build it first (envd build / envd up), or pull it",
            )
        labels = image.labels if image else labels
    spec = build_spec(options, labels, mount_project=runner.supports_mounts)
    if runner.pulls_images and image_labels is None:
        # `run` of an image only the runner's registry knows: its labels are unknown, so keep
        # the image's own entrypoint rather than the keep-alive meant for entrypoint-less ones
        spec = attrs.evolve(spec, entrypoint=None, command=None)
    alias = ssh_host(ssh_alias or spec.name)
    dev = is_dev_image(labels)
    host_key: HostKey | None = None
    if host_keys is not None and ssh_config is not None and dev and runner.accepts_host_key:
        host_key = host_keys.ensure(spec.name, replace=force)
        spec = attrs.evolve(spec, host_key=str(host_key.path))
    elif host_keys is not None:
        host_keys.discard_prepared(spec.name)  # made early (HostKeys.prepare), not needed
    timings.mark("image lookup, host key")
    started = time.monotonic()
    environment = _create(runner, spec, force=force)
    timings.mark("create and start")
    if environment.status is not EnvironmentStatus.RUNNING:
        environment = wait_running(runner, spec.name, timeout)
    writers: list[Background] = []
    if ssh_config is not None and identity_file is not None:
        entry = runner.ssh_entry(environment, host=alias, identity_file=identity_file)
        if entry is not None and host_key is not None and host_keys is not None:
            entry = attrs.evolve(entry, known_hosts=str(host_keys.known_hosts))
        if entry is not None:
            # two small atomic writes (fsyncs) while the SSH server starts, not after it, and
            # side by side: the files are independent, and an fsync waits on the disk
            writers.append(Background(ssh_config.set, entry))
            if host_keys is not None:
                writers.append(Background(_write_known_host, host_keys, alias, host_key))
    try:
        if dev and environment.ssh is not None:
            wait_ssh(environment, timeout - (time.monotonic() - started), progress)
            timings.mark("ssh wait")
    finally:
        for writer in writers:
            writer.result()
        if writers:
            timings.mark("ssh entry write")
    return environment


def default_host_keys() -> HostKeys:
    """The host keys and known_hosts file of the envd config directory."""
    from envd_core.contexts.store import config_dir

    return HostKeys(config_dir())


def _create(runner: Runner, spec: Any, *, force: bool) -> Environment:
    """Create ``spec``; an existing environment of its name is replaced as
    :func:`check_replaceable` allows (asked only when the name is taken)."""
    if force:  # any existing environment may go: the runner replaces it in one call
        return runner.create(spec, replace=True)
    try:
        return runner.create(spec, replace=False)
    except EnvironmentExistsError:
        if not check_replaceable(runner, spec.name, force=force):
            raise
    return runner.create(spec, replace=True)


def _write_known_host(host_keys: HostKeys, alias: str, host_key: HostKey | None) -> None:
    if host_key is not None:
        host_keys.trust(alias, host_key)
    else:
        host_keys.forget(alias)  # e.g. the image is no dev image any more


def remove_environment(runner: Runner, name: str, ssh_config: SSHConfig | None,
                       host_keys: HostKeys | None = None) -> bool:
    """Remove ``name`` (even while it runs), its SSH entry, its host key and its known_hosts
    line; ``False`` if none of them existed. ``host_keys`` defaults to the envd config dir's
    when there is an ``ssh_config`` to clean (``envd down``).

    The SSH entry goes even when the environment is already gone (killed and removed by hand).
    """
    if host_keys is None and ssh_config is not None:
        host_keys = default_host_keys()
    existed = True
    try:
        runner.remove(name, force=True)
    except EnvironmentNotFoundError:
        existed = False
    if ssh_config is not None:
        removed = ssh_config.remove(ssh_host(name))
        existed = existed or removed
    if host_keys is not None:
        forgotten = host_keys.forget(ssh_host(name))
        deleted = host_keys.remove(name)
        existed = existed or forgotten or deleted
    return existed
