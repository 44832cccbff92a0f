"""What ``base(dev=True)`` adds to an image: an SSH server, a supervisor and the ``envd`` user.

As upstream envd does, a dev image carries upstream's ``envd-sshd`` (a static Go SSH server,
copied from an image that holds only ``/usr/bin/envd-sshd``), the public key of the user's envd
key pair as ``/var/envd/authorized_keys``, and a user ``envd`` with the building user's uid/gid
(or ``config.owner``'s) whose home is ``/home/envd``. A runner may instead hand the key in at
start, as a file named by ``ENVD_AUTHORIZED_KEYS_PATH`` (envd-sshd's own variable). The image's
entrypoint is a supervisor that starts the SSH server on port 2222, runs ``runtime.init`` once,
keeps ``runtime.daemon`` commands, Jupyter and RStudio Server running, and logs each under
``/var/log/envd``.

The sshd image is :data:`DEFAULT_SSHD_IMAGE` (upstream's) unless ``ENVD_SSHD_IMAGE`` names
another: a platform team that mirrors images sets it once for everyone, as it would for any
base image, and our tests point it at the infra's local build.

Why a shell supervisor and not upstream's horust: horust is a Rust binary that takes ~16 minutes
to compile here (no image registry is reachable to copy it from) and a supervisor for a handful
of processes needs only a restart loop per service. The script is POSIX ``sh`` so it runs on
every Debian/Ubuntu (and busybox) base, with or without Python.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, Any

from envd_core.envdfile.errors import UnsupportedBuildError
from envd_core.envdfile.graph import JUPYTER_PORT, RSTUDIO_PORT, SSH_PORT, BuildGraph

if TYPE_CHECKING:
    from envd_core.buildkit import llb as llb_mod

__all__ = [
    "AUTHORIZED_KEYS",
    "DEFAULT_SSHD_IMAGE",
    "SSHD_BIN",
    "SUPERVISOR",
    "add_dev_layers",
    "dev_config",
    "sshd_image",
    "supervisor_script",
]

#: Upstream's image (its ``types.EnvdSshdImage``) at the envd version we follow.
DEFAULT_SSHD_IMAGE = "ghcr.io/tensorchord/envd-sshd-from-scratch:v1.3.4"
SSHD_IMAGE_ENV = "ENVD_SSHD_IMAGE"
SSHD_BIN = "/var/envd/bin/envd-sshd"
SUPERVISOR = "/var/envd/bin/envd-supervisor"
AUTHORIZED_KEYS = "/var/envd/authorized_keys"
LOG_DIR = "/var/log/envd"
HOME = "/home/envd"
RSERVER = "/usr/lib/rstudio-server/bin/rserver"


def sshd_image() -> str:
    """The image dev builds copy ``/usr/bin/envd-sshd`` from (``ENVD_SSHD_IMAGE`` or upstream's)."""
    return os.environ.get(SSHD_IMAGE_ENV, "").strip() or DEFAULT_SSHD_IMAGE


def _quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def jupyter_argv(graph: BuildGraph, uid: int) -> list[str]:
    """Upstream's Jupyter command: ``python3 -m notebook`` on 0.0.0.0:8888 in the project.

    The token goes to both config names: Notebook < 7 reads ``NotebookApp``, 7 (on
    jupyter_server) ``ServerApp``; each ignores the other with a warning.
    """
    token = graph.jupyter.token if graph.jupyter else ""
    argv = ["python3", "-m", "notebook", "--ip", "0.0.0.0", "--port", str(JUPYTER_PORT),
            "--no-browser", f"--NotebookApp.token={token}", f"--ServerApp.token={token}"]
    if uid == 0:
        argv.append("--allow-root")
    return argv


def supervisor_script(graph: BuildGraph, uid: int) -> str:
    """The entrypoint of a dev image (POSIX sh; see the module docstring for why).

    Every service runs in a restart loop (2 s between runs) with its output appended to
    ``/var/log/envd/<service>.log``; start and exit lines also go to the container's log.
    ``runtime.init`` commands run once, in order, before the daemons (upstream starts daemons
    after the init services). SIGTERM (``docker stop``) ends every process at once.
    """
    rt = graph.runtime
    lines = [
        "#!/bin/sh",
        "# envd-supervisor: PID 1 of an envd dev environment (written by envd at build time).",
        f"LOG={LOG_DIR}",
        'mkdir -p "$LOG" 2>/dev/null',
        # every service shares this process group: one signal to the group stops them all
        "trap 'trap \"\" TERM INT; kill -TERM 0 2>/dev/null; exit 0' TERM INT",
        'say() { echo "envd-supervisor: $*"; }',
        "supervise() {",
        "  name=$1; shift",
        "  while :; do",
        '    say "starting $name (log: $LOG/$name.log)"',
        '    "$@" >>"$LOG/$name.log" 2>&1',
        '    say "$name exited with code $?; restarting in 2s"',
        "    sleep 2",
        "  done &",
        "}",
        'cd "${ENVD_WORKDIR:-$HOME}" 2>/dev/null || cd /',
        # envd-sshd refuses a shell it cannot find: fall back to bash, then sh
        f"shell={shlex.quote(graph.shell)}",
        'command -v "$shell" >/dev/null 2>&1 || shell=bash',
        'command -v "$shell" >/dev/null 2>&1 || shell=sh',
        (f'supervise sshd {SSHD_BIN} --port {SSH_PORT} --shell "$shell" '
        f'--authorized-keys "${{ENVD_AUTHORIZED_KEYS_PATH:-{AUTHORIZED_KEYS}}}"'),
    ]
    for i, group in enumerate(rt.init):
        script = "\n".join(group)
        lines.append(f'say "runtime.init {i}: running (log: $LOG/init_{i}.log)"')
        lines.append(f'sh -c {shlex.quote(script)} >>"$LOG/init_{i}.log" 2>&1 || '
                     f'say "runtime.init {i} failed with code $? (see $LOG/init_{i}.log)"')
    for i, argv in enumerate(rt.daemon):
        if argv:
            lines.append(f"supervise daemon_{i} {_quote(argv)}")
    if graph.jupyter is not None:
        lines.append(f"supervise jupyter {_quote(jupyter_argv(graph, uid))}")
    if graph.rstudio_server:
        lines += [
            f"if [ -x {RSERVER} ]; then",
            f"  supervise rstudio {RSERVER} --server-daemonize=0 --www-port={RSTUDIO_PORT}",
            "else",
            (f'  say "config.rstudio_server(): {RSERVER} is not in this image; '
            'install RStudio Server in the build (or use an rocker/rstudio base image)"'),
            "fi",
        ]
    lines.append("while :; do sleep 3600 & wait $!; done")
    return "\n".join(lines) + "\n"


def user_script(uid: int, gid: int, workdir: str) -> str:
    """Create user/group ``envd`` (by editing the files: no useradd on busybox) and its dirs.

    As upstream, a build as root gives ``envd`` uid/gid 0 (a second name for root, home
    ``/home/envd``), so files in the mounted project keep their owner either way.
    """
    dirs = [HOME, f"{HOME}/.config", f"{HOME}/.cache", LOG_DIR] + ([workdir] if workdir else [])
    return "\n".join([
        f"grep -q '^envd:' /etc/group || echo 'envd:x:{gid}:' >>/etc/group",
        (f"grep -q '^envd:' /etc/passwd || "
        f"echo 'envd:x:{uid}:{gid}:envd:{HOME}:/bin/sh' >>/etc/passwd"),
        ("if [ -f /etc/shadow ] && ! grep -q '^envd:' /etc/shadow; then "
        "echo 'envd:*:19000:0:99999:7:::' >>/etc/shadow; fi"),
        f"mkdir -p {' '.join(dirs)} /var/envd/bin",
        f"chown {uid}:{gid} {' '.join(dirs)}",
    ])


def add_dev_layers(c: Any, st: llb_mod.State, *, uid: int, gid: int, workdir: str,
                   authorized_key: str, sshd_ref: str) -> llb_mod.State:
    """The dev-image steps, after everything the build file asked for (so a new key or a new
    sshd image rebuilds only these cheap layers)."""
    graph: BuildGraph = c.graph
    if graph.entrypoint:
        raise UnsupportedBuildError(
            "`config.entrypoint` is for images without dev=True (a dev image's entrypoint is "
            "its SSH server and supervisor); use runtime.init or runtime.daemon instead")
    st = c.run(st, user_script(uid, gid, workdir),
               name=f"[internal] create user envd (uid {uid}, gid {gid})")
    sshd = c.llb.image(sshd_ref, platform=c.platform)
    st = st.copy(sshd, "/usr/bin/envd-sshd", SSHD_BIN)
    if authorized_key.strip():  # else a runner provides ENVD_AUTHORIZED_KEYS_PATH at start
        st = st.mkfile(AUTHORIZED_KEYS, authorized_key.strip() + " envd\n", 0o600,
                       owner=f"{uid}:{gid}")
    return st.mkfile(SUPERVISOR, supervisor_script(graph, uid), 0o755)


def dev_config(config: dict[str, Any], *, uid: int, gid: int, workdir: str) -> None:
    """Entrypoint, user and home of a dev image's OCI config (changed in place)."""
    cfg = config["config"]
    cfg["Entrypoint"] = [SUPERVISOR]
    cfg["User"] = f"{uid}:{gid}"
    env = [e for e in cfg.get("Env", []) if not e.startswith(("HOME=", "USER=", "ENVD_WORKDIR="))]
    env += [f"HOME={HOME}", "USER=envd"]
    if workdir:
        env.append(f"ENVD_WORKDIR={workdir}")
    cfg["Env"] = env
