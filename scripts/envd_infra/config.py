"""Where the infra keeps its state and which ports, versions and images it uses.

Everything is read from the environment once, at import: ``ENVD_INFRA_DIR`` (state dir) and
``ENVD_INFRA_PORT_OFFSET`` (a second, isolated instance shifts every TCP port by it; dockerd is
shared and never owned by such an instance), ``ENVD_INFRA_MIRROR`` (Debian mirror).
"""

from __future__ import annotations

import os
from pathlib import Path

STATE = Path(os.environ.get("ENVD_INFRA_DIR", "/var/lib/envd-infra")).resolve()
BIN, UPSTREAM_BIN = STATE / "bin", STATE / "bin" / "upstream"
LOGS, PIDS, CERTS, RUN = STATE / "logs", STATE / "pids", STATE / "certs", STATE / "run"

BUILDKIT_VERSION, ENVD_VERSION = "v0.18.2", "v1.3.4"
# The commit the v0.18.2 tag points at (git rev-parse 'v0.18.2^{commit}' in moby/buildkit);
# release builds stamp it as version.Revision, and the Info RPC reports it.
BUILDKIT_REVISION = "e4da654b1251f91e914fab18eba33743aefd7080"
# Commit and date of the v1.3.4 tag, as the Go proxy's @v/v1.3.4.info reports them.
ENVD_COMMIT, ENVD_DATE = "3cac99fd121961eae2ce0bb634a026891b8e77df", "2026-02-07T01:42:49Z"

DOCKER_SOCK = Path("/var/run/docker.sock")
PORT_OFFSET = int(os.environ.get("ENVD_INFRA_PORT_OFFSET", "0"))
REGISTRY, AUTH_REGISTRY = f"127.0.0.1:{5000 + PORT_OFFSET}", f"127.0.0.1:{5443 + PORT_OFFSET}"
AUTH_USER, AUTH_PASSWORD = "envd", "envd-infra-secret"
BUILDKIT_TCP = f"tcp://127.0.0.1:{1234 + PORT_OFFSET}"
BUILDKIT_MTLS = f"tcp://127.0.0.1:{1235 + PORT_OFFSET}"
BUILDKIT_UNIX = f"unix://{RUN / 'buildkitd.sock'}"
MTLS_SERVERNAME = "localhost"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
ROOTLESS_USER = "envd-rootless"
DEBIAN_MIRROR = os.environ.get("ENVD_INFRA_MIRROR", "http://deb.debian.org/debian")

IMAGES = {  # name -> (reference, docker import --change lines)
    "debian": (f"{REGISTRY}/debian:bookworm", ['CMD ["bash"]']),
    "busybox": (f"{REGISTRY}/busybox:latest", ['CMD ["sh"]']),
    "python": (f"{REGISTRY}/python:3.11-bookworm", ['CMD ["python3"]']),
}
# The python image plus this host's CA bundle, for peers that cannot mount a CA into build
# steps (upstream envd): pip then works through the TLS-intercepting proxy.
IMAGE_PYTHON_HOSTCA = f"{REGISTRY}/python-hostca:3.11-bookworm"
# dockerd is shared by every instance: a second instance must not retag the first one's image.
BUILDKIT_IMAGE = (f"envd-buildkit:{BUILDKIT_VERSION}" if not PORT_OFFSET
                  else f"envd-buildkit-{PORT_OFFSET}:{BUILDKIT_VERSION}")
BUILDKIT_IMAGE_REF = f"{REGISTRY}/moby/buildkit:{BUILDKIT_VERSION}"
# Upstream's SSH server for dev images, made like tensorchord/envd-sshd-from-scratch (Docker Hub,
# which is unreachable here): dev-image builds copy /usr/bin/envd-sshd from it.
SSHD_IMAGE_REF = f"{REGISTRY}/tensorchord/envd-sshd-from-scratch:{ENVD_VERSION}"
# The same binaries as moby/buildkit:<v>-rootless lays them out: rootlesskit, user 1000 with
# subordinate ids (the rootless builder's container mode runs it).
BUILDKIT_ROOTLESS_IMAGE = (f"envd-buildkit:{BUILDKIT_VERSION}-rootless" if not PORT_OFFSET
                           else f"envd-buildkit-{PORT_OFFSET}:{BUILDKIT_VERSION}-rootless")
BUILDKIT_ROOTLESS_IMAGE_REF = f"{REGISTRY}/moby/buildkit:{BUILDKIT_VERSION}-rootless"

APT_PACKAGES = [
    "docker.io", "docker-registry", "runc", "debootstrap", "busybox-static", "rootlesskit",
    "slirp4netns", "uidmap", "libcap2-bin", "apache2-utils", "openssl", "ca-certificates",
    "python3-venv",
    "openssh-client",  # the tests `ssh <name>.envd` into dev environments
]
PATH_ENV = f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GO_PATH_ENV = f"/usr/local/go/bin:{PATH_ENV}"
IMAGE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
