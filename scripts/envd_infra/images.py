"""The base images, made locally (no container registry is reachable): debootstrap or busybox
root filesystems, ``docker import`` with a recipe label, pushed to the plain registry."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from .config import (
    BIN,
    BUILDKIT_IMAGE,
    BUILDKIT_IMAGE_REF,
    BUILDKIT_REVISION,
    BUILDKIT_ROOTLESS_IMAGE,
    BUILDKIT_ROOTLESS_IMAGE_REF,
    BUILDKIT_VERSION,
    CA_BUNDLE,
    DEBIAN_MIRROR,
    IMAGE_PATH,
    IMAGE_PYTHON_HOSTCA,
    IMAGES,
    LOGS,
    STATE,
)
from .registries import in_registry
from .shell import quiet, run

RECIPE_LABEL = "org.envd-infra.recipe"
PYTHON_PACKAGES = ["python3", "python3-pip", "python3-venv", "python-is-python3",
                   "ca-certificates"]


def _debootstrap(rootfs: Path, *, log: Path, include: list[str]) -> None:
    cache = STATE / "cache" / "debootstrap"
    cache.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(rootfs, ignore_errors=True)
    argv = ["debootstrap", "--variant=minbase", f"--cache-dir={cache}"]
    if include:
        argv.append("--include=" + ",".join(include))
    run([*argv, "bookworm", str(rootfs), DEBIAN_MIRROR], log, timeout=900)
    # Image hygiene: no apt lists or downloaded debs, a resolv.conf the runtime replaces anyway.
    for sub in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for p in (rootfs / sub).glob("*"):
            if p.is_file():
                p.unlink()
    shutil.rmtree(rootfs / "var/log", ignore_errors=True)
    (rootfs / "var/log").mkdir()


def _busybox_rootfs(rootfs: Path) -> None:
    shutil.rmtree(rootfs, ignore_errors=True)
    for d in ("bin", "etc", "tmp", "root", "proc", "sys", "dev", "usr/bin", "var"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2("/bin/busybox", rootfs / "bin/busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")  # relative: valid inside the image
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\n")


def _copy_libs(rootfs: Path, binary: str) -> None:
    """The shared libraries ``binary`` links, at the same paths inside ``rootfs``."""
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        lib = [w for w in line.split() if w.startswith("/")]
        if lib:
            dest = rootfs / lib[0].lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(lib[0]).resolve(), dest)


def _buildkit_rootfs(rootfs: Path) -> None:
    """busybox + buildkitd/buildctl + Debian's runc and the shared libraries runc needs."""
    _busybox_rootfs(rootfs)
    for tool in ("buildkitd", "buildctl"):
        shutil.copy2(BIN / tool, rootfs / "usr/bin" / tool)
    shutil.copy2("/usr/sbin/runc", rootfs / "usr/bin/runc")
    _copy_libs(rootfs, "/usr/sbin/runc")
    for d in ("etc/buildkit", "var/lib/buildkit", "run"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)


ROOTLESS_UID = 1000


def _buildkit_rootless_rootfs(rootfs: Path) -> None:
    """The buildkit image laid out as moby/buildkit:<v>-rootless: rootlesskit, newuidmap and
    newgidmap, and user ``user`` (uid 1000) with subordinate ids 100000-165535.

    newuidmap/newgidmap carry file capabilities (cap_setuid/cap_setgid) instead of the setuid
    bit Debian gives them: a setuid-root helper writing the user namespace's map needs
    CAP_SYS_ADMIN over it, which an unprivileged container lacks, while with file capabilities
    it keeps the user's euid, the namespace's owner (measured here: the setuid form fails with
    `newuidmap: write to uid_map failed: Operation not permitted`).
    """
    _buildkit_rootfs(rootfs)
    kit = shutil.which("rootlesskit") or "/usr/bin/rootlesskit"
    shutil.copy2(kit, rootfs / "usr/bin/rootlesskit")
    _copy_libs(rootfs, kit)
    for tool, cap in (("newuidmap", "cap_setuid+ep"), ("newgidmap", "cap_setgid+ep")):
        dest = rootfs / "usr/bin" / tool
        shutil.copyfile(f"/usr/bin/{tool}", dest)
        dest.chmod(0o755)
        subprocess.run(["setcap", cap, str(dest)], check=True, capture_output=True)
        _copy_libs(rootfs, f"/usr/bin/{tool}")
    uid = ROOTLESS_UID
    with open(rootfs / "etc/passwd", "a", encoding="ascii") as handle:
        handle.write(f"user:x:{uid}:{uid}:user:/home/user:/bin/sh\n")
    with open(rootfs / "etc/group", "a", encoding="ascii") as handle:
        handle.write(f"user:x:{uid}:\n")
    for name in ("subuid", "subgid"):
        (rootfs / "etc" / name).write_text("user:100000:65536\n")
    owned = [rootfs / "home/user", rootfs / "home/user/.local/share/buildkit",
             rootfs / f"run/user/{uid}"]
    for directory in owned:
        directory.mkdir(parents=True, exist_ok=True)
    for directory in [rootfs / "home/user", rootfs / "home/user/.local",
                      rootfs / "home/user/.local/share", *owned]:
        os.chown(directory, uid, uid)
    (rootfs / f"run/user/{uid}").chmod(0o700)


def _python_rootfs(rootfs: Path, *, log: Path) -> None:
    """bookworm + python3/pip/venv, behaving like Docker Hub's python:3.11-bookworm: `python`
    exists and pip may install system-wide (no PEP 668 EXTERNALLY-MANAGED marker)."""
    _debootstrap(rootfs, log=log, include=PYTHON_PACKAGES)
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()


def _tar(rootfs: Path, tarball: Path, log: Path) -> None:
    # file capabilities (newuidmap in the rootless image) live in the security.capability xattr
    run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=security.capability", "-C",
         str(rootfs), "-cf", str(tarball), "."], log)
    shutil.rmtree(rootfs, ignore_errors=True)


def _import(tarball: Path, ref: str, changes: list[str], log: Path) -> None:
    argv = ["docker", "import", "--change", f"ENV {IMAGE_PATH}"]
    for c in changes:
        argv += ["--change", c]
    run([*argv, str(tarball), ref], log, timeout=300)


def recipe_id(name: str, changes: list[str]) -> str:
    """Fingerprint of how image ``name`` is made; a changed recipe forces a rebuild."""
    include = PYTHON_PACKAGES if name == "python" else []
    # The revision is in the buildkit recipe since the binaries are version-stamped: an image
    # holding the older unstamped binaries is rebuilt once.
    extra = ([BUILDKIT_VERSION, BUILDKIT_REVISION, "/usr/sbin/runc"]
             if name.startswith("buildkit") else [])
    blob = json.dumps([name, include, changes, extra, 2]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def docker_recipe(ref: str) -> str | None:
    """The recipe label of ``ref`` in dockerd, "" if unlabeled, None if absent."""
    proc = subprocess.run(["docker", "image", "inspect", "--format",
                           f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}', ref],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip().replace("<no value>", "")


def ensure_image(name: str, ref: str, changes: list[str], make: Callable[[Path], None],
                 push_ref: str | None = None) -> str:
    """Make ``ref`` exist in dockerd and (as ``push_ref``) in the plain registry, built from
    the current recipe (an image made by an older recipe is rebuilt and re-pushed)."""
    push_ref = push_ref or ref
    log = LOGS / f"image-{name}.log"
    recipe = recipe_id(name, changes)
    have_reg, local = in_registry(push_ref), docker_recipe(ref)
    if have_reg and local == recipe:
        return "present"
    if local is None and have_reg:
        run(["docker", "pull", push_ref], log, timeout=300)
        if ref != push_ref:
            run(["docker", "tag", push_ref, ref], log)
        if docker_recipe(ref) == recipe:
            return "pulled from registry"
    work = STATE / "images"
    work.mkdir(parents=True, exist_ok=True)
    tarball, stamp = work / f"{name}.tar", work / f"{name}.recipe"
    if local != recipe:
        if not tarball.exists() or not stamp.exists() or stamp.read_text() != recipe:
            rootfs = work / f"{name}-rootfs"
            make(rootfs)
            _tar(rootfs, tarball, log)
            stamp.write_text(recipe)
        _import(tarball, ref, [*changes, f"LABEL {RECIPE_LABEL}={recipe}"], log)
    if ref != push_ref:
        run(["docker", "tag", ref, push_ref], log)
    run(["docker", "push", push_ref], log, timeout=600)
    return "built and pushed" if local != recipe else "pushed"


def ensure_hostca_image() -> str:
    """IMAGE_PYTHON with the host CA bundle copied over its own (labelled with its hash)."""
    log = LOGS / "image-python-hostca.log"
    recipe = hashlib.sha256(Path(CA_BUNDLE).read_bytes()).hexdigest()[:16]
    if docker_recipe(IMAGE_PYTHON_HOSTCA) == recipe and in_registry(IMAGE_PYTHON_HOSTCA):
        return "present"
    name = f"envd-infra-hostca-{os.getpid()}"
    run(["docker", "create", "--name", name, IMAGES["python"][0]], log)
    try:
        run(["docker", "cp", "-L", CA_BUNDLE, f"{name}:/etc/ssl/certs/ca-certificates.crt"],
            log)
        run(["docker", "commit", "--change", f"LABEL {RECIPE_LABEL}={recipe}", name,
             IMAGE_PYTHON_HOSTCA], log)
    finally:
        quiet(["docker", "rm", "-f", name])
    run(["docker", "push", IMAGE_PYTHON_HOSTCA], log, timeout=300)
    return "built and pushed"


def ensure_images() -> str:
    """Every base image, the buildkit image and the host-CA python image, in dockerd and the
    plain registry."""
    out = []
    for name, (ref, changes) in IMAGES.items():
        log = LOGS / f"image-{name}.log"
        make: Callable[[Path], None]
        if name == "busybox":
            make = _busybox_rootfs
        elif name == "python":
            make = functools.partial(_python_rootfs, log=log)
        else:
            make = functools.partial(_debootstrap, log=log, include=[])
        out.append(f"{name}: {ensure_image(name, ref, changes, make)}")
    out.append("buildkit: " + ensure_image(
        "buildkit", BUILDKIT_IMAGE, ['ENTRYPOINT ["buildkitd"]'], _buildkit_rootfs,
        push_ref=BUILDKIT_IMAGE_REF))
    out.append("buildkit-rootless: " + ensure_image(
        "buildkit-rootless", BUILDKIT_ROOTLESS_IMAGE,
        [f"USER {ROOTLESS_UID}:{ROOTLESS_UID}", "ENV HOME=/home/user",
         f"ENV XDG_RUNTIME_DIR=/run/user/{ROOTLESS_UID}",
         'ENTRYPOINT ["rootlesskit", "buildkitd"]'],
        _buildkit_rootless_rootfs, push_ref=BUILDKIT_ROOTLESS_IMAGE_REF))
    out.append("python-hostca: " + ensure_hostca_image())
    return "; ".join(out)
