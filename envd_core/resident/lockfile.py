"""The resident server's lock file: taken for its accepting life, removed when it steps aside.

A server holds ``resident-<key>.lock`` (``flock``, exclusive) next to its socket from before it
binds until it stops accepting. The key covers namespaces, root directory and cgroup, so every
``unshare``d run makes a key of its own; a lock file left behind for each would pile up in the
socket directory (CI left 75 in ``/tmp/envd-0``). So a server removes its socket and lock file
when it stops accepting, and a starting server sweeps those of dead keys (:func:`sweep`).

Removing a lock file others may be about to lock is the classic ``flock`` + ``unlink`` race: a
starter opens the file, the holder unlinks it and releases, the starter's ``flock`` now succeeds
on an inode no path names, and a third starter creates a fresh file and locks that too: two
servers. The protocol here, the usual one:

* a file is unlinked only by a process that holds its lock (:func:`remove`), socket first, lock
  file second, and the lock is released last;
* after taking the lock, a locker checks that the path still names the inode it locked
  (:func:`acquire`); when it does not, the file was removed under it, so it re-opens and tries
  again (and then finds the new holder's lock, or creates and takes a fresh file).

Locks live on open file descriptions (``flock``), so a forked child must close its copy of the
descriptor (the server does) or the lock outlives the server's stepping aside.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

#: Re-opens after finding the locked file unlinked: each one means another process removed the
#: file between our open and our flock, which needs a holder to come and go in that window.
_ATTEMPTS = 20


def acquire(path: str) -> int | None:
    """Take the lock file ``path`` (created 0600 when missing), non-blocking.

    The locked descriptor (close-on-exec), or ``None`` when another process holds the lock.
    The returned descriptor's inode is the one ``path`` names, checked after locking.
    """
    for _ in range(_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # removed by its holder while we opened it: a fresh file awaits
    return None


def remove(fd: int, path: str, sock: str, sock_inode: int | None = None) -> None:
    """Unlink the socket ``sock`` and the lock file ``path`` while holding the lock ``fd``,
    then release it by closing ``fd``.

    ``sock`` is unlinked only when it is the inode ``sock_inode`` (the server's own bound
    socket) or, with ``sock_inode`` ``None``, whatever it is (a sweep: no server holds the
    key's lock, so no live server listens there). The lock file goes second so that no server
    can take a valid lock for this key while the socket is still being removed.
    """
    try:
        with contextlib.suppress(OSError):
            if sock_inode is None or os.stat(sock).st_ino == sock_inode:
                os.unlink(sock)
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
    finally:
        os.close(fd)


def sweep(directory: str, keep: str, prefix: str = "resident-",
          also: tuple[str, ...] = ()) -> int:
    """Remove the socket and lock file of every key in ``directory`` whose lock nobody holds,
    except ``keep`` (a key); how many keys were removed.

    A key is ``<prefix><key>`` (``resident-`` for servers; a plugin's helper process uses its
    own, with its registration's suffix in ``also``: removed first, under the lock). It is
    found by its lock file or its socket (a server of an older envd may have left a socket
    alone). A held lock means a live or starting process: left alone.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    keys = {name[len(prefix):].rpartition(".")[0] for name in names
            if name.startswith(prefix) and name.endswith((".lock", ".sock"))}
    removed = 0
    for key in sorted(keys - {keep, ""}):
        base = os.path.join(directory, f"{prefix}{key}")
        try:
            fd = acquire(base + ".lock")
        except OSError:
            continue
        if fd is not None:
            for suffix in also:
                with contextlib.suppress(OSError):
                    os.unlink(base + suffix)
            remove(fd, base + ".lock", base + ".sock")
            removed += 1
    return removed
