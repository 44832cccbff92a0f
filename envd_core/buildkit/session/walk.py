"""Walk a local directory the way fsutil's sender does.

Order matters to the daemon's receiver: pre-order depth first, entries of a directory sorted
byte-wise by name, a directory before its contents, and every ancestor of an emitted entry
emitted first. Filtering (include, exclude, follow paths) happens during the walk so excluded
subtrees are never read.
"""

from __future__ import annotations

import os
import posixpath
import stat as st
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from envd_core.buildkit.session.patterns import PatternMatcher

# Go os.FileMode type bits (the wire format of fsutil Stat.mode).
MODE_DIR = 1 << 31
MODE_APPEND = 1 << 30
MODE_EXCLUSIVE = 1 << 29
MODE_TEMPORARY = 1 << 28
MODE_SYMLINK = 1 << 27
MODE_DEVICE = 1 << 26
MODE_NAMED_PIPE = 1 << 25
MODE_SOCKET = 1 << 24
MODE_SETUID = 1 << 23
MODE_SETGID = 1 << 22
MODE_CHAR_DEVICE = 1 << 21
MODE_STICKY = 1 << 20
MODE_IRREGULAR = 1 << 19
MODE_TYPE = (
    MODE_DIR
    | MODE_SYMLINK
    | MODE_NAMED_PIPE
    | MODE_SOCKET
    | MODE_DEVICE
    | MODE_CHAR_DEVICE
    | MODE_IRREGULAR
)


def go_mode(st_mode: int) -> int:
    """Convert a POSIX ``st_mode`` into Go ``os.FileMode`` bits."""
    mode = st_mode & 0o777
    fmt = st.S_IFMT(st_mode)
    if fmt == st.S_IFDIR:
        mode |= MODE_DIR
    elif fmt == st.S_IFLNK:
        mode |= MODE_SYMLINK
    elif fmt == st.S_IFIFO:
        mode |= MODE_NAMED_PIPE
    elif fmt == st.S_IFSOCK:
        mode |= MODE_SOCKET
    elif fmt == st.S_IFBLK:
        mode |= MODE_DEVICE
    elif fmt == st.S_IFCHR:
        mode |= MODE_DEVICE | MODE_CHAR_DEVICE
    if st_mode & st.S_ISUID:
        mode |= MODE_SETUID
    if st_mode & st.S_ISGID:
        mode |= MODE_SETGID
    if st_mode & st.S_ISVTX:
        mode |= MODE_STICKY
    return mode


def posix_mode(go: int) -> int:
    """Convert Go ``os.FileMode`` bits back into a POSIX ``st_mode``."""
    mode = go & 0o777
    if go & MODE_DIR:
        mode |= st.S_IFDIR
    elif go & MODE_SYMLINK:
        mode |= st.S_IFLNK
    elif go & MODE_NAMED_PIPE:
        mode |= st.S_IFIFO
    elif go & MODE_SOCKET:
        mode |= st.S_IFSOCK
    elif go & MODE_DEVICE:
        mode |= st.S_IFCHR if go & MODE_CHAR_DEVICE else st.S_IFBLK
    else:
        mode |= st.S_IFREG
    if go & MODE_SETUID:
        mode |= st.S_ISUID
    if go & MODE_SETGID:
        mode |= st.S_ISGID
    if go & MODE_STICKY:
        mode |= st.S_ISVTX
    return mode


def is_regular(go: int) -> bool:
    """Whether Go mode bits describe a regular file (the only kind whose data is requested)."""
    return go & MODE_TYPE == 0


@dataclass(frozen=True)
class Entry:
    """One entry to send: relative path, Go mode, and what the Stat packet needs."""

    path: str
    mode: int
    size: int
    mtime_ns: int
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    abspath: str = ""


@dataclass(frozen=True)
class Filter:
    """Include/exclude/follow-path rules applied during a walk; empty means everything."""

    includes: PatternMatcher
    excludes: PatternMatcher

    @classmethod
    def build(
        cls, includes: Sequence[str] = (), excludes: Sequence[str] = ()
    ) -> Filter:
        """Compile pattern lists (raises `PatternError` on invalid patterns)."""
        return cls(PatternMatcher(includes), PatternMatcher(excludes))

    def included(self, path: str) -> bool:
        return not self.includes or self.includes.matches(path)

    def excluded(self, path: str) -> bool:
        return bool(self.excludes) and self.excludes.matches(path)

    def worth_descending(self, dir_path: str, dir_included: bool, dir_excluded: bool) -> bool:
        """Whether walking into ``dir_path`` can yield anything."""
        if dir_excluded and not self.excludes.has_exclusions:
            return False
        if dir_included or not self.includes:
            return True
        return any(p.could_match_below(dir_path) for p in self.includes.patterns)


def resolve_follow_paths(root: str, follow: Sequence[str]) -> list[str]:
    """Expand follow paths: a symlink among them also pulls in what it points to (in the root)."""
    extra: list[str] = []
    real_root = os.path.realpath(root)
    for rel in follow:
        rel = rel.strip("/")
        seen = 0
        current = rel
        while current and seen < 40:
            seen += 1
            full = os.path.join(root, current)
            if not os.path.islink(full):
                break
            target = os.readlink(full)
            if os.path.isabs(target):
                resolved = os.path.normpath(os.path.join(real_root, target.lstrip("/")))
            else:
                resolved = os.path.normpath(os.path.join(os.path.dirname(full), target))
            try:
                rel_target = os.path.relpath(resolved, root)
            except ValueError:
                break
            if rel_target.startswith(".."):
                break
            current = rel_target.replace(os.sep, "/")
            extra.append(current)
    return extra


def walk(root: str, flt: Filter) -> Iterator[Entry]:
    """Yield entries under ``root`` in fsutil order, filtered; never yields ``root`` itself."""
    hardlinks: dict[tuple[int, int], str] = {}
    # Directories entered but not yet emitted (they only appear if something inside does).
    pending: list[Entry] = []

    def flush() -> Iterator[Entry]:
        yield from pending
        pending.clear()

    def recurse(abs_dir: str, rel_dir: str, depth: int) -> Iterator[Entry]:
        try:
            names = sorted(os.listdir(abs_dir), key=os.fsencode)
        except FileNotFoundError:
            return
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(abs_dir, name)
            try:
                info = os.lstat(full)
            except FileNotFoundError:
                continue  # removed while walking
            is_dir = st.S_ISDIR(info.st_mode)
            excluded = flt.excluded(rel)
            included = flt.included(rel)
            if is_dir:
                entry = _entry(rel, full, info, "")
                if included and not excluded:
                    yield from flush()
                    yield entry
                    yield from recurse(full, rel, depth + 1)
                elif flt.worth_descending(rel, included, excluded):
                    pending.append(entry)
                    yield from recurse(full, rel, depth + 1)
                    if pending and pending[-1] is entry:
                        pending.pop()
                continue
            if excluded or not included:
                continue
            if st.S_ISSOCK(info.st_mode):
                continue  # fsutil's sender skips sockets
            linkname = ""
            if st.S_ISLNK(info.st_mode):
                linkname = os.readlink(full)
            elif st.S_ISREG(info.st_mode) and info.st_nlink > 1:
                key = (info.st_dev, info.st_ino)
                first = hardlinks.get(key)
                if first is None:
                    hardlinks[key] = rel
                else:
                    linkname = first
            yield from flush()
            yield _entry(rel, full, info, linkname)

    yield from recurse(root, "", 0)


def _entry(rel: str, full: str, info: os.stat_result, linkname: str) -> Entry:
    mode = go_mode(info.st_mode)
    size = 0
    devmajor = devminor = 0
    if st.S_ISREG(info.st_mode):
        size = 0 if linkname else info.st_size
    elif st.S_ISLNK(info.st_mode):
        size = len(os.fsencode(linkname))
    elif st.S_ISBLK(info.st_mode) or st.S_ISCHR(info.st_mode):
        devmajor, devminor = os.major(info.st_rdev), os.minor(info.st_rdev)
    return Entry(
        path=rel,
        mode=mode,
        size=size,
        mtime_ns=info.st_mtime_ns,
        linkname=linkname,
        devmajor=devmajor,
        devminor=devminor,
        abspath=full,
    )


def relpath_ok(path: str) -> bool:
    """Whether a path received from the daemon stays inside the destination."""
    if not path or path.startswith("/") or "\x00" in path:
        return False
    norm = posixpath.normpath(path)
    return norm != ".." and not norm.startswith("../")
