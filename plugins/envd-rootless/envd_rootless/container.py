"""Container mode: rootless BuildKit in Docker, as ``moby/buildkit:<v>-rootless`` runs it.

``rootlesskit buildkitd`` as user 1000 inside a container that gets no capability beyond
Docker's default set and is not privileged; its build steps are root only inside the user
namespace rootlesskit makes from the image's subordinate ids. What the container needs from the
engine and the kernel (measured on our CI VMs, kernel 6.x, cgroup v1, Docker 20.10):

- ``seccomp=unconfined``: Docker's default profile refuses ``unshare(CLONE_NEWUSER)`` to a
  process without CAP_SYS_ADMIN (rootlesskit then fails: ``fork/exec /proc/self/exe:
  operation not permitted``); ``apparmor=unconfined`` where AppArmor runs;
- an unmasked ``/proc`` (``systempaths=unconfined``), so that runc can mount ``/proc`` for each
  build step; without it a step fails, unless buildkitd runs with
  ``--oci-worker-no-process-sandbox`` (``process-sandbox=false``: steps then share the
  daemon's PID namespace);
- unprivileged user namespaces in the kernel (``user.max_user_namespaces`` > 0; on Ubuntu 24.04
  ``kernel.apparmor_restrict_unprivileged_userns=0``);
- ``newuidmap``/``newgidmap`` in the image with file capabilities, or setuid root plus
  CAP_SYS_ADMIN in the container: a setuid helper writing the namespace's map needs
  CAP_SYS_ADMIN over it, which an unprivileged container lacks.

The container itself is the docker-container builder's (``security=rootless``): the same
lifecycle, cache volume, stale detection and exec transport, so this module only maps the
rootless builder's options onto it. That builder comes from the ``envd-docker-container``
distribution (the ``container`` extra of ``envd-rootless``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from envd_core.errors import BuilderError, ErrorKind

if TYPE_CHECKING:
    from envd_core.builder import Builder

#: Upstream's rootless image of the BuildKit release we test against.
DEFAULT_IMAGE = "docker.io/moby/buildkit:v0.18.2-rootless"
NO_SANDBOX = "--oci-worker-no-process-sandbox"


def container_name(address: str) -> str:
    """The container of rootless daemon ``address`` (``envd_rootless_<address>``)."""
    return f"envd_rootless_{address}"


def container_options(options: Mapping[str, str]) -> dict[str, str]:
    """The docker-container builder's options for this rootless builder's options."""
    flags = (options.get("buildkitd-flags") or "").strip()
    sandbox = (options.get("process-sandbox") or "true").strip().lower()
    if sandbox in ("false", "0", "no", "off") and NO_SANDBOX not in flags.split():
        flags = f"{flags} {NO_SANDBOX}".strip()
    mapped = {"security": "rootless", "image": options.get("image") or DEFAULT_IMAGE,
              "cache-volume": options.get("cache-volume") or "auto"}
    for key in ("network", "config", "registry-config"):
        if options.get(key):
            mapped[key] = options[key]
    if flags:
        mapped["buildkitd-flags"] = flags
    return mapped


def delegate(address: str, options: Mapping[str, str]) -> Builder:
    """The docker-container builder that runs this rootless daemon's container."""
    try:
        from envd_docker_container import DockerContainerBuilder
    except ImportError:
        raise BuilderError(
            "the rootless builder's container mode needs the docker-container builder, which "
            "is not installed",
            kind=ErrorKind.UNSUPPORTED,
            hint="pip install 'envd-rootless[container]' (or envd-docker-container), or use "
                 "mode=process",
        ) from None
    return DockerContainerBuilder(container_name(address), container_options(options))
