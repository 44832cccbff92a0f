"""Fingerprints of what a build file's evaluation read, for the definition cache.

Split out of :mod:`envd_core.pipeline.defcache`: how a recorded read (a file opened, a directory
listed, a path stat'ed) is fingerprinted when an entry is written and checked again when it is
looked up, and :func:`changed_since`, which refuses to store an entry whose reads changed while
the build ran. The rules are in defcache's docstring and docs/build.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat as stat_mod
from collections.abc import Callable, Mapping

__all__ = ["HASH_LIMIT", "changed_since", "fingerprints", "fs_now", "still_valid"]

#: Files up to this size are fingerprinted by content, larger ones by size, mtime and inode.
HASH_LIMIT = 1 << 20


def _file_print(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"-{exc.errno}"
    if not stat_mod.S_ISREG(st.st_mode):
        return f"t{stat_mod.S_IFMT(st.st_mode)}"
    if st.st_size > HASH_LIMIT:
        # ctime too: an in-place rewrite with the old mtime put back keeps size, mtime, inode
        return f"F{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"
    try:
        with open(path, "rb") as fh:
            return "f" + hashlib.sha256(fh.read()).hexdigest()
    except OSError as exc:
        return f"-{exc.errno}"


def _entry_kind(entry: os.DirEntry[str]) -> str:
    """What ``os.walk``/``glob``/``is_dir()`` tell of an entry without another read: folder,
    link (to a folder or not), other."""
    try:
        if entry.is_symlink():
            return "L" if entry.is_dir() else "l"
        return "d" if entry.is_dir(follow_symlinks=False) else "f"
    except OSError:
        return "?"


def _listing_print(path: str) -> str:
    """The names with their kinds: a file replaced by a folder of the same name changes it."""
    try:
        with os.scandir(path) as entries:
            names = sorted(f"{e.name}\0{_entry_kind(e)}" for e in entries)
    except OSError as exc:
        return f"-{exc.errno}"
    return "l" + hashlib.sha256("\0".join(names).encode()).hexdigest()


def _stat_print(path: str, follow: bool) -> str:
    try:
        st = os.stat(path, follow_symlinks=follow)
    except OSError as exc:
        return f"-{exc.errno}"
    kind = stat_mod.S_IFMT(st.st_mode)
    if stat_mod.S_ISLNK(st.st_mode):
        return f"s{kind}:{os.readlink(path)}"
    if stat_mod.S_ISREG(st.st_mode):
        return f"s{kind}:{st.st_size}:{st.st_mtime_ns}"
    return f"s{kind}"  # a directory's mtime moves with every file created in it


_PRINTS: dict[str, Callable[[str], str]] = {
    "opened": _file_print, "listed": _listing_print,
    "stat": lambda p: _stat_print(p, True), "lstat": lambda p: _stat_print(p, False),
}


def fingerprints(reads: Mapping[str, list[str]]) -> list[list[str]]:
    """``[how, path, fingerprint]`` of every recorded read, as it is now."""
    return [[how, path, _PRINTS[how](path)] for how in sorted(_PRINTS)
            for path in reads.get(how, [])]


def fs_now() -> int:
    """Now on the clock the kernel stamps files with (Linux: the coarse realtime clock, which
    may lag ``time.time_ns()`` by a tick): a change made after this has a ctime at or above it."""
    import time

    clock = getattr(time, "CLOCK_REALTIME_COARSE", None)
    return time.clock_gettime_ns(clock) if clock is not None else time.time_ns()


def _ctime(path: str, listed: bool) -> int | None:
    """The ctime that tells whether what was learnt about ``path`` may have changed: its own
    (the link's and its target's) for a file, and for a directory that was listed; ``None``
    for a directory only stat'ed (its fingerprint is its type, which no change of its entries
    alters); the nearest existing parent's for a missing path (a deletion changes it)."""
    try:
        link = os.lstat(path)
    except OSError:
        link = None
    if link is not None:
        is_link = stat_mod.S_ISLNK(link.st_mode)
        try:
            target = os.stat(path) if is_link else link
        except OSError:  # a dangling link: what it names is the link's
            return link.st_ctime_ns
        if stat_mod.S_ISDIR(target.st_mode) and not listed:
            return link.st_ctime_ns if is_link else None
        return max(link.st_ctime_ns, target.st_ctime_ns)
    parent = os.path.dirname(path)
    while parent != path:
        with contextlib.suppress(OSError):
            return os.stat(parent).st_ctime_ns
        path, parent = parent, os.path.dirname(parent)
    return None


def changed_since(reads: Mapping[str, list[str]], since: int) -> str | None:
    """A recorded path that changed (or appeared, or went) at or after ``since``, else ``None``.

    The entry's fingerprints are taken when it is written, after evaluation and compilation:
    a file saved in between would be fingerprinted with its new content next to a definition
    made from the old one, and reused by every later build. ctime, unlike mtime, cannot be set
    back (``touch -d``, ``rsync -t``), so a change after ``since`` always shows. A filesystem
    with whole-second times is compared two seconds early.
    """
    for how in sorted(_PRINTS):
        for path in reads.get(how, []):
            ctime = _ctime(path, how == "listed")
            if ctime is None:
                continue
            bound = since - 2 * 10**9 if ctime % 10**9 == 0 else since
            if ctime >= bound:
                return path
    return None


def still_valid(prints: list[list[str]]) -> bool:
    """Whether every ``[how, path, fingerprint]`` of :func:`fingerprints` still holds."""
    return all(_PRINTS[how](path) == fp for how, path, fp in prints)
