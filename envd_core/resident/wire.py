"""What the resident client and server agree on: where the socket is, its key, the framing.

Imported by the client on every resident-eligible invocation, so only built-in modules are used
(``os``, ``sys``, ``marshal``): ``socket`` alone pulls ``enum`` and ``selectors`` (~10 ms).

* **Where**: ``$ENVD_RESIDENT_DIR``, else ``$XDG_RUNTIME_DIR/envd``, else ``/tmp/envd-<uid>``.
  The directory must be ours, a real directory (not a symlink) and mode 0700
  (:func:`check_dir`); anything else means no resident, never a shared socket.
* **Key**: a short hash of the interpreter, envd's version and ``sys.path``
  (:func:`key`), in the socket's name, so two venvs or two envd versions never share a server.
  What the key cannot see (an edited module of an editable install, a package upgraded in
  place) the server checks itself before every fork (:mod:`envd_core.resident.fresh`).
* **Frames**: a 4-byte big-endian length, then a :mod:`marshal` payload (dicts, lists, str, int,
  float). marshal, not pickle: no code runs on load; both ends are the same interpreter (the key
  says so) and the peer is checked to be the same user (``SO_PEERCRED``) before anything is read.
"""

from __future__ import annotations

import marshal
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: Largest frame either side accepts (an environment of a few hundred variables is ~20 KB).
MAX_FRAME = 16 * 1024 * 1024
#: The AF_UNIX path limit (``sun_path``) on Linux, with its terminating NUL.
_SUN_PATH = 107
#: Default seconds without a request and without children before the server exits.
DEFAULT_IDLE = 15 * 60


def disabled(env: Mapping[str, str]) -> bool:
    """Whether ``ENVD_RESIDENT`` turns the resident process off (``0``, ``false``, ``no``,
    ``off``)."""
    return env.get("ENVD_RESIDENT", "").strip().lower() in ("0", "false", "no", "off")


def idle_seconds(env: Mapping[str, str]) -> float:
    """``ENVD_RESIDENT_IDLE`` (seconds), or :data:`DEFAULT_IDLE` when unset or not a number."""
    try:
        value = float(env.get("ENVD_RESIDENT_IDLE", ""))
    except ValueError:
        return float(DEFAULT_IDLE)
    return value if value > 0 else float(DEFAULT_IDLE)


def socket_dir(env: Mapping[str, str]) -> str:
    """The directory of this user's resident sockets."""
    explicit = env.get("ENVD_RESIDENT_DIR")
    if explicit:
        return os.path.abspath(explicit)
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "envd")
    return f"/tmp/envd-{os.geteuid()}"


def check_dir(path: str, *, create: bool) -> str | None:
    """Why ``path`` is not safe for our sockets, or ``None`` when it is.

    Safe: a directory (``lstat``: a symlink is refused, whoever owns its target), owned by us,
    with no permission bits for group or others. With ``create`` a missing one is made 0700
    (its parents too, 0700 as well).
    """
    import stat

    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            return f"cannot create `{path}`: {exc.strerror}"
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"`{path}`: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"`{path}` is not a directory (a symlink or a file)"
    if st.st_uid != os.geteuid():
        return f"`{path}` belongs to uid {st.st_uid}, not to us ({os.geteuid()})"
    if st.st_mode & 0o077:
        return f"`{path}` is open to other users (mode {stat.S_IMODE(st.st_mode):o}, want 700)"
    return None


#: Linux namespaces whose difference makes a process see another machine: other files, network,
#: users, processes, host name, IPC, cgroups.
_NAMESPACES = ("mnt", "net", "user", "pid", "uts", "ipc", "cgroup")


def process_context() -> list[str]:
    """What the server must share with a client besides the installation: its namespaces, its
    root directory and its cgroup.

    A command run under ``unshare --mount`` with a secret bind-mounted (a Kubernetes service
    account token), in another network namespace, a chroot or a cgroup with a memory limit
    (``systemd-run --scope``) must not be served by a server started outside it: the forked
    child would read the server's files, use its network and be counted in its cgroup (CI
    caught the first case: a build used the token of another namespace). Clients that differ
    here get servers of their own. About 20 microseconds of system calls.
    """
    out: list[str] = []
    for name in _NAMESPACES:
        try:
            out.append(os.readlink(f"/proc/self/ns/{name}"))
        except OSError:
            out.append("")
    try:
        st = os.stat("/")
        out.append(f"{st.st_dev}:{st.st_ino}")
    except OSError:
        out.append("")
    try:
        with open("/proc/self/cgroup", "rb") as fh:
            out.append(fh.read().decode("utf-8", "replace"))
    except OSError:
        out.append("")
    return out


def key(executable: str, path: list[str]) -> str:
    """The server key: interpreter, envd version, ``sys.path`` and :func:`process_context`,
    as 8 hex digits."""
    from envd_core import __version__
    from envd_core.plugin_index import _fnv1a

    parts = [executable, __version__, *path, *process_context()]
    return f"{_fnv1a(chr(0).join(parts)):08x}"


def usable_path(path: list[str]) -> bool:
    """Whether ``sys.path`` means the same in the server as here: a relative entry (``''``
    from ``python -m``/``-c``) would be read against another working directory."""
    return all(entry and os.path.isabs(entry) for entry in path)


def socket_path(directory: str, server_key: str) -> str | None:
    """The socket of the server with ``server_key``; ``None`` when the name would not fit in
    an AF_UNIX address."""
    path = os.path.join(directory, f"resident-{server_key}.sock")
    return path if len(os.fsencode(path)) <= _SUN_PATH else None


def lock_path(sock: str) -> str:
    """The lock file a server holds for its whole accepting life and removes when it stops
    accepting (:mod:`envd_core.resident.lockfile`)."""
    return sock[: -len(".sock")] + ".lock"


def encode(message: Mapping[str, Any]) -> bytes:
    """One frame: length, then the marshalled message."""
    payload = marshal.dumps(dict(message))
    return len(payload).to_bytes(4, "big") + payload


def decode(payload: bytes) -> dict[str, Any]:
    """The message of a frame's payload; ``ValueError`` when it is not a dict."""
    try:
        message = marshal.loads(payload)
    except (EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"malformed frame: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError("malformed frame: not a mapping")
    return message


def frame_length(header: bytes) -> int:
    """The payload length a 4-byte header announces; ``ValueError`` past :data:`MAX_FRAME`."""
    length = int.from_bytes(header, "big")
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes is larger than {MAX_FRAME}")
    return length


def read_frame(recv: Any, first: bytes = b"") -> dict[str, Any] | None:
    """Read one frame with ``recv(n)`` (a socket's), after ``first`` bytes already read.

    ``None`` on a clean end of stream before any byte of the frame.
    """
    data = bytearray(first)
    while len(data) < 4:
        chunk = recv(4 - len(data))
        if not chunk:
            if data:
                raise ValueError("connection closed inside a frame header")
            return None
        data += chunk
    length = frame_length(bytes(data[:4]))
    body = bytearray(data[4:])
    while len(body) < length:
        chunk = recv(min(length - len(body), 1 << 20))
        if not chunk:
            raise ValueError("connection closed inside a frame")
        body += chunk
    if len(body) > length:
        raise ValueError("extra bytes after a frame")
    return decode(bytes(body))


def exit_code(status: int) -> int:
    """A ``waitpid`` status as a shell reports it: the exit code, or 128 + the signal number
    for a child killed by a signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 1


def fds_payload(fds: list[int]) -> bytes:
    """``fds`` as the SCM_RIGHTS ancillary data (native C ints), without the ``array``
    module ``socket.send_fds`` imports."""
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)


def fds_from(data: bytes) -> list[int]:
    """The file descriptors in SCM_RIGHTS ancillary ``data``."""
    usable = len(data) - len(data) % 4
    return [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True)
            for i in range(0, usable, 4)]


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its reaper counts as exited): how the
    resident's ``stop`` and the plugins' helper registry wait for a process they do not reap."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[0] == b"Z"
    except OSError:
        return True


def peer_uid(conn: Any) -> int:
    """The uid of the process at the other end of the AF_UNIX connection ``conn``
    (``SO_PEERCRED``): servers on a private socket answer only their own user."""
    import socket
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def log_line(name: str, message: str) -> None:
    """One line ``<time> <name>[<pid>]: <message>`` on stderr: the log of a background process
    (the resident server's ``server.log``, a plugin helper's)."""
    import time

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    sys.stderr.write(f"{stamp} {name}[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


def spawn_detached(args: list[str], log: str, env: Mapping[str, str]) -> None:
    """Start ``args`` (``args[0]`` is the executable) in a new session, stdin from
    ``/dev/null``, stdout and stderr appended to ``log`` (0600); never waits. Raises what
    ``posix_spawn`` raises."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    os.posix_spawn(args[0], args, dict(env), file_actions=actions, setsid=True)


def bind_private(path: str) -> Any:
    """A listening AF_UNIX socket bound at ``path`` with mode 0600 (through the umask), after
    removing a file left there: call it holding the path's lock, so no live listener is there.
    """
    import contextlib
    import socket

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(64)
    return listener
