"""Writing user files safely: an exclusive lock, then temp file + fsync + rename + dir fsync.

The one way envd writes a file it keeps for the user: the context store, plugin settings,
``~/.ssh/config``, key pairs. A process killed at any point leaves the old file or
the new one, never a torn one; concurrent ``envd`` processes serialise on the lock file.
"""

from __future__ import annotations

import contextlib
import os

from envd_core.errors import EnvdError, StoreError

TYPE_CHECKING = False  # read on the fast path of `envd context use`: no typing, no pathlib
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["LOCK_TIMEOUT", "locked", "remove_stale_temp_files", "write_atomic"]

LOCK_TIMEOUT = 10.0


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike[str], *, guards: str | os.PathLike[str] | None = None,
           timeout: float = LOCK_TIMEOUT, error: type[EnvdError] = StoreError) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created 0600) for the block.

    ``guards`` is the file the lock protects, named when another process holds it too long.
    """
    import errno
    import fcntl
    import time

    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise error(f"cannot open lock file `{lock_path}`: {exc.strerror}",
                    hint=_fix_for(exc)) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise error(f"cannot lock `{lock_path}`: {exc.strerror}") from None
                if time.monotonic() > deadline:
                    raise error(
                        f"`{guards or lock_path}` is locked by another envd process",
                        hint=f"retry, or check for a stuck process holding `{lock_path}`",
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600,
                 error: type[EnvdError] = StoreError) -> None:
    """Replace ``path`` with ``data`` atomically; the new file gets ``mode``.

    A symlinked ``path`` (dotfile managers) is followed: the file it points to is replaced and
    the link stays a link.
    """
    import tempfile

    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.",
                                   suffix=".tmp")
    except OSError as exc:
        raise error(f"cannot write `{path}`: {exc.strerror}", hint=_fix_for(exc)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise error(f"cannot write `{path}`: {exc.strerror}", hint=_fix_for(exc)) from None
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(path: str | os.PathLike[str]) -> None:
    """Remove temp files :func:`write_atomic` left for ``path`` when its writer was killed.

    Call it while holding the file's lock: writers hold it, so any temp file seen then is stale.
    """
    directory, name = os.path.split(os.fspath(path))
    prefix = f".{name}."
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return
    for entry in names:
        # the names mkstemp gave: `.<name>.<random>.tmp`
        if entry.startswith(prefix) and entry.endswith(".tmp") and len(entry) >= len(prefix) + 4:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


def _fix_for(exc: OSError) -> str | None:
    # envd_core.paths imports pathlib; only an error needs its table
    from envd_core.paths import fix_for

    return fix_for(exc)
