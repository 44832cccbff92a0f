"""What an evaluation read: the files, listings and stats a build file's evaluation depended on.

The definition cache (:mod:`envd_core.pipeline.defcache`) may reuse a build's LLB only when
nothing the evaluation looked at changed. Rather than trusting a list of "files the language can
read" (vendor functions may read anything), the forked evaluation child records what it really
touched:

* ``sys.addaudithook`` "open" events (``open``, ``io.open``, ``os.open``, ``Path.read_text``)
  and "os.listdir"/"os.scandir" events (``Path.iterdir``, ``glob``);
* ``os.stat``/``os.lstat`` replaced by recording wrappers (``Path.is_file``, ``exists``,
  ``resolve``; stat has no audit event). Patching the ``os`` module is safe only because the
  child is thrown away after the evaluation: a recording is never started in the parent;
* events that make the result depend on the world rather than on files (a subprocess, such as
  ``include(git=…)`` fetching; a socket connection; ``urllib`` requests): the result is marked
  impure and never cached.

Imports are not recorded as such (the import system's opens of code and its listings, told apart
by the frame that made them: the parent's code is part of the cache key by its own signature);
the file of each module the evaluation imported is recorded (``imported``) for the cache to pick
the ones its key does not cover. A ``.py`` file read as data (``version.py``) is recorded like
any other file. Under ``/proc``, ``/dev`` and ``/sys`` nothing is recorded, and opening a file
there makes the result impure (``/dev/urandom``), except ``/dev/null`` and ``/proc/self/statm``
(the evaluation guard samples its memory there).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Audit events after which the evaluation's result is not a function of its files.
IMPURE_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "socket.connect", "socket.getaddrinfo", "urllib.Request",
    # the machine's name and addresses, a database read outside `open`, native code
    "socket.gethostname", "socket.gethostbyname", "socket.gethostbyaddr", "sqlite3.connect",
    "ctypes.dlopen",
})
_IGNORED_PREFIXES = ("/proc/", "/dev/", "/sys/")
#: Opened there, a file's content is not a function of the files (``/dev/urandom``,
#: ``/proc/meminfo``): the evaluation is impure, except for these two.
_HARMLESS = frozenset({"/dev/null", "/proc/self/statm"})
#: What the import system opens to load code (``loader.get_data`` of anything else, as
#: ``pkgutil.get_data`` does, is a data read like any other).
_CODE_SUFFIXES = (".py", ".pyc", ".so", ".pth")
#: Code object file names of the import system (frozen into the interpreter).
_IMPORT_FILES = ("<frozen importlib", "<frozen zipimport")


class Reads:
    """Paths one evaluation touched, by how: ``opened`` (content read), ``listed`` (directory
    listing), ``stat``/``lstat`` (metadata), ``imported`` (module files); ``impure`` names an
    event that makes the result depend on more than these (empty when none)."""

    def __init__(self) -> None:
        self.opened: set[str] = set()
        self.listed: set[str] = set()
        self.stat: set[str] = set()
        self.lstat: set[str] = set()
        #: Files of the modules the evaluation imported.
        self.imported: set[str] = set()
        self.impure = ""

    def as_lists(self) -> dict[str, list[str]]:
        """Sorted lists, for the cache entry and for pickling back to the parent."""
        return {"opened": sorted(self.opened), "listed": sorted(self.listed),
                "stat": sorted(self.stat), "lstat": sorted(self.lstat),
                "imported": sorted(self.imported)}


_active: list[Reads] = []  # the recording of this (child) process, when one runs


def _path(value: Any) -> str | None:
    if isinstance(value, int):  # a file descriptor: its path was recorded when it was opened
        return None
    try:
        path = os.fsdecode(value)
        # joined, not normalised: `link/../x` names `<link's target>/../x` to the kernel,
        # which is not the lexically normalised `x`
        path = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    except (TypeError, ValueError, OSError):
        return None
    if os.path.normpath(path).startswith(_IGNORED_PREFIXES):
        return None
    return path


def _by_import() -> bool:
    """Whether the audited call came from the import system (frame 0 is :func:`_audit`)."""
    try:
        return sys._getframe(2).f_code.co_filename.startswith(_IMPORT_FILES)
    except ValueError:
        return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _active:
        return
    reads = _active[-1]
    if event in ("os.listdir", "os.scandir") and _by_import():
        return  # the import system scanning sys.path
    if (event == "open" and isinstance(args[0], str) and args[0].endswith(_CODE_SUFFIXES)
            and _by_import()):
        return  # a module loaded: keyed by its source's signature, or recorded as imported

    if event == "open":
        if (path := _path(args[0])) is not None:
            reads.opened.add(path)
        elif (isinstance(args[0], (str, bytes)) and not reads.impure
              and os.path.normpath(os.fsdecode(args[0])) not in _HARMLESS):
            reads.impure = f"open {os.fsdecode(args[0])}"
    elif event in ("os.listdir", "os.scandir"):
        if (path := _path(args[0] if args and args[0] is not None else ".")) is not None:
            reads.listed.add(path)
    elif event in IMPURE_EVENTS and not reads.impure:
        reads.impure = event


def _wrap_stat(name: str, real: Callable[..., Any], into: Callable[[Reads], set[str]]
               ) -> Callable[..., Any]:
    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if _active and kwargs.get("dir_fd") is not None and not _active[-1].impure:
            _active[-1].impure = f"{name} with dir_fd"  # relative to a folder not recorded
        elif _active and (p := _path(path)) is not None:
            # stat(path, follow_symlinks=False) is an lstat
            target = _active[-1].lstat if kwargs.get("follow_symlinks") is False else into(
                _active[-1])
            target.add(p)
        return real(path, *args, **kwargs)

    stat.__name__ = name
    return stat


def record(func: Callable[[], T]) -> tuple[T, Reads]:
    """Call ``func`` while recording what it reads. **Only in a process that is thrown away
    afterwards** (the forked evaluation child): it installs an audit hook for good and replaces
    ``os.stat``/``os.lstat``."""
    reads = Reads()
    sys.addaudithook(_audit)
    os.stat = _wrap_stat("stat", os.stat, lambda r: r.stat)
    os.lstat = _wrap_stat("lstat", os.lstat, lambda r: r.lstat)
    # what a link points to is part of an lstat's fingerprint
    os.readlink = _wrap_stat("readlink", os.readlink, lambda r: r.lstat)
    before = set(sys.modules)
    _active.append(reads)
    try:
        value = func()
    finally:
        _active.pop()
    # code imported by the evaluation (a vendor function's helper imported when called) is an
    # input too (the parent's own modules are in the cache key already); the cache picks
    # which files count (not the standard library, not installed distributions)
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None)
        if isinstance(file, str) and os.path.isabs(file):
            reads.imported.add(file)
    return value, reads
